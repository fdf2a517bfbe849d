package model

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Request is one generation: a prompt to continue and how to sample the
// tokens after it.
type Request struct {
	Prompt  []int32
	Options GenerateOptions
	// Session, when not nil, is the sequence to continue: its KV-cache
	// slot and the tokens cached there, reused where they match Prompt.
	// The caller must not use the session until the request has ended.
	// When nil, the request runs on one of the Batcher's own sessions
	// (BatcherOptions.Sessions).
	Session *Session
	// Embed, when not nil, makes the request an embedding: the prompt is
	// evaluated (all of it: a cached prefix is reused only for last-token
	// pooling), the hidden states of its rows after the final norm are
	// pooled and L2-normalized into Result.Embedding, and the request ends
	// with its prompt, sampling nothing (Options are not used; Sink.Token
	// is never called). The prompt may fill the whole context.
	Embed *EmbedOptions
	// Paced, for a request submitted to an Engine, keeps the request out
	// of the steps while text it produced has not been dealt with: its
	// next token is computed only once Job.Next has been called again
	// after returning the text. A reader that stops after some piece of
	// text (a C callback) then stops the generation right there, and a
	// reader slower than the model holds back only its own request.
	Paced bool
}

// Sink receives what a request produces. Batcher.Step calls it on the
// goroutine that runs the step; it must not block.
type Sink interface {
	// Token is called for every sampled token with the text that became
	// final with it, often "" (inside a UTF-8 sequence, or text that may
	// start a stop string), and its log-probabilities when the request
	// asked for them (GenerateOptions.LogProbs) and the token counts as
	// generated (lp is nil for an end-of-generation token). An error ends
	// the request with that error.
	Token(id int32, text string, lp *TokenLogProbs) error
	// Done is called once, when the request ends: err is nil when it
	// finished (res.Finish says why), else what ended it (its context's
	// error, a failed forward pass, Token's error). res is never nil.
	Done(res *Result, err error)
}

// Errors of admission.
var (
	// ErrNoFreeSession: every session of the Batcher serves a request.
	ErrNoFreeSession = errors.New("model: no free session")
	// ErrSessionBusy: the request's session already serves a request.
	ErrSessionBusy = errors.New("model: the session is in use by another request")
	// ErrInvalidToken: a prompt token is outside the vocabulary.
	ErrInvalidToken = errors.New("token id outside the vocabulary")
	// ErrInvalidRequest: a request that cannot run (an empty prompt, a
	// session of another model).
	ErrInvalidRequest = errors.New("invalid request")
)

// BatcherOptions configures a Batcher.
type BatcherOptions struct {
	// Sessions are the sequences requests without a Session run on, one
	// request per session at a time. A request takes the free session
	// whose cached tokens share the longest prefix with its prompt (the
	// least recently used among equals), so that a returning conversation
	// finds its cache.
	Sessions []*Session
	// PrefillChunk is the most prompt tokens one step evaluates, over all
	// requests still in their prompt (the oldest first), so that a long
	// prompt delays the others' next token by at most one chunk. 0 means
	// the model's BatchSize.
	PrefillChunk int
	// OnBatch, when set, sees every batch before it runs (for tests).
	OnBatch func(*Batch)
}

// Batcher advances many requests with one forward pass per step
// (continuous batching): every step holds the next token of each request
// that is generating, then prompt tokens of the requests still in their
// prompt, and feeds each request's logits (or, when every sampler of the
// step can do with them, its top candidates) to its Generation. Requests
// join and leave between steps. Session.Generate is its one-request case;
// Engine runs one on a goroutine of its own for servers and the C API.
//
// A Batcher is used by one goroutine at a time.
type Batcher struct {
	m     *Model
	opts  BatcherOptions
	pool  []*pooled
	seqs  []*sequence // running, in admission order
	clock uint64      // counts releases, for least-recently-used order

	// Step scratch.
	batch   Batch
	decode  int     // rows of the batch that are generated tokens (the first ones)
	outRows []int32 // rows whose logits are wanted
	outSeqs []*sequence
	hidRows []int32   // rows whose hidden states an embedding pools
	hidden  []float32 // one Dim row per output row
	logits  []float32 // one vocabulary row per output row
	ids     []int32   // k candidates per output row
	vals    []float32
}

