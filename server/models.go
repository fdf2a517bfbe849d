package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/m40llm/m40llm/internal/errclass"
	"github.com/m40llm/m40llm/model"
)

// The models directory (Options.ModelsDir): every *.gguf file there is a
// model named by its file name without ".gguf". A request names one in
// its "model" field; it is loaded on first use (concurrent first requests
// wait for one load), kept while requests use it and then for its
// keep-alive, and unloaded when its keep-alive passes or when another
// model needs its place: at most MaxModels are loaded at once, and their
// estimated sizes (Options.EstimateModel) stay within MemoryLimit. The
// least recently used idle model (no request running) goes first. A
// model that cannot fit even alone fails with a *ModelMemoryError that
// matches ErrModelTooLarge (507 model_too_large); one that cannot fit
// while the others are busy with ErrModelsBusy (503
// insufficient_resources, Retry-After). A backend's own check (a GPU's
// free memory, model.ErrOutOfMemory) counts as not fitting: the idle
// models are unloaded one by one and the load retried, and only then
// does the request fail. The model given to Start (serve -m) is listed
// too, under Options.Name: it is always loaded, never unloaded, and not
// counted in MaxModels; a directory file of the same name is hidden by
// it.

// Defaults of the models directory's options.
const (
	DefaultMaxModels = 1
	DefaultKeepAlive = 5 * time.Minute
)

// forever is a keep-alive so long that it stands for "never unload".
const forever = time.Duration(1 << 62)

// Errors of the models directory, matched by *ModelMemoryError.
var (
	// ErrModelTooLarge: the model does not fit even with every other
	// model unloaded.
	ErrModelTooLarge = errors.New("server: the model does not fit in memory")
	// ErrModelsBusy: the model would fit, but the models that hold the
	// memory are serving requests.
	ErrModelsBusy = errors.New("server: no room for the model while the loaded ones are busy")
)

// ModelMemoryError reports a model of the models directory that could
// not be loaded for want of room. It matches ErrModelTooLarge or
// ErrModelsBusy (errors.Is) and unwraps to the backend's error, if any.
type ModelMemoryError struct {
	Name string
	// Need is the model's estimated size and Limit Options.MemoryLimit
	// (0 when the backend's own check refused it, then Err says why).
	Need, Limit int64
	// Busy is set when other models held the room and were in use.
	Busy bool
	Err  error
}

// Error says which model did not fit, and why.
func (e *ModelMemoryError) Error() string {
	var why string
	switch {
	case e.Limit > 0 && !e.Busy:
		why = fmt.Sprintf("it needs about %s and the memory limit is %s", humanSize(e.Need), humanSize(e.Limit))
	case e.Busy && e.Limit > 0:
		why = fmt.Sprintf("it needs about %s of the %s memory limit, which the models serving requests hold; retry later", humanSize(e.Need), humanSize(e.Limit))
	case e.Busy:
		why = "the models serving requests hold the memory (or the --max-models places); retry later"
	default:
		why = "it does not fit even with every other model unloaded"
	}
	if e.Err != nil {
		why += ": " + e.Err.Error()
	}
	return fmt.Sprintf("server: model %q cannot be loaded: %s", e.Name, why)
}

// Is matches ErrModelsBusy when Busy, ErrModelTooLarge otherwise.
func (e *ModelMemoryError) Is(target error) bool {
	return target == ErrModelsBusy && e.Busy || target == ErrModelTooLarge && !e.Busy
}

// Unwrap returns the backend's error.
func (e *ModelMemoryError) Unwrap() error { return e.Err }

// Error codes of the models directory.
const (
	CodeModelTooLarge         = "model_too_large"
	CodeInsufficientResources = "insufficient_resources"
	TypeInsufficientResources = "insufficient_resources"
)

