package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/m40llm/m40llm/model"
)

// The scheduler owns the model. One goroutine (run) serves every request
// with continuous batching over the model's KV-cache slots:
//
//   - a request waits in a bounded queue until a slot is free; it then
//     takes the free slot whose cached tokens share the longest prefix
//     with its prompt, and only the rest of the prompt is evaluated;
//   - every step builds one model.Batch holding the next token of every
//     decoding slot, then up to chunk prompt tokens of the slots still in
//     prefill (oldest first), calls Model.Forward once with the last row
//     of every sequence that needs logits, and feeds each logits row (or
//     its top candidates, when every sampler of the step can do with them)
//     to that request's model.Generation;
//   - requests join and leave between steps; a request whose context is
//     done (the client went away) gives up its slot before the next step.
//
// So a long prompt delays the others by at most one chunk per step, and
// the decode steps of all active requests share one matrix-matrix pass.

// task is one request inside the scheduler. The loop writes its text and
// end; the handler reads them with next.
type task struct {
	ctx       context.Context
	prompt    []int32
	gen       *model.Generation
	submitted time.Time

	mu     sync.Mutex
	pieces []string
	done   bool
	res    Result
	err    error
	wake   chan struct{} // capacity 1: something new under mu

	// Owned by the loop.
	cached     int
	firstToken time.Time
	lastToken  time.Time
}

func newTask(ctx context.Context, prompt []int32, gen *model.Generation) *task {
	return &task{ctx: ctx, prompt: prompt, gen: gen, submitted: time.Now(), wake: make(chan struct{}, 1)}
}

func (t *task) notify() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// push adds generated text; it never blocks the loop.
func (t *task) push(text string) {
	t.mu.Lock()
	t.pieces = append(t.pieces, text)
	t.mu.Unlock()
	t.notify()
}

// end records the end of the request.
func (t *task) end(res Result, err error) {
	t.mu.Lock()
	t.done, t.res, t.err = true, res, err
	t.mu.Unlock()
	t.notify()
}

// next waits until there is new text or the request has ended, and
// returns the new pieces of text in order; done reports the end, with its
// result or error. It returns ctx's error when ctx is done first.
func (t *task) next(ctx context.Context) (pieces []string, done bool, res Result, err error) {
	for {
		t.mu.Lock()
		if len(t.pieces) > 0 || t.done {
			pieces, t.pieces = t.pieces, nil
			done, res, err = t.done, t.res, t.err
			t.mu.Unlock()
			return pieces, done, res, err
		}
		t.mu.Unlock()
		select {
		case <-t.wake:
		case <-ctx.Done():
			return nil, false, Result{}, ctx.Err()
		}
	}
}

// slot is one KV-cache slot and the request it serves.
type slot struct {
	id    int32
	cache []int32 // tokens whose keys and values are in the slot, in order
	task  *task   // nil when free
	seq   uint64  // admission order of task
	used  uint64  // when the slot was last freed (least recently used first)

	todo     []int32 // prompt tokens not evaluated yet
	decoding bool    // the prompt is done; next is the token to evaluate
	next     int32
	rows     int // rows of the slot in the current batch
}

// schedulerOptions configure a scheduler.
type schedulerOptions struct {
	queue   int // requests that may wait for a slot
	chunk   int // prompt tokens per step, over all slots in prefill
	metrics *metrics
	log     *slog.Logger
	// onStep, when set, sees every batch before it runs (tests).
	onStep func(b *model.Batch)
}

type scheduler struct {
	m    *model.Model
	opts schedulerOptions

	mu       sync.Mutex // guards inflight, closed, draining
	inflight int        // submitted and not ended
	limit    int        // slots + queue
	closed   bool
	draining bool

	submitCh chan *task
	quit     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once

	// Owned by the loop.
	slots    []*slot
	pending  []*task
	active   int
	seq      uint64
	batch    model.Batch
	outRows  []int32
	outSlots []*slot
	prefill  []*slot
	logits   []float32 // Forward's output: one vocabulary row per output row
	ids      []int32   // ForwardTopK's output: k candidates per output row
	vals     []float32
}

func newScheduler(m *model.Model, opts schedulerOptions) *scheduler {
	n := m.Slots()
	limit := n + opts.queue
	s := &scheduler{
		m: m, opts: opts, limit: limit,
		submitCh: make(chan *task, limit),
		quit:     make(chan struct{}),
		stopped:  make(chan struct{}),
		logits:   make([]float32, n*m.Config.VocabSize),
	}
	for i := range n {
		s.slots = append(s.slots, &slot{id: int32(i)})
	}
	go s.run()
	return s
}

// submit queues t, or fails with ErrBusy when every slot is in use and
// the queue is full, or ErrShuttingDown.
func (s *scheduler) submit(t *task) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.draining:
		return ErrShuttingDown
	case s.inflight >= s.limit:
		return ErrBusy
	}
	s.inflight++
	s.submitCh <- t // never blocks: the channel holds limit tasks
	return nil
}

// count returns the requests submitted and not ended.
func (s *scheduler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight
}