// pooled is one of the Batcher's own sessions.
type pooled struct {
	s    *Session
	used uint64 // when it was last released (least recently used first)
}

// sequence is a request inside a Batcher.
type sequence struct {
	ctx  context.Context
	req  *Request
	s    *Session
	own  *pooled     // the pooled session it runs on, or nil
	gen  *Generation // nil for an embedding
	pool *pooler     // an embedding's, else nil
	sink Sink
	res  Result
	// hold, when set, keeps the sequence out of the steps while true
	// (Request.Paced); it is read on every step, without a lock.
	hold *atomic.Bool
	// leader, when set, is the request of the same prompt whose evaluated
	// prompt this one waits to copy into its own slot (share); until then
	// it takes no part in the steps.
	leader *sequence

	todo     []int32 // prompt tokens not evaluated yet
	decoding bool    // the prompt is done; next is the token to evaluate
	next     int32
	rows     int // rows of the sequence in the current batch
	hidAt    int // an embedding's first hidden row in the step's hidRows
	hidN     int // and how many it has
	admitted time.Time
	first    time.Time // when the first token was sampled
}

// NewBatcher returns a Batcher over m with no requests.
func NewBatcher(m *Model, opts BatcherOptions) *Batcher {
	if opts.PrefillChunk <= 0 || opts.PrefillChunk > m.batchSize {
		opts.PrefillChunk = m.batchSize
	}
	b := &Batcher{m: m, opts: opts}
	for _, s := range opts.Sessions {
		b.pool = append(b.pool, &pooled{s: s})
	}
	return b
}

// Active returns the number of requests running.
func (b *Batcher) Active() int { return len(b.seqs) }

// CachedTokens returns the tokens held in the KV cache by the Batcher's own
// sessions.
func (b *Batcher) CachedTokens() int {
	n := 0
	for _, p := range b.pool {
		n += p.s.Len()
	}
	return n
}

// Start admits req: it takes its session (req.Session, or the best free
// one of the Batcher's own), keeps the cached tokens that match the
// prompt, and runs from the next Step on, until sink.Done. ctx is checked
// before every step; when it is done the request ends with its error.
//
// Start fails, and sink is never called, when the request is invalid (an
// empty prompt, one that leaves no room to generate: ErrContextFull, a
// token outside the vocabulary: ErrInvalidToken, sampling parameters:
// *sample.ParamError), when req.Session serves another request
// (ErrSessionBusy), or when no session of the Batcher's own is free
// (ErrNoFreeSession).
func (b *Batcher) Start(ctx context.Context, req *Request, sink Sink) error {
	q, err := b.m.newSequence(ctx, req, sink)
	if err != nil {
		return err
	}
	return b.admit(q)
}

// newSequence checks req and prepares its generation without taking a
// session. It only reads the model's immutable parts, so any goroutine may
// call it.
func (m *Model) newSequence(ctx context.Context, req *Request, sink Sink) (*sequence, error) {
	p := req.Prompt
	switch {
	case len(p) == 0:
		return nil, fmt.Errorf("%w: empty prompt", ErrInvalidRequest)
	case req.Embed != nil && len(p) > m.ctxSize:
		return nil, fmt.Errorf("%w: the input has %d tokens and the context holds %d positions", ErrContextFull, len(p), m.ctxSize)
	case req.Embed == nil && len(p) >= m.ctxSize:
		return nil, fmt.Errorf("%w: the prompt has %d tokens and the context holds %d positions; it must leave room for at least one generated token",
			ErrContextFull, len(p), m.ctxSize)
	}
	for i, id := range p {
		if id < 0 || int(id) >= m.Config.VocabSize {
			return nil, fmt.Errorf("%w: prompt token %d is %d (vocabulary of %d)", ErrInvalidToken, i, id, m.Config.VocabSize)
		}
	}
	if req.Session != nil && req.Session.m != m {
		return nil, fmt.Errorf("%w: the session belongs to another model", ErrInvalidRequest)
	}
	if req.Embed != nil {
		pool, err := m.Config.EmbedPooling(req.Embed.Pooling)
		if err != nil {
			return nil, err
		}
		return &sequence{ctx: ctx, req: req, pool: newPooler(pool, m.Config.Dim, len(p)), sink: sink, res: Result{PromptTokens: len(p)}}, nil
	}
	gen, err := m.NewGeneration(p, req.Options)
	if err != nil {
		return nil, err
	}
	return &sequence{ctx: ctx, req: req, gen: gen, sink: sink, res: Result{PromptTokens: len(p)}}, nil
}