// apiError answers a model that does not fit with 507 model_too_large,
// one that has no room now with 503 insufficient_resources.
func (e *ModelMemoryError) apiError() *Error {
	if e.Busy {
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeInsufficientResources,
			RetryAfter: 1, Param: "model", Message: e.Error(), Err: e}
	}
	return &Error{Status: http.StatusInsufficientStorage, Type: TypeInsufficientResources, Code: CodeModelTooLarge,
		Param: "model", Message: e.Error(), Err: e}
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// modelFile is a *.gguf file of the models directory.
type modelFile struct {
	name, path string
	size       int64
	modified   time.Time
}

// entry is a model of the directory that is loading, loaded or
// unloading. Its fields are guarded by pool.mu, but for those set before
// ready is closed (m, served, sched, err), which are read after it.
type entry struct {
	name, path string
	cost       int64
	ready      chan struct{} // closed when the load has ended
	err        error
	m          *model.Model
	served     *Served
	sched      *scheduler
	loadedAt   time.Time

	refs     int           // requests using it
	lastUsed time.Time     // when the last request ended
	keep     time.Duration // keep-alive after the last request
	expires  time.Time     // zero: not counting down
	timer    *time.Timer
	gen      int           // invalidates a timer that fired late
	gone     chan struct{} // non-nil once unloading; closed when unloaded
}

// isReady reports whether the load ended well.
func (e *entry) isReady() bool {
	select {
	case <-e.ready:
		return e.err == nil
	default:
		return false
	}
}

func (e *entry) stopTimer() {
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.expires = time.Time{}
}

// pool holds the loaded models of the directory.
type pool struct {
	s        *Server
	dir      string
	load     func(path string) (*model.Model, error)
	estimate func(path string) (int64, error)
	max      int
	keep     time.Duration
	limit    int64

	mu     sync.Mutex
	loaded map[string]*entry
	used   int64 // the cost of the entries not unloading
	closed bool
	wg     sync.WaitGroup // loads and unloads in flight
}

func newPool(s *Server, o *Options) *pool {
	p := &pool{s: s, dir: o.ModelsDir, load: o.LoadModel, estimate: o.EstimateModel, max: o.MaxModels,
		keep: o.KeepAlive, limit: o.MemoryLimit, loaded: map[string]*entry{}}
	if p.max <= 0 {
		p.max = DefaultMaxModels
	}
	switch {
	case p.keep == 0:
		p.keep = DefaultKeepAlive
	case p.keep < 0:
		p.keep = forever
	}
	if p.estimate == nil {
		p.estimate = func(path string) (int64, error) {
			st, err := os.Stat(path)
			if err != nil {
				return 0, err
			}
			return st.Size(), nil
		}
	}
	return p
}

// scan lists the directory's *.gguf files by name; it fails with the
// directory's read error.
func (p *pool) scan() ([]modelFile, error) {
	des, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	var out []modelFile
	for _, de := range des {
		n := de.Name()
		if !strings.HasSuffix(n, ".gguf") || strings.HasPrefix(n, ".") || n == ".gguf" {
			continue
		}
		path := filepath.Join(p.dir, n)
		st, err := os.Stat(path) // follows links
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		out = append(out, modelFile{name: strings.TrimSuffix(n, ".gguf"), path: path, size: st.Size(), modified: st.ModTime()})
	}
	return out, nil
}

// find returns the file a request's name picks: the exact name, or for
// an ollama request the name in any case, with or without ":latest".
func (p *pool) find(name string, ollama bool) (modelFile, bool) {
	files, err := p.scan()
	if err != nil {
		p.s.log.Warn("models directory", "dir", p.dir, "err", err)
		return modelFile{}, false
	}
	for _, f := range files {
		if sameModel(name, f.name, ollama) {
			return f, true
		}
	}
	return modelFile{}, false
}

// sameModel compares a requested name with a model's: exactly for the
// OpenAI routes, as ollama does (no case, ":latest" optional) for its.
func sameModel(req, name string, ollama bool) bool {
	if !ollama {
		return req == name
	}
	return strings.EqualFold(strings.TrimSuffix(req, ":latest"), strings.TrimSuffix(name, ":latest"))
}

