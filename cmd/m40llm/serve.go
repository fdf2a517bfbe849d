package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/server"
	"github.com/urfave/cli/v2"
)

// defaultAddr is where serve listens unless told otherwise: loopback, so
// that exposing the server on a network is an explicit choice.
const defaultAddr = "127.0.0.1:58439"

func serveCommand() *cli.Command {
	flags := append(modelFlags(),
		&cli.StringFlag{Name: "addr", Value: defaultAddr, Usage: "listen on `HOST:PORT`; anything but loopback exposes the server to the network", EnvVars: []string{"M40LLM_ADDR"}},
		&cli.IntFlag{Name: "parallel", Aliases: []string{"np"}, Value: 4, Usage: "`N` requests served at once, each in its own KV cache slot of --ctx-size positions"},
		&cli.IntFlag{Name: "queue", Value: server.DefaultQueue, Usage: "`N` requests that may wait for a slot; more get 503 (-1: none; 0: the default)"},
		&cli.IntFlag{Name: "prefill-chunk", Value: server.DefaultPrefillChunk, Usage: "at most `N` prompt tokens evaluated per step, so that long prompts do not stall running requests"},
		&cli.StringFlag{Name: "api-key", Usage: "require \"Authorization: Bearer `KEY`\" on every route but /health", EnvVars: []string{"M40LLM_API_KEY"}},
		&cli.StringFlag{Name: "cors-origin", Usage: "allow browser requests from `ORIGIN` (\"*\": any); no CORS headers without it"},
		&cli.StringSliceFlag{Name: "host-alias", Usage: "on loopback, also answer requests whose Host header is `NAME`, with any port (repeatable); other names get 403, against DNS rebinding"},
		&cli.DurationFlag{Name: "body-timeout", Value: server.DefaultBodyTimeout, Usage: "a request body not received `D` after its headers gets 408 and its connection closed; answers are not bounded (0: no limit)"},
		&cli.DurationFlag{Name: "header-timeout", Value: server.DefaultHeaderTimeout, Usage: "close connections that take longer than `D` to send a request's headers (0: no limit)"},
		&cli.DurationFlag{Name: "idle-timeout", Value: server.DefaultIdleTimeout, Usage: "close keep-alive connections idle for `D` between requests (0: no limit)"},
		&cli.IntFlag{Name: "max-header-bytes", Value: server.DefaultMaxHeaderBytes, Usage: "at most `N` bytes of request line and headers; more get 431"},
		&cli.StringFlag{Name: "alias", Usage: "model `ID` in the API (default: the file name without .gguf)"},
		&cli.DurationFlag{Name: "shutdown-timeout", Value: 30 * time.Second, Usage: "on SIGINT/SIGTERM, running requests may finish within `D` before they are cancelled"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "`FORMAT` of the log records on stderr, one line each: text (key=value) or json (one object per line)"},
		&cli.BoolFlag{Name: "log-disable", Usage: "log nothing: no access log line per request, no request errors (the startup and shutdown lines remain)"},
		&cli.StringFlag{Name: "models", Usage: "also serve every *.gguf file of `DIR`, named by its file name without .gguf, loaded on first use (with -m: that model is listed too and always loaded)", EnvVars: []string{"M40LLM_MODELS"}},
		&cli.IntFlag{Name: "max-models", Usage: "at most `N` models of --models loaded at once; the least recently used idle one is unloaded for another (0: 1, or 2 with --backend cpu)"},
		&cli.DurationFlag{Name: "keep-alive", Value: server.DefaultKeepAlive, Usage: "a model of --models stays loaded `D` after its last request (ollama's keep_alive overrides it; -1s: for ever)"},
		&cli.Int64Flag{Name: "memory-limit", Usage: "the models of --models loaded at once take at most `BYTES` together, counting each as its file size plus its KV cache (0: no limit but the device's)"},
		&cli.BoolFlag{Name: "embeddings", Usage: "serve /v1/embeddings, /api/embed and /api/embeddings from any model (models whose file declares a mean, cls or last pooling type serve them without it)"},
		&cli.StringFlag{Name: "pooling", Usage: "`TYPE` of pooling for embeddings: mean, cls or last (default: the model's pooling type, else mean)"},
		allowSpecialFlag(),
		chatTemplateFlag(),
	)
	return &cli.Command{
		Name:  "serve",
		Usage: "serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/embeddings, /v1/models, /health, /metrics)",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf("serve takes no arguments (got %q)", c.Args().First())
			}
			if c.Int("parallel") < 1 {
				return usageErrorf("--parallel must be at least 1")
			}
			if c.String("model") == "" && c.String("models") == "" {
				return usageErrorf("no model: pass -m MODEL.gguf or --models DIR (or set M40LLM_MODEL or M40LLM_MODELS)")
			}
			if dir := c.String("models"); dir != "" {
				if st, err := os.Stat(dir); err != nil || !st.IsDir() {
					return usageErrorf("--models %q: not a directory", dir)
				}
			}
			if p, err := model.ParsePooling(c.String("pooling")); err != nil || (p != model.PoolingUnset && !p.Embeds()) {
				return usageErrorf("--pooling %q: use mean, cls or last", c.String("pooling"))
			}
			if c.Int("max-models") < 0 || c.Int64("memory-limit") < 0 || c.Duration("keep-alive") == 0 {
				return usageErrorf("--max-models and --memory-limit must not be negative, --keep-alive not 0")
			}
			for _, name := range []string{"body-timeout", "header-timeout", "idle-timeout"} {
				if c.Duration(name) < 0 {
					return usageErrorf("--%s must not be negative (0: no limit)", name)
				}
			}
			if f := c.String("log-format"); f != "text" && f != "json" {
				return usageErrorf("--log-format %q: want text or json", f)
			}
			if c.Int("max-header-bytes") < 1 {
				return usageErrorf("--max-header-bytes must be at least 1")
			}
			return serve(c)
		},
	}
}

