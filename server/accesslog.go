package server

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/m40llm/m40llm/model"
)

// accessNote is what a handler tells the access log beyond the status:
// the token counts of a generation, once it has ended.
type accessNote struct {
	usage            bool // the counts below are known
	prompt, generate int
}

type accessNoteKey struct{}

// withAccessNote returns r with an empty note in its context, for the
// handlers to fill.
func withAccessNote(r *http.Request) (*http.Request, *accessNote) {
	n := &accessNote{}
	return r.WithContext(context.WithValue(r.Context(), accessNoteKey{}, n)), n
}

// noteUsage records the token counts of res for r's access log line; it
// does nothing for a request without a note.
func noteUsage(r *http.Request, res *model.Result) {
	if res != nil {
		noteCounts(r, res.PromptTokens, len(res.Tokens))
	}
}

// noteCounts records prompt and generated token counts for r's access
// log line (those of every choice of the request); it does nothing for a
// request without a note.
func noteCounts(r *http.Request, prompt, generated int) {
	n, ok := r.Context().Value(accessNoteKey{}).(*accessNote)
	if !ok {
		return
	}
	n.usage, n.prompt, n.generate = true, prompt, generated
}

// logAccess writes the access log record of one request: at Info level,
// message "request", with its method, route (the mux pattern's path, or
// "other"), path, status (499 when the client left before any answer),
// prompt_tokens and completion_tokens for a generation that ended, and
// duration_ms from the start of the handler chain to the end of the
// answer.
func (s *Server) logAccess(r *http.Request, route string, status int, n *accessNote, d time.Duration) {
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.String("path", r.URL.Path),
		slog.Int("status", status))
	if n.usage {
		attrs = append(attrs, slog.Int("prompt_tokens", n.prompt), slog.Int("completion_tokens", n.generate))
	}
	attrs = append(attrs, slog.Float64("duration_ms", math.Round(float64(d)/1e3)/1e3))
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// routePath returns the path of a ServeMux pattern ("POST /v1/completions"
// → "/v1/completions").
func routePath(pattern string) string {
	if _, path, ok := strings.Cut(pattern, " "); ok {
		return path
	}
	return pattern
}
