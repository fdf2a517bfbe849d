// Package server serves a model over an OpenAI-compatible HTTP API:
// /v1/models, /v1/completions and /v1/chat/completions (streamed as
// Server-Sent Events on request), /v1/embeddings (embeddings.go), plus llama.cpp's /tokenize and
// /detokenize, /health and Prometheus /metrics; and ollama's API under
// /api (version, tags, ps, show, generate, chat; see ollama.go) over the
// same engine, with errors in ollama's shape; and a web chat page at /
// that uses those routes (web.go).
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
	"strings"
	"sync"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
)

// Defaults for Options.
const (
	DefaultQueue          = 64
	DefaultPrefillChunk   = 256
	DefaultMaxBodyBytes   = 8 << 20
	DefaultMaxHeaderBytes = 64 << 10
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultBodyTimeout    = 30 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
)

// Options configures a Server.
type Options struct {
	// Name is the model id of /v1/models and responses; requests naming
	// another model get 404. Required.
	Name string
	// ModelPath is the served GGUF file, whose size, modification time,
	// parameter count and sha256 the ollama routes report; empty: they
	// report none.
	ModelPath string
	// APIKey, when set, is required as "Authorization: Bearer KEY" on
	// every route but /health and the web page's files (GET / and
	// /web/NAME; the page asks for the key) (the scheme matched without
	// case); other requests get 401.
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
	// BodyTimeout bounds the time a client may take to send a request's
	// body, counted from the end of its headers; one that is not done by
	// then gets 408 and its connection is closed. It does not bound the
	// answer: a stream lasts as long as its generation. 0 means
	// DefaultBodyTimeout; negative means none. The Handler applies it, so
	// it holds however the Handler is served.
	BodyTimeout time.Duration
	// HeaderTimeout bounds the time a client may take to send a request's
	// headers; the connection is closed when it passes. 0 means
	// DefaultHeaderTimeout; negative means none. Used by HTTPServer.
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that has waited that
	// long for its next request. 0 means DefaultIdleTimeout; negative
	// means none. Used by HTTPServer.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers of a request
	// (net/http answers 431 beyond, allowing 4 KiB of slack). 0 or less
	// means DefaultMaxHeaderBytes. Used by HTTPServer.
	MaxHeaderBytes int
	// HostAliases are names, besides localhost and loopback addresses,
	// that a request arriving over a loopback connection may give as its
	// Host; any other gets 403 (see Handler). They are compared without
	// case and without a port ("Box.lan:8080" allows "box.lan:58439").
	HostAliases []string
	// Embeddings serves embeddings (/v1/embeddings, /api/embed,
	// /api/embeddings) from every model; without it only models whose
	// file declares mean, cls or last pooling (`{arch}.pooling_type`) do,
	// and the others answer 400.
	Embeddings bool
	// Pooling overrides the models' pooling type for embeddings
	// (model.PoolingMean, PoolingCLS or PoolingLast); PoolingUnset keeps
	// a model's own, or mean for a model that declares none of those.
	Pooling model.Pooling
	// AllowSpecialInContent is Served.AllowSpecialInContent.
	AllowSpecialInContent bool
	// ChatTemplate, when set, renders the chat requests of every served
	// model instead of the model's own template (`serve
	// --chat-template-file`), e.g. to use tools with a model whose
	// template has none.
	ChatTemplate *chat.Template
	// Logger receives request errors and lifecycle events; nil means
	// slog.Default().
	Logger *slog.Logger
	// ModelsDir, when set, is a directory whose *.gguf files are served
	// too, each by its file name without ".gguf", loaded on first use
	// through LoadModel (see models.go); the model given to Start, if
	// any, is listed with them under Name. Empty: Start's model only.
	ModelsDir string
	// LoadModel loads a file of ModelsDir; the Server closes the model
	// when it unloads it. Its errors fail the request that needed the
	// model (one that matches model.ErrOutOfMemory first makes the idle
	// models unload, one at a time, and is retried). Required with
	// ModelsDir: without it every load fails.
	LoadModel func(path string) (*model.Model, error)
	// EstimateModel returns the bytes a file of ModelsDir will hold once
	// loaded, counted against MemoryLimit; nil: the file's size.
	EstimateModel func(path string) (int64, error)
	// MaxModels bounds the models of ModelsDir loaded at once; 0 means
	// DefaultMaxModels.
	MaxModels int
	// KeepAlive is how long a model of ModelsDir stays loaded after its
	// last request (ollama's keep_alive of a request overrides it for
	// that model); 0 means DefaultKeepAlive, negative for ever.
	KeepAlive time.Duration
	// MemoryLimit, when positive, bounds the sum of the estimated sizes
	// (EstimateModel) of the models of ModelsDir loaded at once.
	MemoryLimit int64
	// AccessLog, when set, logs one Info record per request to Logger
	// (message "request": method, route, path, status, prompt_tokens and
	// completion_tokens for a generation that ended, duration_ms).
	AccessLog bool
}