// defaultMaxModels is --max-models 0: one model on a GPU, whose memory
// rarely holds two; two on the CPU, whose weights are mapped from the
// files and shared with the page cache, so that two models can alternate
// without a reload.
func defaultMaxModels(backend string) int {
	if backend == "cpu" {
		return 2
	}
	return 1
}

// estimateModel is the size --memory-limit counts for the model at path:
// the file (its weights) plus a float32 KV cache of slots sequences of
// ctx positions (0: the training context, at most model.DefaultCtxSize),
// from the metadata only. It fails when the file is not a model.
func estimateModel(path string, ctx, slots int) (int64, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cfg, err := model.ConfigFromGGUF(&f.Metadata)
	if err != nil {
		return 0, err
	}
	if ctx <= 0 {
		ctx = min(cfg.ContextLength, model.DefaultCtxSize)
		if ctx <= 0 {
			ctx = model.DefaultCtxSize
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	kv := 4 * int64(cfg.Layers) * int64(max(slots, 1)) * int64(ctx) * int64(cfg.KVDim()+cfg.VDim())
	return st.Size() + kv, nil
}

// noLimitIfZero maps a flag's 0 ("no limit") to server.Options' negative.
func noLimitIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// serveLogger returns the server's logger: records of level and above on
// w in format ("text": slog's key=value lines, "json": one object per
// line), or none when disabled.
func serveLogger(w io.Writer, format string, disabled bool, level slog.Level) *slog.Logger {
	if disabled {
		return slog.New(slog.DiscardHandler)
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(c *cli.Context) error {
	tmpl, err := chatTemplateFile(c)
	if err != nil {
		return err
	}
	stderr := c.App.ErrWriter
	level := slog.LevelInfo
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	logger := serveLogger(stderr, c.String("log-format"), c.Bool("log-disable"), level)

	name := c.String("alias")
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(c.String("model")), ".gguf")
	}
	maxModels := c.Int("max-models")
	if maxModels == 0 {
		maxModels = defaultMaxModels(c.String("backend"))
	}
	slots := c.Int("parallel")
	pooling, _ := model.ParsePooling(c.String("pooling")) // checked before
	srv := server.New(server.Options{
		ModelsDir:             c.String("models"),
		LoadModel:             func(path string) (*model.Model, error) { return loadModelFile(c, path, slots) },
		EstimateModel:         func(path string) (int64, error) { return estimateModel(path, c.Int("ctx-size"), slots) },
		MaxModels:             maxModels,
		KeepAlive:             c.Duration("keep-alive"),
		MemoryLimit:           c.Int64("memory-limit"),
		Name:                  name,
		ModelPath:             c.String("model"),
		APIKey:                c.String("api-key"),
		CORSOrigin:            c.String("cors-origin"),
		Queue:                 c.Int("queue"),
		PrefillChunk:          c.Int("prefill-chunk"),
		BodyTimeout:           noLimitIfZero(c.Duration("body-timeout")),
		HeaderTimeout:         noLimitIfZero(c.Duration("header-timeout")),
		IdleTimeout:           noLimitIfZero(c.Duration("idle-timeout")),
		MaxHeaderBytes:        c.Int("max-header-bytes"),
		HostAliases:           c.StringSlice("host-alias"),
		AllowSpecialInContent: c.Bool("allow-special-in-content"),
		Embeddings:            c.Bool("embeddings"),
		Pooling:               pooling,
		ChatTemplate:          tmpl,
		Logger:                logger,
		AccessLog:             !c.Bool("log-disable"),
	})
	ln, err := net.Listen("tcp", c.String("addr"))
	if err != nil {
		return err
	}
	hs := srv.HTTPServer()
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c.String("model") == "" {
		fmt.Fprintf(stderr, "m40llm: listening on http://%s, serving the models of %s (at most %d loaded)\n", ln.Addr(), c.String("models"), maxModels)
	} else {
		fmt.Fprintf(stderr, "m40llm: listening on http://%s (/health says 503 until the model is loaded)\n", ln.Addr())
		m, err := loadModel(c, slots)
		if err != nil {
			hs.Close()
			return err
		}
		defer m.Close()
		if err := srv.Start(m); err != nil {
			hs.Close()
			return err
		}
		fmt.Fprintf(stderr, "m40llm: serving %q: %d slots x %d positions, batch %d\n", name, m.Slots(), m.CtxSize(), m.BatchSize())
	}

	select {
	case err := <-served:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	stop() // a second signal kills the process
	timeout := c.Duration("shutdown-timeout")
	fmt.Fprintf(stderr, "m40llm: shutting down; running requests have %v to finish\n", timeout)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Shutdown(sctx) }()
	if err := srv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintln(stderr, "m40llm: cancelled the requests still running")
	}
	<-httpDone // at the latest at the deadline
	// Every request has ended; give the handlers a moment to send their
	// last event before the connections close.
	gctx, gcancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = hs.Shutdown(gctx) // the listener is closed already: only waits for handlers
	gcancel()
	hs.Close()
	fmt.Fprintln(stderr, "m40llm: stopped")
	return nil
}