// drain refuses new requests and waits until the ones in flight have
// ended or ctx is done; it then stops the loop, ending what is left with
// ErrShuttingDown.
func (s *scheduler) drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
	for s.count() > 0 && err == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	s.stop()
	return err
}

// stop ends every request with ErrShuttingDown and waits for the loop to
// return.
func (s *scheduler) stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
	})
	<-s.stopped
}

func (s *scheduler) run() {
	defer close(s.stopped)
	for {
		if s.active == 0 && len(s.pending) == 0 {
			s.updateGauges()
			select {
			case t := <-s.submitCh:
				s.pending = append(s.pending, t)
			case <-s.quit:
				s.abortAll()
				return
			}
		}
	more:
		for {
			select {
			case t := <-s.submitCh:
				s.pending = append(s.pending, t)
			default:
				break more
			}
		}
		select {
		case <-s.quit:
			s.abortAll()
			return
		default:
		}
		s.dropCancelled()
		s.admit()
		if s.active > 0 {
			s.step()
		}
		s.updateGauges()
	}
}

// ended marks a task ended for the in-flight count.
func (s *scheduler) ended() {
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
}

func (s *scheduler) abortAll() {
	for _, sl := range s.slots {
		if sl.task != nil {
			s.finish(sl, ErrShuttingDown)
		}
	}
	for {
		select {
		case t := <-s.submitCh:
			s.pending = append(s.pending, t)
			continue
		default:
		}
		break
	}
	for _, t := range s.pending {
		t.end(Result{PromptTokens: len(t.prompt)}, ErrShuttingDown)
		s.ended()
	}
	s.pending = nil
	s.updateGauges()
}

// dropCancelled ends the requests whose context is done, freeing their
// slots; the tokens they evaluated stay cached for reuse.
func (s *scheduler) dropCancelled() {
	for _, sl := range s.slots {
		if sl.task != nil && sl.task.ctx.Err() != nil {
			s.finish(sl, sl.task.ctx.Err())
		}
	}
	kept := s.pending[:0]
	for _, t := range s.pending {
		if err := t.ctx.Err(); err != nil {
			t.end(Result{PromptTokens: len(t.prompt)}, err)
			s.ended()
			continue
		}
		kept = append(kept, t)
	}
	clear(s.pending[len(kept):])
	s.pending = kept
}

// admit moves waiting requests into free slots, oldest first.
func (s *scheduler) admit() {
	n := 0
	for n < len(s.pending) {
		t := s.pending[n]
		sl := s.pickSlot(t.prompt)
		if sl == nil {
			break
		}
		n++
		// Reuse the cached prefix, but evaluate at least one prompt token
		// so that there are logits to sample the first token from.
		keep := min(commonPrefix(sl.cache, t.prompt), len(t.prompt)-1)
		sl.cache = sl.cache[:keep]
		sl.todo = t.prompt[keep:]
		sl.decoding = false
		sl.task = t
		s.seq++
		sl.seq = s.seq
		t.cached = keep
		s.active++
		if s.opts.metrics != nil {
			s.opts.metrics.cachedTokens.Add(float64(keep))
			s.opts.metrics.queueWait.Observe(time.Since(t.submitted).Seconds())
		}
	}
	s.pending = append(s.pending[:0], s.pending[n:]...)
	clear(s.pending[len(s.pending):cap(s.pending)])
}

// pickSlot returns the free slot whose cache shares the longest prefix
// with prompt (the least recently used among equals), or nil.
func (s *scheduler) pickSlot(prompt []int32) *slot {
	var best *slot
	bestLen := -1
	for _, sl := range s.slots {
		if sl.task != nil {
			continue
		}
		n := commonPrefix(sl.cache, prompt)
		if n > bestLen || n == bestLen && sl.used < best.used {
			best, bestLen = sl, n
		}
	}
	return best
}

