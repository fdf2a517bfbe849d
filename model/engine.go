package model

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrEngineClosed is the error of requests submitted to, or still running
// in, an Engine that has been closed.
var ErrEngineClosed = errors.New("model: the engine is closed")

// EngineOptions configures an Engine.
type EngineOptions struct {
	BatcherOptions
	// Observer, when set, sees what the engine does (for metrics).
	Observer Observer
}

// Observer sees what an Engine does. Its methods run on the engine's
// goroutine, between steps, and must not block.
type Observer interface {
	// Admitted: a request got its session after waiting queued, with
	// cached of its prompt tokens already in the cache.
	Admitted(queued time.Duration, cached int)
	// Stepped: a forward pass ran.
	Stepped(st StepStats)
	// Sampled: a request sampled a token; first tells whether it is its
	// first, and since is the time since it was submitted (first) or since
	// its previous token.
	Sampled(first bool, since time.Duration)
	// Ended: a request ended (see Sink.Done).
	Ended(res *Result, err error)
}

// Engine runs a Batcher on a goroutine of its own, so that requests
// submitted from many goroutines (HTTP handlers, C threads) share one
// forward pass per step. A request waits, in submission order, until a
// session is free; its output is read from its Job. Submit never blocks:
// callers bound how many requests they submit.
type Engine struct {
	m   *Model
	b   *Batcher
	obs Observer

	mu     sync.Mutex
	inbox  []*Job // submitted, not yet seen by the loop
	closed bool
	wake   chan struct{} // capacity 1: the inbox has jobs, or closed is set

	stopped chan struct{}

	// Owned by the loop.
	waiting []*Job

	// Gauges, written by the loop.
	active, queued, cached atomic.Int64
}

// NewEngine starts an Engine over m. The caller keeps m and closes it
// after the Engine.
func NewEngine(m *Model, opts EngineOptions) *Engine {
	e := &Engine{
		m: m, b: NewBatcher(m, opts.BatcherOptions), obs: opts.Observer,
		wake: make(chan struct{}, 1), stopped: make(chan struct{}),
	}
	go e.run()
	return e
}

// Job is a request submitted to an Engine: its text as it is produced, and
// its end.
type Job struct {
	e         *Engine
	q         *sequence
	submitted time.Time
	paced     bool
	unwatch   func() bool // stops the context watch
	last      time.Time   // the previous token (the loop's)

	mu     sync.Mutex
	pieces []Piece
	probs  []TokenLogProbs // of the tokens sampled since the last piece
	unread atomic.Bool     // paced: text was produced that Next has not been called back for
	done   bool
	res    *Result
	err    error
	wake   chan struct{} // capacity 1: something new under mu
}

// Submit queues req. ctx is the request's: when it is done the request
// ends within one step with ctx's error, freeing its session. Submit fails
// at once for an invalid request (as Batcher.Start), an unusable backend
// (ErrBackendFailed) or a closed engine (ErrEngineClosed). It is SubmitAll
// of one request.
func (e *Engine) Submit(ctx context.Context, req *Request) (*Job, error) {
	jobs, err := e.SubmitAll(ctx, []*Request{req})
	if err != nil {
		return nil, err
	}
	return jobs[0], nil
}

