package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	mrand "math/rand/v2"

	"github.com/m40llm/m40llm/model"
)

// The ollama API (ollama's docs/api.md), over the same engine, request
// bound, metrics, access log and API key as the OpenAI routes:
//
//	HEAD /                the probe ollama's clients send first (200, no body)
//	GET  /api/version     {"version": OllamaAPIVersion}
//	GET  /api/tags        the served models (with a models directory, its files)
//	GET  /api/ps          the loaded models, with when they unload
//	POST /api/show        its details, metadata and template
//	POST /api/generate    a prompt, raw or through the chat template
//	POST /api/chat        messages through the chat template
//	POST /api/embed       embeddings of a string or strings (embeddings.go)
//	POST /api/embeddings  the legacy one-prompt form
//
// Answers stream as NDJSON (application/x-ndjson) unless the request says
// "stream": false; the last object has "done": true, "done_reason"
// ("stop", "length"; "load" for a request without a prompt or messages)
// and the counts and durations. Errors are {"error": "..."} with the
// status the OpenAI routes give the same failure (a model that is not
// served: 404 "model 'x' not found"); a failure in the middle of a stream
// is a last line {"error": "..."}. The model-management routes (pull,
// push, create, copy, delete, blobs) answer 501.

// OllamaAPIVersion is the ollama release whose API the /api routes follow
// (the release of the client they are tested with), answered by
// /api/version: clients read it to decide what the server speaks.
const OllamaAPIVersion = "0.17.4"

// contentTypeNDJSON is the media type of a streamed ollama answer.
const contentTypeNDJSON = "application/x-ndjson"

// ollamaRoutes registers the ollama API on mux.
func (s *Server) ollamaRoutes(mux *http.ServeMux) {
	mux.HandleFunc("HEAD /{$}", s.handleOllamaProbe)
	mux.HandleFunc("GET /api/version", s.handleOllamaVersion)
	mux.HandleFunc("GET /api/tags", s.handleOllamaTags)
	mux.HandleFunc("GET /api/ps", s.handleOllamaPS)
	mux.Handle("POST /api/show", s.ollamaJSON(s.handleOllamaShow))
	mux.Handle("POST /api/generate", s.ollamaJSON(s.handleOllamaGenerate))
	mux.Handle("POST /api/chat", s.ollamaJSON(s.handleOllamaChat))
	for _, route := range []string{"POST /api/pull", "POST /api/push", "POST /api/create", "POST /api/copy",
		"DELETE /api/delete", "POST /api/blobs/{digest}", "HEAD /api/blobs/{digest}"} {
		mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
			s.writeError(w, r, &Error{Status: http.StatusNotImplemented, Type: TypeInvalidRequest, Code: CodeUnsupported,
				Message: fmt.Sprintf("%s is not supported: the server serves the one model file it was started with", r.URL.Path)})
		})
	}
	mux.Handle("POST /api/embed", s.ollamaJSON(s.handleOllamaEmbed))
	mux.Handle("POST /api/embeddings", s.ollamaJSON(s.handleOllamaEmbeddings))
}

// isOllamaPath reports whether path is one of the ollama API's, whose
// errors take ollama's shape.
func isOllamaPath(path string) bool {
	return path == "/api" || strings.HasPrefix(path, "/api/")
}

// writeOllamaError writes e in ollama's shape ({"error": message}) when
// r is for an ollama route, and reports whether it did. Like writeError
// it logs server-side failures and sends nothing for a cancelled request.
func (s *Server) writeOllamaError(w http.ResponseWriter, r *http.Request, e *Error) bool {
	if !isOllamaPath(r.URL.Path) && (r.Method != http.MethodHead || r.URL.Path != "/") {
		return false
	}
	if e.Status == 499 {
		return true
	}
	s.logError(r, e)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.RetryAfter))
	}
	writeJSON(w, e.Status, OllamaErrorBody{Error: e.Message})
	return true
}

// ollamaJSON is requireJSON for the ollama routes, which also take a body
// of another or no Content-Type from a client that is not a browser (no
// Origin and no Sec-Fetch-Site header): ollama's documented examples send
// `curl -d '{...}'`, whose body is form-encoded. A web page cannot send a
// cross-origin request without those headers, so the guard holds.
func (s *Server) ollamaJSON(next http.HandlerFunc) http.Handler {
	strict := s.requireJSON(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt != "application/json" && r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") == "" {
			next(w, r)
			return
		}
		strict.ServeHTTP(w, r)
	})
}

// handleOllamaProbe answers ollama's heartbeat (HEAD /) with 200. GET / is
// left for a web page.
func (s *Server) handleOllamaProbe(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleOllamaVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, OllamaVersionResponse{Version: OllamaAPIVersion})
}

