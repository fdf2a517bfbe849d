package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/tokenizer"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("GET /v1/models/{id...}", s.handleModel)
	mux.Handle("POST /v1/completions", s.requireJSON(s.handleCompletions))
	mux.Handle("POST /v1/chat/completions", s.requireJSON(s.handleChat))
	mux.Handle("POST /v1/embeddings", s.requireJSON(s.handleEmbeddings))
	mux.Handle("POST /tokenize", s.requireJSON(s.handleTokenize))
	mux.Handle("POST /detokenize", s.requireJSON(s.handleDetokenize))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.ollamaRoutes(mux)
	s.webRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { s.noRoute(w, r, mux) })
	return s.instrument(mux, s.recoverPanics(s.limitBodyTime(s.checkHost(s.cors(s.authorize(s.limitBody(mux)))))))
}

// noRoute answers a request that no route takes: 405 with the Allow
// header when the path is a route's with another method, 404 otherwise.
// (The catch-all pattern matches every method, so the mux never answers
// 405 by itself.)
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		s.writeError(w, r, &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: "not_found",
			Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
		return
	}
	list := strings.Join(allow, ", ")
	w.Header().Set("Allow", list)
	s.writeError(w, r, &Error{Status: http.StatusMethodNotAllowed, Type: TypeInvalidRequest, Code: CodeMethodNotAllowed,
		Message: fmt.Sprintf("method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, list)})
}

// handleHealth answers 200 while the server can generate (with a models
// directory: from the start, whatever is loaded), and 503 with the reason
// while the model given to Start loads, after its backend has failed (the
// reason is the failure) and while shutting down.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	stopping, served := s.stopping, s.served
	s.mu.RUnlock()
	switch {
	case stopping:
		writeJSON(w, http.StatusServiceUnavailable, HealthResponse{Status: "shutting down"})
	case served != nil:
		if ferr := served.Model.Err(); ferr != nil {
			writeJSON(w, http.StatusServiceUnavailable, HealthResponse{Status: "error", Error: ferr.Error()})
			return
		}
		writeJSON(w, http.StatusOK, HealthResponse{Status: "ok"})
	case s.pool != nil:
		writeJSON(w, http.StatusOK, HealthResponse{Status: "ok"})
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, HealthResponse{Status: "loading model"})
	}
}

