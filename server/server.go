// Package server serves a model over an OpenAI-compatible HTTP API:
// /v1/models, /v1/completions and /v1/chat/completions (streamed as
// Server-Sent Events on request), plus llama.cpp's /tokenize and
// /detokenize, /health and Prometheus /metrics.
//
// The package has three layers. The wire types (types.go) and the pure
// functions that convert requests to model inputs and results to responses
// (convert.go) know nothing of HTTP. The scheduler (scheduler.go) bounds
// the requests in flight and submits them to the model's engine
// (model.Engine), which runs every request through one loop with
// continuous batching over the model's KV-cache slots. The handlers
// (handlers.go) decode, convert, submit with the request's context and
// write JSON or SSE.
//
// A backend that fails for good (a device fault) makes /health answer 503
// with the reason and every new request a 503 at once; /metrics goes on.
//
// A Server answers before it has a model: /health says 503 until Start
// attaches one, so a process can listen while it loads.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"

	"github.com/m40llm/m40llm/model"
)

// Defaults for Options.
const (
	DefaultQueue        = 64
	DefaultPrefillChunk = 256
	DefaultMaxBodyBytes = 8 << 20
)

// Options configures a Server.
type Options struct {
	// Name is the model id of /v1/models and responses; requests naming
	// another model get 404. Required.
	Name string
	// APIKey, when set, is required as "Authorization: Bearer KEY" on
	// every route but /health.
	APIKey string
	// CORSOrigin, when set, is sent as Access-Control-Allow-Origin and
	// preflight requests are answered; "*" allows any origin.
	CORSOrigin string
	// Queue is the number of requests that may wait for a slot; more get
	// 503 with Retry-After. 0 means DefaultQueue; negative means none.
	Queue int
	// PrefillChunk is the most prompt tokens evaluated in one step, over
	// all requests in prefill; 0 means DefaultPrefillChunk. It is rounded
	// up to a multiple of 4.
	PrefillChunk int
	// MaxBodyBytes bounds request bodies (413 beyond); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// AllowSpecialInContent is Served.AllowSpecialInContent.
	AllowSpecialInContent bool
	// Logger receives request errors and lifecycle events; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Server is the HTTP API over one model. Create it with New, serve
// Handler, attach the model with Start, and stop with Shutdown or Close.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	handler http.Handler

	mu       sync.RWMutex
	served   *Served
	sched    *scheduler
	stopping bool
}

// New returns a Server with no model yet.
func New(opts Options) *Server {
	switch {
	case opts.Queue == 0:
		opts.Queue = DefaultQueue
	case opts.Queue < 0:
		opts.Queue = 0
	}
	if opts.PrefillChunk <= 0 {
		opts.PrefillChunk = DefaultPrefillChunk
	}
	opts.PrefillChunk = (opts.PrefillChunk + 3) &^ 3
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	s := &Server{opts: opts, log: opts.Logger, metrics: newMetrics()}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.handler = s.routes()
	return s
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.handler }

// Start serves m from now on: one slot per m.Slots(). The Server does not
// close m; stop the Server first.
func (s *Server) Start(m *model.Model) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served != nil || s.stopping {
		return errors.New("server: Start called twice or after Shutdown")
	}
	sched, err := newScheduler(m, schedulerOptions{
		queue: s.opts.Queue, chunk: min(s.opts.PrefillChunk, m.BatchSize()), metrics: s.metrics,
	})
	if err != nil {
		return err
	}
	tmpl, terr := m.ChatTemplate()
	s.served = &Served{Model: m, Name: s.opts.Name, Template: tmpl, TemplateErr: terr, AllowSpecialInContent: s.opts.AllowSpecialInContent}
	if terr != nil {
		s.log.Warn("no chat template; /v1/chat/completions will fail", "err", terr)
	}
	if mr, ok := m.Backend().(model.MemoryReporter); ok {
		s.metrics.addDeviceMemory(mr)
	}
	s.sched = sched
	return nil
}

// Ready reports whether a model is being served.
func (s *Server) Ready() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.served != nil && !s.stopping
}

// target returns the served model and its scheduler, or ErrNotReady /
// ErrShuttingDown.
func (s *Server) target() (*Served, *scheduler, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.stopping:
		return nil, nil, ErrShuttingDown
	case s.served == nil:
		return nil, nil, ErrNotReady
	}
	return s.served, s.sched, nil
}

// Shutdown refuses new requests and lets the ones in flight finish until
// ctx is done; those still running then end with an error. It returns
// once the model is no longer used (ctx's error if it had to cancel).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	sched := s.sched
	s.mu.Unlock()
	if sched == nil {
		return nil
	}
	return sched.drain(ctx)
}

// Close ends every request now and stops using the model.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
