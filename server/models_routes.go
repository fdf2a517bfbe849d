package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// use is a request's hold on the model it names; done ends it.
type use struct {
	served *Served
	sched  *scheduler
	p      *pool
	e      *entry // nil for Start's model
}

// done ends the request's use of its model; keep, when not negative, is
// the keep-alive it asked for (see pool.release).
func (u *use) done(keep time.Duration) {
	if u.e != nil {
		u.p.release(u.e, keep)
		u.e = nil
	}
}

// pick returns the model a request names (name as the OpenAI routes
// compare names, or as ollama does when ollama is set), loading a model
// of the models directory when needed. An empty name picks Start's
// model, else the directory's only model. It fails with ErrShuttingDown,
// ErrNotReady (no model yet), a 404 *Error for a name that is not
// served, a 400 one for no name when several models are, or as
// pool.acquire does. Without a models directory the name is left to the
// request's conversion to check, as before.
func (s *Server) pick(ctx context.Context, name string, ollama bool) (*use, error) {
	s.mu.RLock()
	stopping, served, sched := s.stopping, s.served, s.sched
	s.mu.RUnlock()
	switch {
	case stopping:
		return nil, ErrShuttingDown
	case s.pool == nil && served == nil:
		return nil, ErrNotReady
	case s.pool == nil, served != nil && (name == "" || sameModel(name, served.Name, ollama)):
		return &use{served: served, sched: sched}, nil
	}
	var f modelFile
	if name == "" {
		files, err := s.pool.scan()
		if err != nil || len(files) != 1 {
			return nil, badRequest("model", CodeInvalidValue, "model is required: this server serves several models (GET /v1/models lists them)")
		}
		f = files[0]
	} else {
		var ok bool
		if f, ok = s.pool.find(name, ollama); !ok {
			return nil, modelNotFound(name, ollama)
		}
	}
	e, err := s.pool.acquire(ctx, f)
	if err != nil {
		return nil, err
	}
	return &use{served: e.served, sched: e.sched, p: s.pool, e: e}, nil
}

// modelNotFound is the 404 of a name that no model has, in the words of
// the API asked (the shape is writeError's).
func modelNotFound(name string, ollama bool) *Error {
	msg := fmt.Sprintf("the model %q does not exist; GET /v1/models lists the models", name)
	if ollama {
		msg = fmt.Sprintf("model '%s' not found", name)
	}
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "model", Code: CodeModelNotFound, Message: msg}
}

// listed is a model as the listings show it.
type listed struct {
	name     string
	path     string // "" for Start's model without Options.ModelPath
	size     int64
	modified time.Time
	served   *Served // Start's model, or nil
}

// listModels returns Start's model then the directory's files, read anew
// on each call (a file added since appears), sorted by name; it fails
// with ErrShuttingDown or ErrNotReady.
func (s *Server) listModels() ([]listed, error) {
	s.mu.RLock()
	stopping, served := s.stopping, s.served
	s.mu.RUnlock()
	switch {
	case stopping:
		return nil, ErrShuttingDown
	case s.pool == nil && served == nil:
		return nil, ErrNotReady
	}
	var out []listed
	if served != nil {
		out = append(out, listed{name: served.Name, path: s.opts.ModelPath, served: served,
			modified: time.Now().Add(-served.Model.LoadTime)})
	}
	if s.pool != nil {
		files, err := s.pool.scan()
		if err != nil {
			s.log.Warn("models directory", "dir", s.pool.dir, "err", err)
		}
		var dir []listed
		for _, f := range files {
			if served != nil && f.name == served.Name {
				continue
			}
			dir = append(dir, listed{name: f.name, path: f.path, size: f.size, modified: f.modified})
		}
		slices.SortFunc(dir, func(a, b listed) int { return strings.Compare(a.name, b.name) })
		out = append(out, dir...)
	}
	return out, nil
}