func modelInfo(l listed) ModelInfo {
	return ModelInfo{ID: l.name, Object: "model", Created: l.modified.Unix(), OwnedBy: "m40llm"}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	list, err := s.listModels()
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	out := ModelList{Object: "list", Data: []ModelInfo{}}
	for _, l := range list {
		out.Data = append(out.Data, modelInfo(l))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	list, err := s.listModels()
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	id := r.PathValue("id")
	for _, l := range list {
		if l.name == id {
			writeJSON(w, http.StatusOK, modelInfo(l))
			return
		}
	}
	if s.pool == nil && len(list) == 1 {
		s.writeError(w, r, apiError(checkModel(id, list[0].served)))
		return
	}
	s.writeError(w, r, modelNotFound(id, false))
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	var req CompletionRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	u, err := s.pick(r.Context(), req.Model, false)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer u.done(-1)
	served, sched := u.served, u.sched
	gr, err := FromCompletionRequest(&req, served, mrand.Uint64())
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	id, created := newID("cmpl-"), time.Now().Unix()
	s.generate(w, r, sched, gr, func() format {
		return &completionFormat{id: id, created: created, model: served.Name, tok: served.Model.Tokenizer, logprobs: gr.Options.LogProbs}
	})
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req ChatCompletionRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	u, err := s.pick(r.Context(), req.Model, false)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer u.done(-1)
	served, sched := u.served, u.sched
	gr, err := FromChatRequest(r.Context(), &req, served, mrand.Uint64())
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	id, created := newID("chatcmpl-"), time.Now().Unix()
	s.generate(w, r, sched, gr, func() format {
		return &chatFormat{id: id, created: created, model: served.Name, tok: served.Model.Tokenizer,
			logprobs: gr.Options.LogProbs, tools: gr.tools}
	})
}

// format builds the response objects of one request kind. With
// logprobs, each chunk carries the log-probabilities of the tokens its
// text came from, and the whole response those of every token.
type format interface {
	start() any                             // the first chunk of a stream, or nil
	delta(p model.Piece) []any              // the chunks of new text (none while held back)
	end(finish model.FinishReason) []any    // the last chunks, the finish reason in the last
	usage(r *model.Result) any              // the usage chunk
	whole(text string, r *model.Result) any // the non-streamed response
}

type completionFormat struct {
	id       string
	created  int64
	model    string
	tok      *tokenizer.Tokenizer
	logprobs bool
	offsets  TextCounter // the text of the tokens streamed so far
}

func (f *completionFormat) start() any { return nil }
func (f *completionFormat) delta(p model.Piece) []any {
	c := ToCompletionChunk(f.id, f.created, f.model, p.Text, "")
	if f.logprobs {
		c.Choices[0].Logprobs = ToCompletionLogprobs(f.tok, p.LogProbs, &f.offsets)
	}
	return []any{c}
}
func (f *completionFormat) end(finish model.FinishReason) []any {
	return []any{ToCompletionChunk(f.id, f.created, f.model, "", finish)}
}
func (f *completionFormat) usage(r *model.Result) any {
	return ToCompletionUsageChunk(f.id, f.created, f.model, r)
}
func (f *completionFormat) whole(text string, r *model.Result) any {
	c := ToCompletion(f.id, f.created, f.model, text, r)
	if f.logprobs {
		c.Choices[0].Logprobs = ToCompletionLogprobs(f.tok, r.LogProbs, &TextCounter{})
	}
	return c
}

// chatFormat builds chat responses. With tools read from the reply
// (tools.parse), a stream sends as content only the text that cannot
// be part of a call (chat.ToolFormat.Undecided) and holds the rest; each
// call, once complete (chat.ToolFormat.Complete: Hermes' as each closes,
// the others' at the end), goes as a delta with its index, id, type and
// name, then one with its arguments; the last chunk has finish_reason
// "tool_calls" when the reply has calls and ended by itself — so that
// the deltas reassemble to the non-streamed response.
type chatFormat struct {
	id       string
	created  int64
	model    string
	tok      *tokenizer.Tokenizer
	logprobs bool
	tools    *toolUse
	text     strings.Builder // the reply so far, with tools
	sent     int             // bytes of it sent as content
	complete int             // bytes of it whose calls are sent
	calls    int             // calls sent
}

func (f *chatFormat) start() any { return ToChatChunk(f.id, f.created, f.model, true, "", "") }
func (f *chatFormat) delta(p model.Piece) []any {
	text := p.Text
	if f.reading() {
		f.text.WriteString(p.Text)
		all := f.text.String()
		n := max(f.tools.format.Undecided(all), f.sent)
		text, f.sent = all[f.sent:n], n
		var out []any
		if text != "" || f.logprobs {
			c := ToChatChunk(f.id, f.created, f.model, false, text, "")
			if f.logprobs {
				c.Choices[0].Logprobs = ToChatLogprobs(f.tok, p.LogProbs)
			}
			out = append(out, c)
		}
		if k := f.tools.format.Complete(all); k > f.complete {
			f.complete = k
			if calls, _, ok := f.tools.replyCalls(all[:k]); ok {
				out = append(out, f.callDeltas(calls)...)
			}
		}
		return out
	}
	c := ToChatChunk(f.id, f.created, f.model, false, text, "")
	if f.logprobs {
		c.Choices[0].Logprobs = ToChatLogprobs(f.tok, p.LogProbs)
	}
	return []any{c}
}

// callDeltas returns the chunks of the calls not sent yet: for each a
// delta with its index, id, type and name, then one with its arguments.
func (f *chatFormat) callDeltas(calls []ToolCall) []any {
	var out []any
	for i := f.calls; i < len(calls); i++ {
		call := calls[i]
		c := ToChatChunk(f.id, f.created, f.model, false, "", "")
		c.Choices[0].Delta.ToolCalls = []ToolCallDelta{{Index: i, ID: call.ID, Type: call.Type,
			Function: FunctionCallDelta{Name: call.Function.Name}}}
		a := ToChatChunk(f.id, f.created, f.model, false, "", "")
		a.Choices[0].Delta.ToolCalls = []ToolCallDelta{{Index: i, Function: FunctionCallDelta{Arguments: call.Function.Arguments}}}
		out = append(out, c, a)
	}
	f.calls = max(f.calls, len(calls))
	return out
}

// reading reports whether replies are read for tool calls.
func (f *chatFormat) reading() bool { return f.tools != nil && f.tools.parse }

func (f *chatFormat) end(finish model.FinishReason) []any {
	if !f.reading() {
		return []any{ToChatChunk(f.id, f.created, f.model, false, "", finish)}
	}
	var out []any
	all := f.text.String()
	calls, content, ok := f.tools.replyCalls(all)
	if !ok {
		content = all
	}
	if rest := content[min(f.sent, len(content)):]; rest != "" {
		out = append(out, ToChatChunk(f.id, f.created, f.model, false, rest, ""))
	}
	out = append(out, f.callDeltas(calls)...)
	last := ToChatChunk(f.id, f.created, f.model, false, "", finish)
	if f.calls > 0 && finish == model.FinishStop {
		fr := finishToolCalls
		last.Choices[0].FinishReason = &fr
	}
	return append(out, last)
}
func (f *chatFormat) usage(r *model.Result) any { return ToChatUsageChunk(f.id, f.created, f.model, r) }
func (f *chatFormat) whole(text string, r *model.Result) any {
	c := ToChatCompletion(f.id, f.created, f.model, text, r)
	if f.logprobs {
		c.Choices[0].Logprobs = ToChatLogprobs(f.tok, r.LogProbs)
	}
	if f.reading() {
		if calls, content, ok := f.tools.replyCalls(text); ok {
			withToolCalls(&c.Choices[0], content, calls)
		}
	}
	return c
}

// generate submits gr's choices (all or none) with a context that ends
// with the request's, and writes the answer: one JSON object, or SSE
// chunks flushed as tokens arrive, each naming its choice. Each choice
// has a format of its own from newFormat. The first choice that fails is
// the answer (an error object, or an error event in a stream) and ends
// the others (their context is cancelled), as a client that leaves does.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, sched *scheduler, gr *GenerateRequest, newFormat func() format) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if slots := sched.m.Slots(); gr.N > slots {
		s.writeError(w, r, badRequest("n", CodeInvalidValue,
			"n = %d needs %d KV-cache slots at once; the server runs %d (--parallel)", gr.N, gr.N, slots))
		return
	}
	jobs, err := sched.submitAll(ctx, gr.Requests())
	if err != nil {
		s.writeError(w, r, gr.requestError(err))
		return
	}
	events := pump(ctx, jobs)
	fs := make([]format, len(jobs))
	for i := range fs {
		fs[i] = newFormat()
	}

	var sse *sseWriter
	if gr.Stream {
		sse = newSSEWriter(w)
		for i, f := range fs {
			if c := f.start(); c != nil {
				sse.event(withIndex(c, i))
			}
		}
		if sse.flush() != nil {
			return
		}
	}
	texts, rs := make([]strings.Builder, len(jobs)), make([]*model.Result, len(jobs))
	for left := len(jobs); left > 0; {
		var ev jobEvent
		select {
		case ev = <-events:
		case <-ctx.Done():
			return // the client is gone; the jobs see the cancelled context
		}
		for _, p := range ev.pieces {
			if sse == nil {
				texts[ev.i].WriteString(p.Text)
				continue
			}
			for _, c := range fs[ev.i].delta(p) {
				sse.event(withIndex(c, ev.i))
			}
		}
		switch {
		case ev.err != nil:
			ae := gr.requestError(ev.err)
			if sse == nil {
				s.writeError(w, r, ae)
			} else if r.Context().Err() == nil {
				s.logError(r, ae)
				sse.event(ae.Body())
				sse.flush()
			}
			return
		case ev.done:
			rs[ev.i] = ev.res
			if sse != nil {
				for _, c := range fs[ev.i].end(ev.res.Finish) {
					sse.event(withIndex(c, ev.i))
				}
			}
			left--
		}
		if sse != nil && sse.flush() != nil {
			return // the client is gone; cancel ends every job
		}
	}
	u := usageOfAll(rs)
	noteCounts(r, u.PromptTokens, u.CompletionTokens)
	if sse == nil {
		parts := make([]any, len(fs))
		for i, f := range fs {
			parts[i] = f.whole(texts[i].String(), rs[i])
		}
		writeJSON(w, http.StatusOK, joinChoices(parts, u))
		return
	}
	if gr.IncludeUsage {
		sse.event(withUsage(fs[0].usage(rs[0]), u))
	}
	sse.done()
}

