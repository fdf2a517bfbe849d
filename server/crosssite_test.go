package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHostCheck: over a loopback connection only loopback hosts and the
// configured aliases are answered; other Host headers (DNS rebinding: a
// web page whose name now resolves to 127.0.0.1) get 403 before anything
// else is looked at.
func TestHostCheck(t *testing.T) {
	ts := startServer(t, 1, 64, Options{HostAliases: []string{"Box.Example", "llm.lan:8080"}, CORSOrigin: "http://app.example"})
	tests := []struct {
		host string
		ok   bool
	}{
		{"", true}, // the URL's 127.0.0.1:port
		{"localhost", true},
		{"LocalHost:80", true},
		{"127.0.0.1", true},
		{"127.0.0.2:9", true},
		{"[::1]:58439", true},
		{"[::1]", true},
		{"0.0.0.0:58439", true}, // the unspecified address reaches only this machine
		{"[::]:58439", true},
		{"box.example", true},
		{"BOX.example:443", true},
		{"llm.lan", true},
		{"attacker.example", false},
		{"attacker.example:58439", false},
		{"localhost.attacker.example", false},
		{"127.0.0.1.nip.io", false},
		{"box.example.attacker.example", false},
		{"192.168.1.10:58439", false},
		{"localhost.", false},
	}
	for _, tt := range tests {
		name := tt.host
		if name == "" {
			name = "the URL's"
		}
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/health", "/v1/models"} {
				req, err := http.NewRequest(http.MethodGet, ts.ts.URL+path, nil)
				require.NoError(t, err)
				req.Host = tt.host
				req.Header.Set("Authorization", "Bearer "+testKey)
				status, hdr, body := do(t, req)
				if tt.ok {
					assert.Equal(t, http.StatusOK, status, "%s %s", path, body)
					continue
				}
				assert.Equal(t, http.StatusForbidden, status, "%s %s", path, body)
				assert.Empty(t, hdr.Get("Access-Control-Allow-Origin"), "no CORS headers for a refused host")
				e := decodeError(t, body)
				assert.Equal(t, TypeInvalidRequest, e.Type)
				assert.Equal(t, CodeHostNotAllowed, deref(e.Code))
				assert.Contains(t, e.Message, fmt.Sprintf("%q", tt.host))
				assert.Contains(t, e.Message, "--host-alias")
			}
		})
	}
	t.Run("rebinding POST", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, ts.ts.URL+"/v1/completions", strings.NewReader(`{"prompt":"Once","max_tokens":2}`))
		require.NoError(t, err)
		req.Host = "attacker.example:58439"
		req.Header.Set("Content-Type", "application/json")
		status, _, body := do(t, req)
		assert.Equal(t, http.StatusForbidden, status, "%s", body)
		assert.Equal(t, CodeHostNotAllowed, deref(decodeError(t, body).Code))
	})
	t.Run("rebinding preflight", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodOptions, ts.ts.URL+"/v1/chat/completions", nil)
		require.NoError(t, err)
		req.Host = "attacker.example"
		req.Header.Set("Origin", "http://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		status, hdr, _ := do(t, req)
		assert.Equal(t, http.StatusForbidden, status)
		assert.Empty(t, hdr.Get("Access-Control-Allow-Origin"))
	})
	t.Run("no Host header", func(t *testing.T) {
		c := ts.dial(t)
		_, err := io.WriteString(c, "GET /health HTTP/1.0\r\n\r\n")
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", data)
		assert.Contains(t, decodeError(t, data).Message, "no Host header")
	})
	t.Run("not over loopback", func(t *testing.T) {
		// A server listening on a network address is exposed on purpose:
		// any name that reaches it is answered.
		for _, local := range []net.Addr{
			&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 58439},
			&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 58439},
			&net.UnixAddr{Name: "/run/m40llm.sock", Net: "unix"},
		} {
			req := httptest.NewRequest(http.MethodGet, "/health", nil)
			req.Host = "attacker.example"
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, local))
			rec := httptest.NewRecorder()
			ts.srv.Handler().ServeHTTP(rec, req)
			assert.Equal(t, http.StatusOK, rec.Code, "local address %v: %s", local, rec.Body)
		}
		// A loopback connection is checked, IPv4-mapped or not.
		for _, ip := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1"} {
			req := httptest.NewRequest(http.MethodGet, "/health", nil)
			req.Host = "attacker.example"
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.ParseIP(ip), Port: 58439}))
			rec := httptest.NewRecorder()
			ts.srv.Handler().ServeHTTP(rec, req)
			assert.Equal(t, http.StatusForbidden, rec.Code, "local address %s", ip)
		}
	})
}

// TestJSONContentType: the JSON endpoints take only application/json
// bodies (415 otherwise), so that a web page cannot send them as a CORS
// "simple request" (text/plain, a form) that needs no preflight.
func TestJSONContentType(t *testing.T) {
	ts := startServer(t, 1, 64, Options{})
	bodies := map[string]string{
		"/v1/completions":      `{"prompt":"Once","max_tokens":1}`,
		"/v1/chat/completions": `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":1}`,
		"/tokenize":            `{"content":"Once"}`,
		"/detokenize":          `{"tokens":[403]}`,
	}
	tests := []struct {
		ct string
		ok bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON;charset=UTF-8", true},
		{"", false},
		{"text/plain", false},
		{"text/plain;charset=UTF-8", false},
		{"application/x-www-form-urlencoded", false},
		{"multipart/form-data; boundary=x", false},
		{"application/json-patch+json", false},
		{"application/json; charset", false}, // malformed parameters
	}
	for path, body := range bodies {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("POST %s as %q", path, tt.ct), func(t *testing.T) {
				status, _, data := ts.postAs(t, path, tt.ct, body)
				if tt.ok {
					assert.Equal(t, http.StatusOK, status, "%s", data)
					return
				}
				assert.Equal(t, http.StatusUnsupportedMediaType, status, "%s", data)
				e := decodeError(t, data)
				assert.Equal(t, TypeInvalidRequest, e.Type)
				assert.Equal(t, CodeUnsupportedMediaType, deref(e.Code))
				assert.Contains(t, e.Message, "application/json")
				if tt.ct != "" {
					assert.Contains(t, e.Message, fmt.Sprintf("%q", tt.ct))
				} else {
					assert.Contains(t, e.Message, "no Content-Type")
				}
			})
		}
	}
}
