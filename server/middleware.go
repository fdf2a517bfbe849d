package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// statusRecorder remembers the status a handler sent, for the metrics and
// for the panic handler (which can only answer before the header is out).
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets handlers that look for http.Flusher stream through the
// recorder.
func (r *statusRecorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument counts requests by the mux's route pattern and status code
// (requests answered before the mux, such as 401s, are counted under the
// route they asked for) and, with Options.AccessLog, logs each one.
func (s *Server) instrument(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		r, note := withAccessNote(r)
		defer func() {
			route := r.Pattern // set by the ServeMux on this request
			if route == "" {
				_, route = mux.Handler(r)
			}
			if route == "" || route == "/" {
				route = "other"
			}
			code := rec.status
			if code == 0 {
				code = 499 // the handler wrote nothing: the client went away
			}
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
			if s.opts.AccessLog {
				s.logAccess(r, routePath(route), code, note, time.Since(start))
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// recoverPanics turns a handler panic into a 500 with an error body (when
// nothing was sent yet) and a log line with the stack.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic in handler", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rec, ok := w.(*statusRecorder); ok && rec.status != 0 {
				return // too late for a status; the response just ends
			}
			e := &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: CodeInternal, Message: "internal error"}
			writeJSON(w, e.Status, e.Body())
		}()
		next.ServeHTTP(w, r)
	})
}

// cors adds the CORS headers when Options.CORSOrigin is set, and answers
// preflight requests.
func (s *Server) cors(next http.Handler) http.Handler {
	origin := s.opts.CORSOrigin
	if origin == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		if origin != "*" {
			h.Add("Vary", "Origin")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorize requires "Authorization: Bearer KEY" when Options.APIKey is
// set, on every route but /health and the web page's files, and answers 401 invalid_api_key
// otherwise, saying whether the header was missing, malformed, of another
// scheme or had the wrong key. The scheme is matched without case and may
// be followed by several spaces (RFC 7235). The comparison of keys takes
// the same time whatever the key sent.
func (s *Server) authorize(next http.Handler) http.Handler {
	if s.opts.APIKey == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.opts.APIKey))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || webPublic(r) {
			next.ServeHTTP(w, r)
			return
		}
		auth := r.Header.Get("Authorization")
		scheme, key, spaced := strings.Cut(auth, " ")
		got := sha256.Sum256([]byte(strings.TrimLeft(key, " ")))
		bearer := spaced && strings.EqualFold(scheme, "Bearer")
		if !bearer || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			var msg string
			switch {
			case auth == "", strings.EqualFold(auth, "Bearer"):
				msg = `missing API key: send it as "Authorization: Bearer KEY"`
			case !spaced:
				msg = `malformed Authorization header: want "Bearer KEY"`
			case !bearer:
				msg = fmt.Sprintf(`unsupported authorization scheme %q: send the API key as "Authorization: Bearer KEY"`, scheme)
			default:
				msg = "incorrect API key"
			}
			w.Header().Set("WWW-Authenticate", "Bearer")
			s.writeError(w, r, &Error{Status: http.StatusUnauthorized, Type: TypeInvalidRequest, Code: CodeInvalidAPIKey, Message: msg})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody rejects bodies over Options.MaxBodyBytes: at once when the
// Content-Length says so, else when reading passes the limit.
func (s *Server) limitBody(next http.Handler) http.Handler {
	limit := s.opts.MaxBodyBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			s.writeError(w, r, tooLarge(limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// limitBodyTime gives a request's body Options.BodyTimeout to arrive,
// from the start of the handler (the end of the headers), through the
// connection's read deadline; a read past it fails with
// *bodyTimeoutError (answered 408) and the connection is closed after the
// answer. Where the ResponseWriter cannot set a read deadline, the body
// is not bounded in time.
//
// The deadline bounds reading the request, not the answer: it is lifted
// once the body has been read to its end, and a request without a body
// gets none. That matters because net/http then reads the connection in
// the background (to notice a client that leaves), and a deadline that
// fails that read cancels the request's context and the connection's
// (golang/go#70834): a stream would end in the middle. For a request
// without a body that background read starts before the handler.
func (s *Server) limitBodyTime(next http.Handler) http.Handler {
	timeout := s.opts.BodyTimeout
	if timeout < 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(timeout)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, w: w, rc: rc, timeout: timeout}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody is a request body read under a connection read deadline
// (see limitBodyTime).
type deadlineBody struct {
	io.ReadCloser
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	done    bool // read to its end; the deadline is lifted
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF && !b.done:
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{}) // fails only on a closed connection
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		// The rest of the body is still on its way: the connection cannot
		// carry another request.
		b.w.Header().Set("Connection", "close")
		err = &bodyTimeoutError{timeout: b.timeout, err: err}
	}
	return n, err
}

// checkHost answers 403 to a request that came over a loopback
// connection and whose Host is not allowed (see Handler).
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !overLoopback(r) || s.hostAllowed(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		msg := fmt.Sprintf("host %q is not allowed", r.Host)
		if r.Host == "" {
			msg = "the request has no Host header"
		}
		s.writeError(w, r, &Error{Status: http.StatusForbidden, Type: TypeInvalidRequest, Code: CodeHostNotAllowed,
			Message: msg + ": over loopback the server answers only localhost, loopback addresses and its host aliases" +
				" (--host-alias NAME); this guards against DNS rebinding"})
	})
}

// overLoopback reports whether r came over a loopback connection, or over
// one of unknown address.
func overLoopback(r *http.Request) bool {
	switch a := r.Context().Value(http.LocalAddrContextKey).(type) {
	case nil:
		return true
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	}
	return false // a Unix socket, say: browsers do not reach it
}

// hostAllowed reports whether a Host header names localhost, a loopback
// or unspecified IP address (which only reach this machine), or a host
// alias, with any port.
func (s *Server) hostAllowed(host string) bool {
	name := hostName(host)
	if name == "localhost" {
		return true
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		ip = ip.Unmap()
		return ip.IsLoopback() || ip.IsUnspecified()
	}
	return name != "" && slices.Contains(s.aliases, name)
}

// hostName returns the host of a Host header in lower case, without its
// port or the brackets of an IPv6 address.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	return strings.ToLower(host)
}

// requireJSON answers 415 to a request whose Content-Type is not
// application/json (parameters such as charset allowed). A web page may
// send a text/plain, form or multipart body to any origin without a CORS
// preflight, and the server would decode it all the same; a JSON body
// needs the preflight, which fails unless Options.CORSOrigin allows the
// page.
func (s *Server) requireJSON(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
			next(w, r)
			return
		}
		msg := fmt.Sprintf("Content-Type %q is not supported", ct)
		if ct == "" {
			msg = "the request has no Content-Type"
		}
		s.writeError(w, r, &Error{Status: http.StatusUnsupportedMediaType, Type: TypeInvalidRequest, Code: CodeUnsupportedMediaType,
			Message: msg + `: send the body as JSON with "Content-Type: application/json"`})
	})
}