// admit gives q its session and makes it run, or fails with
// ErrSessionBusy or ErrNoFreeSession.
func (b *Batcher) admit(q *sequence) error {
	if s := q.req.Session; s != nil {
		if s.busy {
			return ErrSessionBusy
		}
		q.s = s
	} else {
		q.own = b.pickSession(q.prefix())
		if q.own == nil {
			return ErrNoFreeSession
		}
		q.s = q.own.s
	}
	q.s.busy = true
	keep := q.s.reuse(q.prefix())
	q.todo = q.req.Prompt[keep:]
	q.res.CachedTokens = keep
	q.admitted = time.Now()
	b.seqs = append(b.seqs, q)
	if q.leader != nil {
		b.share(q)
	}
	return nil
}

// prefix is the part of q's prompt a cached prefix may stand for: all
// of it, but for an embedding that pools every row or the first (whose
// hidden states the cache does not hold), none.
func (q *sequence) prefix() []int32 {
	if q.pool != nil && q.pool.p != PoolingLast {
		return nil
	}
	return q.req.Prompt
}

// share ends q's wait for its leader (sequence.leader): once the leader's
// slot holds all but the last token of the prompt, it copies those
// positions into q's slot (Model.CopySlot), so that q evaluates only the
// last prompt token (for its own logits); it ends the wait without a copy
// when q's own cache already holds them, when the leader has ended or has
// no session, or when the copy fails, and q then evaluates its prompt
// itself. Otherwise q keeps waiting.
func (b *Batcher) share(q *sequence) {
	l, need := q.leader, len(q.req.Prompt)-1
	switch {
	case len(q.todo) <= 1:
		q.leader = nil
		return
	case l.sink == nil || l.s == nil:
		q.leader = nil
		return
	case commonPrefix(l.s.tokens, q.req.Prompt) < need:
		return // the leader is still in its prompt
	}
	q.leader = nil
	if err := b.m.CopySlot(int(q.s.slot), int(l.s.slot), need); err != nil {
		// Some positions may have been overwritten: start over.
		q.s.Reset()
		q.todo = q.req.Prompt
		q.res.CachedTokens = 0
		return
	}
	q.s.tokens = append(q.s.tokens[:0], q.req.Prompt[:need]...)
	q.todo = q.req.Prompt[need:]
}

// pickSession returns the free session of the pool whose cache shares the
// longest prefix with prompt (the least recently used among equals), or
// nil.
func (b *Batcher) pickSession(prompt []int32) *pooled {
	var best *pooled
	bestLen := -1
	for _, p := range b.pool {
		if p.s.busy {
			continue
		}
		n := commonPrefix(p.s.tokens, prompt)
		if n > bestLen || n == bestLen && p.used < best.used {
			best, bestLen = p, n
		}
	}
	return best
}