// acquire returns the loaded model of f with a request counted on it,
// loading it first when needed. It fails with ErrShuttingDown, ctx's
// error while waiting, a *ModelMemoryError when it has no room, or the
// load's error. Call release when the request ends.
func (p *pool) acquire(ctx context.Context, f modelFile) (*entry, error) {
	cost := int64(-1)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrShuttingDown
		}
		e := p.loaded[f.name]
		if e != nil && e.gone != nil {
			gone := e.gone
			p.mu.Unlock()
			select {
			case <-gone:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if e == nil && cost < 0 {
			p.mu.Unlock()
			c, err := p.estimate(f.path)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.path, err)
			}
			cost = c
			continue
		}
		if e == nil {
			var err error
			if e, err = p.startLoad(f, cost); err != nil {
				p.mu.Unlock()
				return nil, err
			}
		}
		e.refs++
		e.stopTimer()
		p.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			p.release(e, -1)
			return nil, ctx.Err()
		}
		if e.err != nil {
			p.release(e, -1)
			return nil, e.err
		}
		return e, nil
	}
}

// startLoad makes room for a model of cost bytes, unloading the least
// recently used idle models, and starts its load; it holds p.mu.
func (p *pool) startLoad(f modelFile, cost int64) (*entry, error) {
	if p.limit > 0 && cost > p.limit {
		return nil, &ModelMemoryError{Name: f.name, Need: cost, Limit: p.limit}
	}
	for p.count() >= p.max || p.limit > 0 && p.used+cost > p.limit {
		v := p.lruIdle(nil)
		if v == nil {
			return nil, &ModelMemoryError{Name: f.name, Need: cost, Limit: p.limit, Busy: true}
		}
		p.unloadLocked(v, "room")
	}
	var waits []chan struct{}
	for _, o := range p.loaded {
		if o.gone != nil {
			waits = append(waits, o.gone)
		}
	}
	e := &entry{name: f.name, path: f.path, cost: cost, ready: make(chan struct{}), keep: p.keep}
	p.loaded[f.name] = e
	p.used += cost
	p.wg.Add(1)
	go p.loadEntry(e, waits)
	return e, nil
}

// count returns the models loading or loaded (not unloading).
func (p *pool) count() int {
	n := 0
	for _, e := range p.loaded {
		if e.gone == nil {
			n++
		}
	}
	return n
}

// lruIdle returns the least recently used loaded model that no request
// uses, other than not; nil when there is none.
func (p *pool) lruIdle(not *entry) *entry {
	var best *entry
	for _, e := range p.loaded {
		if e == not || e.gone != nil || e.refs > 0 || !e.isReady() || e.sched.count() > 0 {
			continue
		}
		if best == nil || e.lastUsed.Before(best.lastUsed) {
			best = e
		}
	}
	return best
}