// Server is the HTTP API over one model. Create it with New, serve
// Handler, attach the model with Start, and stop with Shutdown or Close.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	handler http.Handler
	aliases []string // Options.HostAliases as hostName gives them

	mu       sync.RWMutex
	served   *Served
	sched    *scheduler
	stopping bool
	pool     *pool // the models directory; nil without one

	ollama ollamaState // what the ollama routes learn about the model file
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
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	opts.BodyTimeout = orDefault(opts.BodyTimeout, DefaultBodyTimeout)
	opts.HeaderTimeout = orDefault(opts.HeaderTimeout, DefaultHeaderTimeout)
	opts.IdleTimeout = orDefault(opts.IdleTimeout, DefaultIdleTimeout)
	s := &Server{opts: opts, log: opts.Logger, metrics: newMetrics()}
	for _, a := range opts.HostAliases {
		if name := hostName(strings.TrimSpace(a)); name != "" {
			s.aliases = append(s.aliases, name)
		}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if opts.ModelsDir != "" {
		s.pool = newPool(s, &opts)
	}
	s.handler = s.routes()
	return s
}

// orDefault returns def for 0, d otherwise (negative: none).
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Handler returns the HTTP handler of every route. It bounds the time a
// body may take to arrive (Options.BodyTimeout) with the connection's
// read deadline, through http.ResponseController; where the
// ResponseWriter cannot set one, the body is not bounded in time.
//
// A request that arrived over a loopback connection (its
// http.LocalAddrContextKey is a loopback address; a request without one
// counts as such) is answered only if its Host names localhost, a
// loopback or unspecified IP address, or one of Options.HostAliases, with
// any port; any other gets 403 host_not_allowed before anything else is
// looked at. That is the guard against DNS rebinding: a web page can
// reach a server on 127.0.0.1 by its own name, and read the answers, once
// its name resolves there, but its requests then carry that name. A
// server reached over another address was exposed on purpose, and
// answers any Host.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an http.Server that serves Handler with
// Options.HeaderTimeout, IdleTimeout and MaxHeaderBytes, and logs
// connection errors at debug level. Set its Addr, or pass a listener to
// its Serve.
//
// It has no WriteTimeout, on purpose: that runs from the end of a
// request's headers to the end of its answer, so it would cut off streams
// that last minutes. Nor a ReadTimeout: the body is bounded by
// Options.BodyTimeout in the Handler instead, which holds however the
// Handler is served and answers 408 in OpenAI's shape.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.opts.HeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// Start serves m from now on: one slot per m.Slots(). The Server does not
// close m; stop the Server first. It fails when called twice or after
// Shutdown, or when m's sessions cannot be made.
func (s *Server) Start(m *model.Model) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served != nil || s.stopping {
		return errors.New("server: Start called twice or after Shutdown")
	}
	served, sched, err := s.newServed(m, "")
	if err != nil {
		return err
	}
	served.Name = s.opts.Name
	s.served, s.sched = served, sched
	return nil
}

// newServed starts a scheduler over m, served as name ("" for Start's
// model, whose name is Options.Name).
func (s *Server) newServed(m *model.Model, name string) (*Served, *scheduler, error) {
	sched, err := newScheduler(m, schedulerOptions{
		queue: s.opts.Queue, chunk: min(s.opts.PrefillChunk, m.BatchSize()), metrics: s.metrics, name: name,
	})
	if err != nil {
		return nil, nil, err
	}
	tmpl, terr := m.ChatTemplate()
	if s.opts.ChatTemplate != nil {
		tmpl, terr = s.opts.ChatTemplate, nil
	}
	served := &Served{Model: m, Name: name, Template: tmpl, TemplateErr: terr, AllowSpecialInContent: s.opts.AllowSpecialInContent}
	served.Embeddings, served.Pooling = embeddingPooling(s.opts.Embeddings, s.opts.Pooling, m.Config.Pooling)
	if terr != nil {
		s.log.Warn("no chat template; /v1/chat/completions will fail", "model", name, "err", terr)
	}
	if mr, ok := m.Backend().(model.MemoryReporter); ok {
		s.metrics.addDeviceMemory(mr)
	}
	return served, sched, nil
}

// Ready reports whether a model is being served.
func (s *Server) Ready() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (s.served != nil || s.pool != nil) && !s.stopping
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
// once the models are no longer used (ctx's error if it had to cancel);
// the models of Options.ModelsDir are closed, Start's is not.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	sched := s.sched
	s.mu.Unlock()
	var err error
	if s.pool != nil {
		err = s.pool.shutdown(ctx)
	}
	if sched != nil {
		if serr := sched.drain(ctx); err == nil {
			err = serr
		}
	}
	return err
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