func (s *Server) handleOllamaTags(w http.ResponseWriter, r *http.Request) {
	list, err := s.listModels()
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	out := OllamaListResponse{Models: []OllamaListModel{}}
	for _, l := range list {
		f := s.listedFacts(l)
		name := ollamaName(l.name)
		out.Models = append(out.Models, OllamaListModel{
			Name: name, Model: name, ModifiedAt: f.modified, Size: f.size, Digest: f.Digest(), Details: f.details(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleOllamaPS(w http.ResponseWriter, r *http.Request) {
	list, err := s.listModels()
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	out := OllamaPSResponse{Models: []OllamaRunningModel{}}
	add := func(served *Served, f *modelFacts, expires time.Time) {
		name := ollamaName(served.Name)
		rm := OllamaRunningModel{Name: name, Model: name, Size: f.size, Digest: f.Digest(), Details: f.details(),
			ContextLength: served.Model.CtxSize(), ExpiresAt: expires}
		if mr, ok := served.Model.Backend().(model.MemoryReporter); ok {
			rm.Size = mr.MemoryUsage().Total()
			rm.SizeVRAM = rm.Size
		}
		out.Models = append(out.Models, rm)
	}
	if len(list) > 0 && list[0].served != nil {
		add(list[0].served, s.ollamaFacts(list[0].served), time.Time{})
	}
	if s.pool != nil {
		for _, e := range s.pool.running() {
			exp := s.pool.expiry(e)
			if !exp.IsZero() {
				exp = exp.UTC()
			}
			add(e.served, s.fileFacts(e.path), exp)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// keepAliveOf reads a request's keep_alive for the models directory: -1
// when absent or malformed (the conversion reports a malformed one).
func keepAliveOf(c *OllamaCommonFields) time.Duration {
	d, err := parseKeepAlive(c.KeepAlive)
	if err != nil || d < 0 {
		return -1
	}
	return d
}

// ollamaUnload answers a request without prompt and with keep_alive 0
// for a model of the models directory: it is unloaded (once idle), as
// ollama's "stop" does, with done_reason "unload". It reports whether
// it answered.
func (s *Server) ollamaUnload(w http.ResponseWriter, r *http.Request, name string, empty bool, c *OllamaCommonFields, chat bool) bool {
	if s.pool == nil || !empty || keepAliveOf(c) != 0 {
		return false
	}
	s.mu.RLock()
	served := s.served
	s.mu.RUnlock()
	if served != nil && (name == "" || sameModel(name, served.Name, true)) {
		return false // Start's model stays: the conversion refuses
	}
	f, ok := s.pool.find(name, true)
	if !ok {
		s.writeError(w, r, modelNotFound(name, true))
		return true
	}
	s.pool.unload(f.name)
	if chat {
		writeJSON(w, http.StatusOK, OllamaChatResponse{Model: name, CreatedAt: now(),
			Message: OllamaMessage{Role: "assistant"}, Done: true, DoneReason: "unload"})
	} else {
		writeJSON(w, http.StatusOK, OllamaGenerateResponse{Model: name, CreatedAt: now(), Done: true, DoneReason: "unload"})
	}
	return true
}

func (s *Server) handleOllamaShow(w http.ResponseWriter, r *http.Request) {
	var req OllamaShowRequest
	if err := decodeOllama(r, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	name := req.Model
	if name == "" {
		name = req.Name
	}
	u, err := s.pick(r.Context(), name, true)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer u.done(-1)
	if _, err := checkOllamaModel(name, u.served); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	writeJSON(w, http.StatusOK, s.ollamaShow(u.served, req.Verbose))
}

func (s *Server) handleOllamaGenerate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req OllamaGenerateRequest
	if err := decodeOllama(r, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	if s.ollamaUnload(w, r, req.Model, req.Prompt == "", &req.OllamaCommonFields, false) {
		return
	}
	u, err := s.pick(r.Context(), req.Model, true)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer func() { u.done(keepAliveOf(&req.OllamaCommonFields)) }()
	or, err := FromOllamaGenerate(r.Context(), &req, u.served, mrand.Uint64())
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	f := &ollamaGenerateFormat{model: or.Model}
	if or.Gen == nil {
		writeJSON(w, http.StatusOK, OllamaGenerateResponse{Model: or.Model, CreatedAt: now(), Done: true, DoneReason: "load"})
		return
	}
	f.prompt = or.Gen.Prompt
	s.ollamaGenerate(w, r, u.sched, or.Gen, f, start)
}

func (s *Server) handleOllamaChat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req OllamaChatRequest
	if err := decodeOllama(r, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	if s.ollamaUnload(w, r, req.Model, len(req.Messages) == 0, &req.OllamaCommonFields, true) {
		return
	}
	u, err := s.pick(r.Context(), req.Model, true)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer func() { u.done(keepAliveOf(&req.OllamaCommonFields)) }()
	or, err := FromOllamaChat(r.Context(), &req, u.served, mrand.Uint64())
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	if or.Gen == nil {
		writeJSON(w, http.StatusOK, OllamaChatResponse{Model: or.Model, CreatedAt: now(),
			Message: OllamaMessage{Role: "assistant"}, Done: true, DoneReason: "load"})
		return
	}
	s.ollamaGenerate(w, r, u.sched, or.Gen, &ollamaChatFormat{model: or.Model}, start)
}

// decodeOllama is decodeLenient with the field names of errors as ollama's
// clients know them (without the embedded struct's name).
func decodeOllama(r *http.Request, v any) error {
	err := decodeLenient(r.Body, v)
	if e, ok := err.(*Error); ok && strings.HasPrefix(e.Param, "OllamaCommonFields.") {
		e.Param = strings.TrimPrefix(e.Param, "OllamaCommonFields.")
		e.Message = strings.ReplaceAll(e.Message, "OllamaCommonFields.", "")
	}
	return err
}

// now is the time stamp of an answer, in UTC as ollama writes it.
func now() time.Time { return time.Now().UTC() }

// ollamaFormat builds the answer objects of one ollama request kind.
type ollamaFormat interface {
	delta(text string) any                                   // a line with new text
	end(text string, res *model.Result, m OllamaMetrics) any // the last line, or the whole answer with all the text
}

type ollamaGenerateFormat struct {
	model  string
	prompt []int32
}

func (f *ollamaGenerateFormat) delta(text string) any {
	return &OllamaGenerateResponse{Model: f.model, CreatedAt: now(), Response: text}
}

func (f *ollamaGenerateFormat) end(text string, res *model.Result, m OllamaMetrics) any {
	ctx := make([]int32, 0, len(f.prompt)+len(res.Tokens))
	ctx = append(append(ctx, f.prompt...), res.Tokens...)
	return &OllamaGenerateResponse{Model: f.model, CreatedAt: now(), Response: text, Done: true,
		DoneReason: string(res.Finish), Context: ctx, OllamaMetrics: m}
}

type ollamaChatFormat struct{ model string }

func (f *ollamaChatFormat) delta(text string) any {
	return &OllamaChatResponse{Model: f.model, CreatedAt: now(), Message: OllamaMessage{Role: "assistant", Content: text}}
}

func (f *ollamaChatFormat) end(text string, res *model.Result, m OllamaMetrics) any {
	return &OllamaChatResponse{Model: f.model, CreatedAt: now(), Message: OllamaMessage{Role: "assistant", Content: text},
		Done: true, DoneReason: string(res.Finish), OllamaMetrics: m}
}

// ollamaGenerate submits gr with the request's context and writes the
// answer: one JSON object, or NDJSON lines flushed as tokens arrive. A
// client that goes away cancels the request's context, which ends the
// job within one step.
func (s *Server) ollamaGenerate(w http.ResponseWriter, r *http.Request, sched *scheduler, gr *GenerateRequest, f ollamaFormat, start time.Time) {
	ctx := r.Context()
	j, err := sched.submit(ctx, &model.Request{Prompt: gr.Prompt, Options: gr.Options})
	if err != nil {
		s.writeError(w, r, gr.requestError(err))
		return
	}
	if !gr.Stream {
		text, res, err := j.Wait(ctx)
		if err != nil {
			s.writeError(w, r, gr.requestError(err))
			return
		}
		noteUsage(r, res)
		writeJSON(w, http.StatusOK, f.end(text, res, ollamaMetrics(res, start)))
		return
	}

	nd := newNDJSONWriter(w)
	if nd.flush() != nil {
		return
	}
	for {
		pieces, done, res, err := j.Next(ctx)
		for _, p := range pieces {
			nd.line(f.delta(p))
		}
		switch {
		case done && err == nil:
			noteUsage(r, res)
			nd.line(f.end("", res, ollamaMetrics(res, start)))
			nd.flush()
			return
		case err != nil:
			if ctx.Err() == nil {
				ae := gr.requestError(err)
				s.logError(r, ae)
				nd.line(OllamaErrorBody{Error: ae.Message})
				nd.flush()
			}
			return
		}
		if nd.flush() != nil {
			return // the client is gone; the engine sees the cancelled context
		}
	}
}

// ndjsonWriter writes newline-delimited JSON, one object per line,
// buffered until flush.
type ndjsonWriter struct {
	rc  *http.ResponseController
	buf *bufio.Writer
	err error
}

// newNDJSONWriter sends the headers of a stream.
func newNDJSONWriter(w http.ResponseWriter) *ndjsonWriter {
	h := w.Header()
	h.Set("Content-Type", contentTypeNDJSON)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &ndjsonWriter{rc: http.NewResponseController(w), buf: bufio.NewWriterSize(w, 4096)}
}

// line queues v as one line.
func (n *ndjsonWriter) line(v any) {
	if n.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		n.err = err
		return
	}
	n.buf.Write(b)
	n.err = n.buf.WriteByte('\n')
}

// flush sends the queued lines; an error means the client is gone.
func (n *ndjsonWriter) flush() error {
	if n.err != nil {
		return n.err
	}
	if n.err = n.buf.Flush(); n.err != nil {
		return n.err
	}
	n.err = n.rc.Flush()
	return n.err
}