// SubmitAll queues every request of reqs under one ctx, or none: it first
// checks them all (as Submit) and fails, queuing nothing, with the first
// error, wrapped with the request's index when there are several. The
// jobs are returned in the order of reqs and are admitted in that order.
// An empty reqs is an ErrInvalidRequest. When the backend is a SlotCopier,
// the requests (on the engine's own sessions, not paced, not embeddings)
// whose prompt is the first one's do not evaluate it again: once the first
// request has evaluated all but its last token, those positions are copied
// into their slots and each evaluates only the last token (which gives it
// its own logits). A request admitted after the first one has ended evaluates its
// prompt itself.
func (e *Engine) SubmitAll(ctx context.Context, reqs []*Request) ([]*Job, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%w: no request to submit", ErrInvalidRequest)
	}
	if err := e.m.Err(); err != nil {
		return nil, err
	}
	jobs := make([]*Job, len(reqs))
	now := time.Now()
	for i, req := range reqs {
		if req == nil {
			return nil, fmt.Errorf("%w: request %d is nil", ErrInvalidRequest, i)
		}
		j := &Job{e: e, submitted: now, paced: req.Paced, wake: make(chan struct{}, 1)}
		q, err := e.m.newSequence(ctx, req, (*jobSink)(j))
		if err != nil {
			if len(reqs) > 1 {
				err = fmt.Errorf("request %d: %w", i, err)
			}
			return nil, err
		}
		j.q = q
		if req.Paced {
			q.hold = &j.unread
		}
		jobs[i] = j
	}
	// Requests of the first one's prompt copy its evaluated prompt instead
	// of evaluating it again, where the backend copies slots. Embeddings
	// (which pool) take no part: a copy leaves only the last token's row
	// to evaluate, and mean or first-token pooling needs the others' too.
	if first := reqs[0]; first.Session == nil && !first.Paced && jobs[0].q.pool == nil && e.m.CanCopySlots() {
		for i, req := range reqs[1:] {
			if req.Session == nil && !req.Paced && jobs[i+1].q.pool == nil && slices.Equal(req.Prompt, first.Prompt) {
				jobs[i+1].q.leader = jobs[0].q
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrEngineClosed
	}
	for _, j := range jobs {
		// The loop may be asleep: wake it when the request is cancelled.
		j.unwatch = context.AfterFunc(ctx, func() { signal(e.wake) })
		e.inbox = append(e.inbox, j)
	}
	signal(e.wake)
	return jobs, nil
}

// Stats returns the requests running, those waiting for a session, and
// the tokens held in the cache of the engine's own sessions, as of the
// last step.
func (e *Engine) Stats() (active, queued, cached int) {
	return int(e.active.Load()), int(e.queued.Load()), int(e.cached.Load())
}

// Close ends every request with ErrEngineClosed, refuses new ones and
// waits for the engine's goroutine to return. Close is idempotent.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	signal(e.wake)
	<-e.stopped
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run is the engine's loop: take new jobs, end the cancelled, admit the
// waiting in order while sessions are free, run one step; sleep until
// something happens when an iteration changed nothing (no job, or every
// running job paced and unread).
func (e *Engine) run() {
	defer close(e.stopped)
	idle := true
	for {
		if idle {
			<-e.wake
		}
		e.mu.Lock()
		closed := e.closed
		e.waiting = append(e.waiting, e.inbox...)
		clear(e.inbox)
		e.inbox = e.inbox[:0]
		e.mu.Unlock()
		if closed {
			e.b.Abort(ErrEngineClosed)
			e.endWaiting(func(*Job) error { return ErrEngineClosed })
			e.gauges()
			return
		}
		before := [2]int{e.b.Active(), len(e.waiting)}
		e.endWaiting(func(j *Job) error {
			if err := j.q.ctx.Err(); err != nil {
				return err
			}
			return e.m.Err()
		})
		e.admit()
		var st StepStats
		if e.b.Active() > 0 {
			st, _ = e.b.Step() // a failed step has ended its requests
			if st.Tokens > 0 && e.obs != nil {
				e.obs.Stepped(st)
			}
		}
		e.gauges()
		idle = st.Tokens == 0 && before == [2]int{e.b.Active(), len(e.waiting)}
	}
}

// endWaiting ends the waiting jobs for which reason returns an error.
func (e *Engine) endWaiting(reason func(*Job) error) {
	kept := e.waiting[:0]
	for _, j := range e.waiting {
		if err := reason(j); err != nil {
			j.q.res.QueueTime = time.Since(j.submitted)
			(*jobSink)(j).Done(&j.q.res, err)
			continue
		}
		kept = append(kept, j)
	}
	clear(e.waiting[len(kept):])
	e.waiting = kept
}

// admit gives sessions to the waiting jobs, oldest first, while sessions
// are free. A job whose own session is busy keeps waiting without holding
// up the others.
func (e *Engine) admit() {
	kept := e.waiting[:0]
	for _, j := range e.waiting {
		if err := e.b.admit(j.q); err != nil {
			kept = append(kept, j)
			continue
		}
		queued := time.Since(j.submitted)
		j.q.res.QueueTime = queued
		if e.obs != nil {
			e.obs.Admitted(queued, j.q.res.CachedTokens)
		}
	}
	clear(e.waiting[len(kept):])
	e.waiting = kept
}

func (e *Engine) gauges() {
	e.active.Store(int64(e.b.Active()))
	e.queued.Store(int64(len(e.waiting)))
	e.cached.Store(int64(e.b.CachedTokens()))
}

// jobSink is the Sink through which the engine's loop fills a Job.
type jobSink Job

func (js *jobSink) Token(_ int32, text string, lp *TokenLogProbs) error {
	j := (*Job)(js)
	now := time.Now()
	if o := j.e.obs; o != nil {
		if j.last.IsZero() {
			o.Sampled(true, now.Sub(j.submitted))
		} else {
			o.Sampled(false, now.Sub(j.last))
		}
	}
	j.last = now
	if text == "" {
		if lp != nil {
			j.mu.Lock()
			j.probs = append(j.probs, *lp)
			j.mu.Unlock()
		}
		return nil
	}
	j.mu.Lock()
	p := Piece{Text: text}
	if lp != nil {
		p.LogProbs = append(j.probs, *lp)
		j.probs = nil
	}
	j.pieces = append(j.pieces, p)
	if j.paced {
		j.unread.Store(true)
	}
	j.mu.Unlock()
	signal(j.wake)
	return nil
}

func (js *jobSink) Done(res *Result, err error) {
	j := (*Job)(js)
	if j.unwatch != nil {
		j.unwatch()
	}
	if o := j.e.obs; o != nil {
		o.Ended(res, err)
	}
	j.mu.Lock()
	if len(j.probs) > 0 {
		// Tokens whose text never came (held back, then cut by a stop
		// string, or decoding to nothing).
		j.pieces = append(j.pieces, Piece{LogProbs: j.probs})
		j.probs = nil
	}
	j.done, j.res, j.err = true, res, err
	j.mu.Unlock()
	signal(j.wake)
}

// Piece is text a Job produced with the log-probabilities of the tokens
// sampled since the previous piece (when the request asked for them,
// GenerateOptions.LogProbs; else nil). The last piece of a job may have
// no text and only log-probabilities: those of tokens whose text was held
// back and then cut by a stop string, or that decode to nothing.
type Piece struct {
	Text     string
	LogProbs []TokenLogProbs
}

// Next waits until the job has new text or has ended, and returns the new
// pieces of text in order; done reports the end, with its result (never
// nil then) and error (see Sink.Done). It returns ctx's error when ctx is
// done first; the job itself goes on until its own context is done. For a
// paced job, calling Next again says the pieces returned before have been
// dealt with, and lets the job go on.
func (j *Job) Next(ctx context.Context) (pieces []string, done bool, res *Result, err error) {
	ps, done, res, err := j.NextPieces(ctx)
	for _, p := range ps {
		if p.Text != "" {
			pieces = append(pieces, p.Text)
		}
	}
	return pieces, done, res, err
}

// NextPieces is Next with each piece's log-probabilities (see Piece).
func (j *Job) NextPieces(ctx context.Context) (pieces []Piece, done bool, res *Result, err error) {
	if j.paced {
		j.mu.Lock()
		resume := j.unread.Load() && len(j.pieces) == 0
		if resume {
			j.unread.Store(false)
		}
		j.mu.Unlock()
		if resume {
			signal(j.e.wake)
		}
	}
	for {
		j.mu.Lock()
		if len(j.pieces) > 0 || j.done {
			pieces, j.pieces = j.pieces, nil
			done, res, err = j.done, j.res, j.err
			j.mu.Unlock()
			return pieces, done, res, err
		}
		j.mu.Unlock()
		select {
		case <-j.wake:
		case <-ctx.Done():
			return nil, false, nil, ctx.Err()
		}
	}
}

// Wait reads the job to its end and returns all its text with its result
// and error (see Next). It returns ctx's error, and the text so far, when
// ctx is done first.
func (j *Job) Wait(ctx context.Context) (string, *Result, error) {
	var text strings.Builder
	for {
		pieces, done, res, err := j.Next(ctx)
		for _, p := range pieces {
			text.WriteString(p)
		}
		if done || err != nil {
			return text.String(), res, err
		}
	}
}