// Step ends the requests whose context is done, then runs one forward pass
// over the next tokens of every other running request and advances each:
// sampling, stop strings, the end of generation. It returns what the pass
// evaluated (nothing when no request runs). When the pass fails,
// every request in it ends with the error (its session forgets its cached
// tokens, which may be half written) and Step returns the error as well;
// when the backend is unusable from then on the error matches
// ErrBackendFailed. A panic in the backend is such an error, not a crash.
func (b *Batcher) Step() (StepStats, error) {
	for _, q := range b.seqs {
		if err := q.ctx.Err(); err != nil {
			b.end(q, err)
		}
	}
	b.compact()
	b.shareAll()
	n := b.buildBatch()
	if n == 0 {
		return StepStats{}, nil
	}
	st := StepStats{Tokens: n, Prompt: n - b.decode}
	if b.opts.OnBatch != nil {
		b.opts.OnBatch(&b.batch)
	}
	k := b.candidates()
	if err := b.forward(k); err != nil {
		for _, q := range b.seqs {
			if q.rows > 0 {
				q.s.Reset()
				b.end(q, err)
			}
		}
		b.compact()
		return st, err
	}
	dim := b.m.Config.Dim
	for _, q := range b.seqs {
		switch {
		case q.rows == 0:
		case q.decoding:
			q.s.tokens = append(q.s.tokens, q.next)
		default:
			q.s.tokens = append(q.s.tokens, q.todo[:q.rows]...)
			q.todo = q.todo[q.rows:]
		}
		if q.pool != nil && q.rows > 0 {
			// A chunk may hold none of the pooled rows (all but the last
			// chunk of a last-token embedding): then the step may have read
			// no hidden states at all.
			if q.hidN > 0 {
				at := len(b.outRows) + q.hidAt
				q.pool.add(b.hidden[at*dim : (at+q.hidN)*dim])
			}
			if len(q.todo) == 0 {
				q.res.Embedding = q.pool.vector()
				b.end(q, nil)
			}
		}
	}
	// A leader that has just evaluated its prompt still runs: its slot
	// holds the prompt until its end frees it.
	b.shareAll()
	vocab := b.m.Config.VocabSize
	for j, q := range b.outSeqs {
		room := q.s.Len() < b.m.ctxSize
		var (
			id   int32
			text string
			done bool
		)
		if k > 0 {
			c := q.gen.CandidateCount()
			id, text, done = q.gen.StepCandidates(b.ids[j*k:j*k+c], b.vals[j*k:j*k+c], room)
		} else {
			id, text, done = q.gen.Step(b.logits[j*vocab:(j+1)*vocab], room)
		}
		if q.first.IsZero() {
			q.first = time.Now()
		}
		err := q.gen.Err()
		if err == nil {
			err = q.sink.Token(id, text, q.gen.Last())
		} else {
			err = fmt.Errorf("%w (position %d of the sequence)", err, q.s.Len()-1)
		}
		switch {
		case err != nil:
			b.end(q, err)
		case done:
			b.end(q, nil)
		default:
			q.next, q.decoding = id, true
		}
	}
	b.compact()
	return st, nil
}

// StepStats describes one step's forward pass.
type StepStats struct {
	Tokens int // tokens evaluated
	Prompt int // of which prompt tokens (the rest are generated tokens fed back)
}

// buildBatch fills the batch: one row per generating request, then up to
// PrefillChunk prompt tokens of the requests in their prompt, oldest
// first, within the model's BatchSize. It records which rows need logits
// and returns the batch length.
func (b *Batcher) buildBatch() int {
	bt := &b.batch
	bt.Tokens, bt.Pos, bt.Slot = bt.Tokens[:0], bt.Pos[:0], bt.Slot[:0]
	b.outRows, b.outSeqs, b.hidRows = b.outRows[:0], b.outSeqs[:0], b.hidRows[:0]
	add := func(tok int32, pos int, q *sequence) {
		bt.Tokens = append(bt.Tokens, tok)
		bt.Pos = append(bt.Pos, int32(pos))
		bt.Slot = append(bt.Slot, q.s.slot)
	}
	output := func(q *sequence) {
		b.outRows = append(b.outRows, int32(bt.Len()-1))
		b.outSeqs = append(b.outSeqs, q)
	}
	for _, q := range b.seqs {
		q.rows = 0
		if q.decoding && !q.held() {
			add(q.next, q.s.Len(), q)
			q.rows = 1
			output(q)
		}
	}
	b.decode = bt.Len()
	budget := min(b.opts.PrefillChunk, b.m.batchSize-bt.Len())
	// b.seqs is in admission order: the oldest prompt goes first.
	for _, q := range b.seqs {
		if q.decoding || q.held() || q.leader != nil || budget <= 0 {
			continue
		}
		n := min(len(q.todo), budget)
		first := bt.Len()
		for i, tok := range q.todo[:n] {
			add(tok, q.s.Len()+i, q)
		}
		q.rows = n
		budget -= n
		switch {
		case q.pool != nil:
			lo, hi := q.pool.wants(len(q.req.Prompt)-len(q.todo), n)
			q.hidAt, q.hidN = len(b.hidRows), hi-lo
			for r := lo; r < hi; r++ {
				b.hidRows = append(b.hidRows, int32(first+r))
			}
		case n == len(q.todo):
			output(q)
		}
	}
	return bt.Len()
}