// step runs one forward pass over every active slot and advances their
// generations.
func (s *scheduler) step() {
	b := &s.batch
	b.Tokens, b.Pos, b.Slot = b.Tokens[:0], b.Pos[:0], b.Slot[:0]
	s.outRows, s.outSlots, s.prefill = s.outRows[:0], s.outSlots[:0], s.prefill[:0]
	add := func(tok int32, pos int, sl *slot) {
		b.Tokens = append(b.Tokens, tok)
		b.Pos = append(b.Pos, int32(pos))
		b.Slot = append(b.Slot, sl.id)
	}
	for _, sl := range s.slots {
		sl.rows = 0
		switch {
		case sl.task == nil:
		case sl.decoding:
			add(sl.next, len(sl.cache), sl)
			sl.rows = 1
			s.outRows = append(s.outRows, int32(b.Len()-1))
			s.outSlots = append(s.outSlots, sl)
		default:
			s.prefill = append(s.prefill, sl)
		}
	}
	slices.SortFunc(s.prefill, func(a, b *slot) int { return cmp.Compare(a.seq, b.seq) })
	budget := min(s.opts.chunk, s.m.BatchSize()-b.Len())
	for _, sl := range s.prefill {
		if budget <= 0 {
			break
		}
		n := min(len(sl.todo), budget)
		for i, tok := range sl.todo[:n] {
			add(tok, len(sl.cache)+i, sl)
		}
		sl.rows = n
		budget -= n
		if n == len(sl.todo) {
			s.outRows = append(s.outRows, int32(b.Len()-1))
			s.outSlots = append(s.outSlots, sl)
		}
	}
	if b.Len() == 0 {
		return
	}
	met := s.opts.metrics
	if met != nil {
		met.batchTokens.Observe(float64(b.Len()))
	}
	if s.opts.onStep != nil {
		s.opts.onStep(b)
	}

	k := s.candidates()
	if err := s.forward(k); err != nil {
		s.opts.log.Error("forward pass failed", "tokens", b.Len(), "err", err)
		fail := &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: CodeInternal,
			Message: "the forward pass failed: " + err.Error(), Err: err}
		for _, sl := range s.slots {
			if sl.rows > 0 {
				sl.cache = sl.cache[:0] // the slot's cache may hold partial writes
				s.finish(sl, fail)
			}
		}
		return
	}
	prompt := 0
	for _, sl := range s.slots {
		switch {
		case sl.rows == 0:
		case sl.decoding:
			sl.cache = append(sl.cache, sl.next)
		default:
			sl.cache = append(sl.cache, sl.todo[:sl.rows]...)
			sl.todo = sl.todo[sl.rows:]
			prompt += sl.rows
		}
	}
	if met != nil && prompt > 0 {
		met.promptTokens.Add(float64(prompt))
	}

	vocab := s.m.Config.VocabSize
	ctxSize := s.m.CtxSize()
	now := time.Now()
	for j, sl := range s.outSlots {
		t := sl.task
		room := len(sl.cache) < ctxSize
		var (
			id   int32
			text string
			done bool
		)
		if k > 0 {
			c := t.gen.CandidateCount()
			id, text, done = t.gen.StepCandidates(s.ids[j*k:j*k+c], s.vals[j*k:j*k+c], room)
		} else {
			id, text, done = t.gen.Step(s.logits[j*vocab:(j+1)*vocab], room)
		}
		if met != nil {
			if t.firstToken.IsZero() {
				met.ttft.Observe(now.Sub(t.submitted).Seconds())
			} else {
				met.tokenLatency.Observe(now.Sub(t.lastToken).Seconds())
			}
		}
		if t.firstToken.IsZero() {
			t.firstToken = now
		}
		t.lastToken = now
		if text != "" {
			t.push(text)
		}
		if done {
			s.finish(sl, nil)
			continue
		}
		sl.next, sl.decoding = id, true
	}
}

// candidates returns how many of the highest logits per output row are
// enough for every sequence of the step to sample exactly as from the
// whole vocabulary, or 0 when some sequence needs all of them (or no row
// is wanted). With k > 0 only the top k leave the backend (selected on
// the device by a model.TopKReader), which saves copying and scanning
// rows × vocabulary floats per step.
func (s *scheduler) candidates() int {
	if len(s.outRows) == 0 {
		return 0
	}
	k := 0
	for _, sl := range s.outSlots {
		c := sl.task.gen.CandidateCount()
		if c <= 0 || c > model.MaxTopK || c >= s.m.Config.VocabSize {
			return 0
		}
		k = max(k, c)
	}
	if n := len(s.outRows) * k; cap(s.ids) < n {
		s.ids, s.vals = make([]int32, n), make([]float32, n)
	}
	return k
}

// forward runs the batch, reading the top k logits of each output row
// (k > 0) or all of them, and turns a panic in a backend into an error so
// that one bad step fails its requests and not the process.
func (s *scheduler) forward(k int) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in the forward pass: %v", p)
		}
	}()
	if k > 0 {
		n := len(s.outRows) * k
		return s.m.ForwardTopK(&s.batch, s.outRows, k, s.ids[:n], s.vals[:n])
	}
	return s.m.Forward(&s.batch, s.outRows, s.logits)
}

// finish ends the slot's request with err (nil: finished normally) and
// frees the slot, keeping its cache.
func (s *scheduler) finish(sl *slot, err error) {
	t := sl.task
	res := Result{PromptTokens: len(t.prompt), CachedTokens: t.cached, CompletionTokens: len(t.gen.Tokens), Finish: t.gen.Finish}
	if met := s.opts.metrics; met != nil {
		met.generatedTokens.Add(float64(res.CompletionTokens))
	}
	t.end(res, err)
	sl.task, sl.todo, sl.decoding = nil, nil, false
	s.seq++
	sl.used = s.seq
	s.active--
	s.ended()
}

func (s *scheduler) updateGauges() {
	met := s.opts.metrics
	if met == nil {
		return
	}
	cells := 0
	for _, sl := range s.slots {
		cells += len(sl.cache)
	}
	met.active.Set(float64(s.active))
	met.queued.Set(float64(s.count() - s.active))
	met.kvTokens.Set(float64(cells))
	met.kvRatio.Set(float64(cells) / float64(len(s.slots)*s.m.CtxSize()))
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