func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request) {
	var req TokenizeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	u, err := s.pick(r.Context(), "", false)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer u.done(-1)
	served := u.served
	parse := req.ParseSpecial == nil || *req.ParseSpecial
	tok := served.Model.Tokenizer
	ids := tok.Encode(req.Content, req.AddSpecial, parse)
	if ids == nil {
		ids = []int32{}
	}
	if !req.WithPieces {
		writeJSON(w, http.StatusOK, TokenizeResponse{Tokens: ids})
		return
	}
	out := make([]TokenPiece, len(ids))
	for i, id := range ids {
		dec := tok.NewContinuationDecoder()
		piece := dec.Add(id) + dec.Flush()
		if piece == "" && tok.IsControl(id) {
			piece = tok.Piece(id)
		}
		out[i] = TokenPiece{ID: id, Piece: piece}
	}
	writeJSON(w, http.StatusOK, TokenizePiecesResponse{Tokens: out})
}

func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request) {
	var req DetokenizeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	u, err := s.pick(r.Context(), "", false)
	if err != nil {
		s.writeError(w, r, apiError(err))
		return
	}
	defer u.done(-1)
	served := u.served
	tok := served.Model.Tokenizer
	for i, id := range req.Tokens {
		if id < 0 || int(id) >= tok.VocabSize() {
			s.writeError(w, r, badRequest(fmt.Sprintf("tokens[%d]", i), CodeInvalidValue,
				"token id %d is outside the vocabulary (%d tokens)", id, tok.VocabSize()))
			return
		}
	}
	writeJSON(w, http.StatusOK, DetokenizeResponse{Content: tok.Decode(req.Tokens)})
}

// writeJSON writes v as the JSON body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a write error means the client is gone
}

// writeError writes e in OpenAI's shape (ollama's on the ollama routes)
// and logs server-side failures. A cancelled request (the client is gone)
// gets nothing.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	if s.writeOllamaError(w, r, e) {
		return
	}
	if e.Status == 499 {
		return
	}
	s.logError(r, e)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.RetryAfter))
	}
	writeJSON(w, e.Status, e.Body())
}

func (s *Server) logError(r *http.Request, e *Error) {
	if e.Status >= 500 && (e.Status != http.StatusServiceUnavailable || e.Code == CodeBackendFailed || e.Code == CodeOutOfMemory) {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "msg", e.Message, "err", e.Err)
		return
	}
	s.log.Debug("request rejected", "method", r.Method, "path", r.URL.Path, "status", e.Status, "msg", e.Message)
}

// newID returns prefix followed by 24 random hex digits.
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return prefix + hex.EncodeToString(b[:])
}