// candidates returns how many of the highest logits per output row are
// enough for every request of the step to sample exactly as from the
// whole vocabulary, or 0 when one needs all of them (or no row is
// wanted). With k > 0 only k candidates per row leave the backend.
func (b *Batcher) candidates() int {
	if len(b.outRows) == 0 {
		return 0
	}
	k := 0
	for _, q := range b.outSeqs {
		c := q.gen.CandidateCount()
		if c <= 0 || c > MaxTopK || c >= b.m.Config.VocabSize {
			return 0
		}
		k = max(k, c)
	}
	return k
}

// forward runs the batch, reading the top k logits of each output row
// (k > 0) or all of them, and turns a panic in the backend into an error.
func (b *Batcher) forward(k int) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in the forward pass: %v", p)
		}
		if err != nil {
			err = b.m.failure(err)
		}
	}()
	rows := len(b.outRows)
	all := append(b.outRows, b.hidRows...)
	b.outRows = all[:rows] // keeps the grown array
	if k > 0 {
		if n := rows * k; cap(b.ids) < n {
			b.ids, b.vals = make([]int32, n), make([]float32, n)
		}
	} else if n := rows * b.m.Config.VocabSize; cap(b.logits) < n {
		b.logits = make([]float32, n)
	}
	if len(b.hidRows) > 0 {
		if n := len(all) * b.m.Config.Dim; cap(b.hidden) < n {
			b.hidden = make([]float32, n)
		}
	}
	return b.m.forwardMixed(&b.batch, all, rows, k, b.logits[:cap(b.logits)], b.ids[:cap(b.ids)], b.vals[:cap(b.vals)], b.hidden[:cap(b.hidden)])
}

// end finishes q with err (nil: it finished normally), frees its session
// and tells its sink. compact removes it from the running list.
func (b *Batcher) end(q *sequence, err error) {
	if q.sink == nil {
		return // already ended
	}
	now := time.Now()
	if q.gen != nil {
		q.res.Tokens, q.res.LogProbs, q.res.Finish = q.gen.Tokens, q.gen.LogProbs, q.gen.Finish
	}
	if q.first.IsZero() {
		q.res.PromptTime = now.Sub(q.admitted)
	} else {
		q.res.PromptTime, q.res.GenTime = q.first.Sub(q.admitted), now.Sub(q.first)
	}
	q.s.busy = false
	if q.own != nil {
		b.clock++
		q.own.used = b.clock
	}
	sink := q.sink
	q.sink = nil
	sink.Done(&q.res, err)
}

// shareAll lets the requests waiting for their leader's prompt take it
// (share).
func (b *Batcher) shareAll() {
	for _, q := range b.seqs {
		if q.leader != nil {
			b.share(q)
		}
	}
}

// held reports whether q is held out of the step (a paced Job whose text
// has not been read).
func (q *sequence) held() bool { return q.hold != nil && q.hold.Load() }

// compact drops the ended requests from the running list, keeping the
// admission order.
func (b *Batcher) compact() {
	b.seqs = slices.DeleteFunc(b.seqs, func(q *sequence) bool { return q.sink == nil })
}

// Abort ends every running request with err.
func (b *Batcher) Abort(err error) {
	for _, q := range b.seqs {
		b.end(q, err)
	}
	b.compact()
}
