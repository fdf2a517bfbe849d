package server

import (
	"bufio"
	"encoding/json"
	"net/http"
)

// sseWriter writes Server-Sent Events: "data: JSON" lines, each followed
// by a blank line, and "data: [DONE]" at the end, as OpenAI streams.
// Events are buffered until flush, which sends them to the client.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf *bufio.Writer
	err error
}

// newSSEWriter sends the event-stream headers.
func newSSEWriter(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: http.NewResponseController(w), buf: bufio.NewWriterSize(w, 4096)}
}

// event queues one data event holding v as JSON.
func (s *sseWriter) event(v any) {
	if s.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		s.err = err
		return
	}
	s.buf.WriteString("data: ")
	s.buf.Write(b)
	_, s.err = s.buf.WriteString("\n\n")
}

// flush sends the queued events; an error means the client is gone.
func (s *sseWriter) flush() error {
	if s.err != nil {
		return s.err
	}
	if s.err = s.buf.Flush(); s.err != nil {
		return s.err
	}
	s.err = s.rc.Flush()
	return s.err
}

// done ends the stream with "data: [DONE]".
func (s *sseWriter) done() error {
	if s.err == nil {
		_, s.err = s.buf.WriteString("data: [DONE]\n\n")
	}
	return s.flush()
}