// loadEntry loads e once the models being unloaded are gone, retrying
// after unloading an idle model while the backend reports out of memory.
func (p *pool) loadEntry(e *entry, waits []chan struct{}) {
	defer p.wg.Done()
	for _, w := range waits {
		<-w
	}
	start := time.Now()
	var m *model.Model
	var err error
	for {
		m, err = p.load(e.path)
		if err == nil || errclass.Of(err) != errclass.OutOfMemory {
			break
		}
		p.mu.Lock()
		v := p.lruIdle(e)
		if v != nil {
			p.unloadLocked(v, "room")
		}
		busy := p.count() > 1
		p.mu.Unlock()
		if v == nil {
			err = &ModelMemoryError{Name: e.name, Need: e.cost, Busy: busy, Err: err}
			break
		}
		<-v.gone
	}
	var served *Served
	var sched *scheduler
	if err == nil {
		if served, sched, err = p.s.newServed(m, e.name); err != nil {
			_ = m.Close()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		e.err = err
		if p.loaded[e.name] == e {
			delete(p.loaded, e.name)
		}
		p.used -= e.cost
		close(e.ready)
		p.s.log.Warn("model load failed", "model", e.name, "err", err)
		return
	}
	e.m, e.served, e.sched, e.loadedAt, e.lastUsed = m, served, sched, time.Now(), time.Now()
	close(e.ready)
	p.s.metrics.modelLoaded(e.name)
	p.s.log.Info("model loaded", "model", e.name, "path", e.path, "duration", time.Since(start).Round(time.Millisecond))
}

// release ends a request's use of e. keep, when not negative, is the
// keep-alive the request asked for (ollama's keep_alive: 0 unloads the
// model now, ≥ forever never); the model is unloaded when its keep-alive
// passes with no request on it.
func (p *pool) release(e *entry, keep time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.refs--
	if !e.isReady() || e.gone != nil {
		return
	}
	e.lastUsed = time.Now()
	if keep >= 0 {
		e.keep = keep
	}
	if e.refs > 0 || p.closed {
		return
	}
	switch {
	case e.keep == 0:
		p.unloadLocked(e, "keep_alive 0")
	case e.keep < forever:
		e.stopTimer()
		gen := e.gen
		e.expires = e.lastUsed.Add(e.keep)
		e.timer = time.AfterFunc(e.keep, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if e.gen == gen && e.refs == 0 && e.gone == nil && !p.closed {
				p.unloadLocked(e, "keep-alive expired")
			}
		})
	}
}

// unloadLocked starts unloading e (holding p.mu): its engine is drained
// and stopped, its model closed, then e.gone is closed.
func (p *pool) unloadLocked(e *entry, why string) {
	e.stopTimer()
	e.gone = make(chan struct{})
	p.used -= e.cost
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.closeEntry(e, context.Background())
		p.mu.Lock()
		if p.loaded[e.name] == e {
			delete(p.loaded, e.name)
		}
		p.mu.Unlock()
		close(e.gone)
		p.s.log.Info("model unloaded", "model", e.name, "reason", why)
	}()
}

// closeEntry stops e's engine (the requests still running end when ctx
// is done) and closes its model, logging a failure to close.
func (p *pool) closeEntry(e *entry, ctx context.Context) error {
	err := e.sched.drain(ctx)
	p.s.metrics.modelUnloaded(e.name, e.sched)
	if cerr := e.m.Close(); cerr != nil {
		p.s.log.Warn("closing model", "model", e.name, "err", cerr)
	}
	return err
}

// shutdown refuses new requests, waits for the loads and unloads in
// flight, then drains every loaded model until ctx is done and closes
// it. It returns ctx's error when it had to cancel requests.
func (p *pool) shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	for _, e := range p.loaded {
		e.stopTimer()
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	var live []*entry
	for _, e := range p.loaded {
		if e.isReady() && e.gone == nil {
			live = append(live, e)
		}
	}
	p.loaded = map[string]*entry{}
	p.used = 0
	p.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, e := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.closeEntry(e, ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// running lists the loaded models by name.
func (p *pool) running() []*entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*entry
	for _, e := range p.loaded {
		if e.isReady() && e.gone == nil {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *entry) int { return strings.Compare(a.name, b.name) })
	return out
}

// expiry returns when e will be unloaded: zero while it is in use or
// kept for ever.
func (p *pool) expiry(e *entry) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return e.expires
}

// unload unloads the named model now when no request uses it (ollama's
// keep_alive 0 with no prompt) and reports whether it was loaded.
func (p *pool) unload(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.loaded[name]
	if e == nil || e.gone != nil || !e.isReady() {
		return false
	}
	if e.refs == 0 {
		p.unloadLocked(e, "keep_alive 0")
	} else {
		e.keep = 0
	}
	return true
}

// pathOf returns the file of a model the pool serves, or "".
func (p *pool) pathOf(served *Served) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.loaded {
		if e.isReady() && e.served == served {
			return e.path
		}
	}
	return ""
}
