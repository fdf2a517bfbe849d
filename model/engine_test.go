package model_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepLog records the batches an engine runs.
type stepLog struct {
	mu    sync.Mutex
	steps []loggedStep
}

type loggedStep struct {
	at        time.Time
	slot, pos []int32
}

func (l *stepLog) record(b *model.Batch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.steps = append(l.steps, loggedStep{at: time.Now(), slot: append([]int32(nil), b.Slot...), pos: append([]int32(nil), b.Pos...)})
}

func (l *stepLog) get() []loggedStep {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedStep(nil), l.steps...)
}

// failing is the CPU backend whose steps fail while fail is set; with
// sticky set, a failure also makes it unusable (Err), as a device fault
// does.
type failing struct {
	*cpu.Backend
	fail, sticky atomic.Bool
	err          atomic.Value
}

var errInjected = errors.New("injected failure")

func (f *failing) check() error {
	if !f.fail.Load() {
		return nil
	}
	if f.sticky.Load() {
		f.err.Store(errInjected)
	}
	return errInjected
}

func (f *failing) Read(dst []float32, src model.Buf, n int) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Backend.Read(dst, src, n)
}

func (f *failing) ReadTopK(ids []int32, vals []float32, src model.Buf, n, k int) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Backend.ReadTopK(ids, vals, src, n, k)
}

func (f *failing) Err() error {
	if err, ok := f.err.Load().(error); ok {
		return err
	}
	return nil
}

// newEngine loads the bundled model with slots sessions of ctx positions
// and starts an engine over all of them.
func newEngine(t *testing.T, slots, ctx, chunk int) (*model.Engine, *model.Model, *stepLog, *failing) {
	t.Helper()
	be := &failing{Backend: cpu.New(cpu.Options{Threads: 2})}
	m, err := model.Load(fixture.BundledModel(t), be, model.Options{Slots: slots, CtxSize: ctx})
	require.NoError(t, err)
	log := &stepLog{}
	opts := model.EngineOptions{BatcherOptions: model.BatcherOptions{PrefillChunk: chunk, OnBatch: log.record}}
	for i := range slots {
		s, err := m.NewSession(i)
		require.NoError(t, err)
		opts.Sessions = append(opts.Sessions, s)
	}
	e := model.NewEngine(m, opts)
	t.Cleanup(func() {
		e.Close()
		m.Close()
	})
	return e, m, log, be
}

func greedyRequest(m *model.Model, prompt string, n int) *model.Request {
	return &model.Request{Prompt: m.Tokenizer.Encode(prompt, true, true),
		Options: model.GenerateOptions{MaxTokens: n, Sampling: model.Greedy(), IgnoreEOS: true}}
}

func submit(t *testing.T, ctx context.Context, e *model.Engine, req *model.Request) *model.Job {
	t.Helper()
	j, err := e.Submit(ctx, req)
	require.NoError(t, err)
	return j
}

// wait reads j to its end and returns its text and result.
func wait(t *testing.T, j *model.Job) (string, *model.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	text, res, err := j.Wait(ctx)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "the job did not end in time")
	return text, res, err
}

// firstPiece waits until j has produced text.
func firstPiece(t *testing.T, j *model.Job) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		pieces, done, _, err := j.Next(ctx)
		require.NoError(t, err)
		require.False(t, done && len(pieces) == 0, "ended before any text")
		if len(pieces) > 0 {
			return
		}
	}
}

func TestChunkedPrefillDoesNotStallDecoding(t *testing.T) {
	const chunk = 16
	e, m, log, _ := newEngine(t, 2, 512, chunk)
	ctx := context.Background()
	a := submit(t, ctx, e, greedyRequest(m, "Once upon a time", 400))
	firstPiece(t, a)
	aSlot := log.get()[0].slot[0]

	long := m.Tokenizer.Encode(strings.Repeat("The little dog ran to the park and played with a ball. ", 12), true, true)
	require.Greater(t, len(long), 5*chunk)
	require.Less(t, len(long), 400)
	b := submit(t, ctx, e, &model.Request{Prompt: long, Options: model.GenerateOptions{MaxTokens: 4, Sampling: model.Greedy(), IgnoreEOS: true}})
	_, resB, err := wait(t, b)
	require.NoError(t, err)
	_, resA, err := wait(t, a)
	require.NoError(t, err)
	assert.Len(t, resA.Tokens, 400)
	assert.Len(t, resB.Tokens, 4)
	assert.Equal(t, model.FinishLength, resA.Finish)

	// Every step holds at most chunk prompt tokens; while B's prompt is
	// evaluated, A gets its next token in every step.
	bSlot := 1 - aSlot
	steps := log.get()
	maxA := int32(-1) // A's last position: A is active until a step holds it
	for _, st := range steps {
		for j, q := range st.slot {
			if q == aSlot {
				maxA = max(maxA, st.pos[j])
			}
		}
	}
	prefillSteps, overlapped := 0, 0
	lastA := int32(-1)
	for i, st := range steps {
		aActive := lastA < maxA
		bPrefill, aRows := 0, 0
		for j, q := range st.slot {
			switch {
			case q == bSlot && int(st.pos[j]) < len(long):
				bPrefill++
			case q == aSlot:
				aRows++
				if lastA >= 0 {
					assert.Equal(t, lastA+1, st.pos[j], "step %d: A advances by one token per step", i)
				}
				lastA = st.pos[j]
			}
		}
		assert.LessOrEqual(t, bPrefill, chunk, "step %d", i)
		if bPrefill > 0 {
			prefillSteps++
			if aActive {
				overlapped++
				assert.Equal(t, 1, aRows, "step %d: A decodes while B is in prefill", i)
			}
		}
	}
	assert.Equal(t, (len(long)+chunk-1)/chunk, prefillSteps, "B's prompt in chunks of %d", chunk)
	assert.Positive(t, overlapped, "B's prefill ran while A was decoding")
}

func TestBatchedDecodeMatchesAlone(t *testing.T) {
	// Greedy decoding of several requests in one batch gives each the text
	// it gets alone, up to float rounding: compare a short greedy run.
	e, m, log, _ := newEngine(t, 4, 256, 64)
	ctx := context.Background()
	prompts := []string{"Once upon a time", "Lily went to the park", "The cat", "Tom had a big red ball"}
	alone := make([]string, len(prompts))
	for i, p := range prompts {
		text, _, err := wait(t, submit(t, ctx, e, greedyRequest(m, p, 24)))
		require.NoError(t, err)
		alone[i] = text
	}
	before := len(log.get())
	jobs := make([]*model.Job, len(prompts))
	for i, p := range prompts {
		jobs[i] = submit(t, ctx, e, greedyRequest(m, p, 24))
	}
	for i, j := range jobs {
		text, res, err := wait(t, j)
		require.NoError(t, err)
		assert.Equal(t, alone[i], text, "prompt %q", prompts[i])
		assert.Len(t, res.Tokens, 24)
	}
	widest := 0
	for _, st := range log.get()[before:] {
		widest = max(widest, len(st.slot))
	}
	assert.GreaterOrEqual(t, widest, 2, "the requests shared steps")

	// Next to a sampler that needs the whole vocabulary (top-k off), the
	// step reads full logits rows; greedy text stays the same.
	full := greedyRequest(m, prompts[1], 24)
	full.Options.Sampling.Temperature, full.Options.Sampling.TopK, full.Options.Sampling.Seed = 1, 0, 7
	fj := submit(t, ctx, e, full)
	text, _, err := wait(t, submit(t, ctx, e, greedyRequest(m, prompts[0], 24)))
	require.NoError(t, err)
	assert.Equal(t, alone[0], text)
	_, res, err := wait(t, fj)
	require.NoError(t, err)
	assert.Len(t, res.Tokens, 24)
}

func TestPrefixReuse(t *testing.T) {
	e, m, _, _ := newEngine(t, 2, 256, 64)
	ctx := context.Background()
	r1, r2 := greedyRequest(m, "Lily went to the park", 8), greedyRequest(m, "Once upon a time there was a dog", 8)
	j1, j2 := submit(t, ctx, e, r1), submit(t, ctx, e, r2)
	_, _, err := wait(t, j1)
	require.NoError(t, err)
	_, _, err = wait(t, j2)
	require.NoError(t, err)

	// A prompt that extends r2's takes r2's session and evaluates only the
	// rest.
	more := *r2
	more.Prompt = append(append([]int32(nil), r2.Prompt...), m.Tokenizer.Encode(" The end.", false, true)...)
	_, res, err := wait(t, submit(t, ctx, e, &more))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, res.CachedTokens, len(r2.Prompt))
	assert.Less(t, res.CachedTokens, len(more.Prompt))

	// The same prompt again reuses all but its last token.
	_, res, err = wait(t, submit(t, ctx, e, greedyRequest(m, "Lily went to the park", 4)))
	require.NoError(t, err)
	assert.Equal(t, len(r1.Prompt)-1, res.CachedTokens)
}

func TestCancelledRequestLeavesWithinOneStep(t *testing.T) {
	e, m, log, _ := newEngine(t, 1, 512, 64)
	ctx, cancel := context.WithCancel(context.Background())
	j := submit(t, ctx, e, greedyRequest(m, "Once upon a time", 400))
	firstPiece(t, j)
	cancel()
	at := time.Now()
	_, res, err := wait(t, j)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotEmpty(t, res.Tokens, "the partial result")
	later := 0
	for _, st := range log.get() {
		if st.at.After(at) {
			later++
		}
	}
	assert.LessOrEqual(t, later, 1, "at most the step already under way runs after the cancel")
	// The session is free for the next request.
	_, res, err = wait(t, submit(t, context.Background(), e, greedyRequest(m, "Once upon a time", 3)))
	require.NoError(t, err)
	assert.Len(t, res.Tokens, 3)
}

// TestRequestsWithTheirOwnSessions: requests that bring their sessions (as
// the C API's do) share steps, and each continues its own session.
func TestRequestsWithTheirOwnSessions(t *testing.T) {
	m, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{Threads: 2}), model.Options{Slots: 3, CtxSize: 256})
	require.NoError(t, err)
	defer m.Close()
	log := &stepLog{}
	e := model.NewEngine(m, model.EngineOptions{BatcherOptions: model.BatcherOptions{OnBatch: log.record}})
	defer e.Close()

	const n = 64
	prompts := []string{"Once upon a time", "Lily went to the park"}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		s, err := m.NewSession(2)
		require.NoError(t, err)
		want[i], _ = generate(t, s, m.Tokenizer.Encode(p, true, true), model.GenerateOptions{MaxTokens: n, Sampling: model.Greedy(), IgnoreEOS: true})
	}
	sessions := make([]*model.Session, len(prompts))
	jobs := make([]*model.Job, len(prompts))
	for i, p := range prompts {
		sessions[i], err = m.NewSession(i)
		require.NoError(t, err)
		req := greedyRequest(m, p, n)
		req.Session = sessions[i]
		jobs[i] = submit(t, context.Background(), e, req)
	}
	for i, j := range jobs {
		text, res, err := wait(t, j)
		require.NoError(t, err)
		assert.Equal(t, want[i], text)
		assert.Len(t, res.Tokens, n)
		assert.Equal(t, len(m.Tokenizer.Encode(prompts[i], true, true))+n-1, sessions[i].Len(),
			"the session holds the prompt and every generated token but the last")
	}
	shared := false
	for _, st := range log.get() {
		if len(st.slot) == 2 && st.slot[0] != st.slot[1] {
			shared = true
		}
	}
	assert.True(t, shared, "one step held both sessions' tokens")
}

// discard is a Sink that keeps the result.
type discard struct {
	res *model.Result
	err error
}

func (d *discard) Token(int32, string, *model.TokenLogProbs) error { return nil }
func (d *discard) Done(res *model.Result, err error)               { d.res, d.err = res, err }

func TestSessionServesOneRequestAtATime(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 64})
	s, err := m.NewSession(0)
	require.NoError(t, err)
	b := model.NewBatcher(m, model.BatcherOptions{})
	ctx := context.Background()
	first := &discard{}
	require.NoError(t, b.Start(ctx, &model.Request{Prompt: []int32{1, 400}, Options: model.GenerateOptions{MaxTokens: 4, Sampling: model.Greedy()}, Session: s}, first))
	assert.ErrorIs(t, b.Start(ctx, &model.Request{Prompt: []int32{1}, Options: model.GenerateOptions{Sampling: model.Greedy()}, Session: s}, &discard{}), model.ErrSessionBusy)
	_, err = s.Eval(ctx, []int32{1})
	assert.ErrorIs(t, err, model.ErrSessionBusy)
	assert.ErrorIs(t, model.NewBatcher(m, model.BatcherOptions{}).Start(ctx, &model.Request{Prompt: []int32{1}, Options: model.GenerateOptions{Sampling: model.Greedy()}}, &discard{}),
		model.ErrNoFreeSession, "a request without a session needs the Batcher's own")
	for b.Active() > 0 {
		_, err := b.Step()
		require.NoError(t, err)
	}
	require.NoError(t, first.err)
	assert.Len(t, first.res.Tokens, 4)
	_, err = s.Eval(ctx, []int32{1})
	assert.NoError(t, err, "free again")
}

func TestEngineRejectsBadRequests(t *testing.T) {
	e, m, _, _ := newEngine(t, 1, 32, 64)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		req  *model.Request
		is   error
	}{
		{"empty prompt", &model.Request{Options: model.GenerateOptions{Sampling: model.Greedy()}}, nil},
		{"prompt fills the context", &model.Request{Prompt: make([]int32, 32), Options: model.GenerateOptions{Sampling: model.Greedy()}}, model.ErrContextFull},
		{"token outside the vocabulary", &model.Request{Prompt: []int32{1, int32(m.Config.VocabSize)}, Options: model.GenerateOptions{Sampling: model.Greedy()}}, model.ErrInvalidToken},
		{"negative token", &model.Request{Prompt: []int32{-1}, Options: model.GenerateOptions{Sampling: model.Greedy()}}, model.ErrInvalidToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Submit(ctx, c.req)
			require.Error(t, err)
			if c.is != nil {
				assert.ErrorIs(t, err, c.is)
			}
		})
	}
	_, err := e.Submit(ctx, &model.Request{Prompt: []int32{1}, Options: model.GenerateOptions{}})
	assert.Error(t, err, "the zero sampling parameters are invalid")
}

func TestEngineFailures(t *testing.T) {
	e, m, _, be := newEngine(t, 2, 256, 64)
	ctx := context.Background()

	// A step that fails ends the requests in it; the engine goes on.
	be.fail.Store(true)
	_, res, err := wait(t, submit(t, ctx, e, greedyRequest(m, "Once upon a time", 8)))
	require.ErrorIs(t, err, errInjected)
	assert.NotErrorIs(t, err, model.ErrBackendFailed)
	assert.NotNil(t, res)
	be.fail.Store(false)
	text, _, err := wait(t, submit(t, ctx, e, greedyRequest(m, "Once upon a time", 8)))
	require.NoError(t, err)
	assert.NotEmpty(t, text)

	// A failure that makes the backend unusable is ErrBackendFailed, and
	// later requests fail at once.
	be.fail.Store(true)
	be.sticky.Store(true)
	_, _, err = wait(t, submit(t, ctx, e, greedyRequest(m, "Once upon a time", 8)))
	require.ErrorIs(t, err, model.ErrBackendFailed)
	require.ErrorIs(t, err, errInjected)
	require.ErrorIs(t, m.Err(), model.ErrBackendFailed)
	_, err = e.Submit(ctx, greedyRequest(m, "Once", 2))
	assert.ErrorIs(t, err, model.ErrBackendFailed)
}

func TestEngineClose(t *testing.T) {
	e, m, _, _ := newEngine(t, 1, 512, 64)
	ctx := context.Background()
	a := submit(t, ctx, e, greedyRequest(m, "Once upon a time", 500))
	b := submit(t, ctx, e, greedyRequest(m, "Lily", 2)) // waits for a's session
	firstPiece(t, a)
	e.Close()
	_, _, errA := wait(t, a)
	_, resB, errB := wait(t, b)
	assert.ErrorIs(t, errA, model.ErrEngineClosed)
	assert.ErrorIs(t, errB, model.ErrEngineClosed)
	assert.Equal(t, 0, len(resB.Tokens))
	_, err := e.Submit(ctx, greedyRequest(m, "Lily", 2))
	assert.ErrorIs(t, err, model.ErrEngineClosed)
	e.Close() // idempotent
	active, queued, _ := e.Stats()
	assert.Zero(t, active)
	assert.Zero(t, queued)
}

// SubmitAll queues all of its requests or none of them.
func TestSubmitAll(t *testing.T) {
	e, m, log, _ := newEngine(t, 3, 256, 64)
	ctx := context.Background()
	prompts := []string{"Once upon a time", "Lily went to the park", "The cat"}

	// One bad request: nothing is queued.
	bad := greedyRequest(m, prompts[1], 4)
	bad.Prompt = append(slices.Clone(bad.Prompt), int32(m.Config.VocabSize))
	_, err := e.SubmitAll(ctx, []*model.Request{greedyRequest(m, prompts[0], 4), bad, greedyRequest(m, prompts[2], 4)})
	require.ErrorIs(t, err, model.ErrInvalidToken)
	assert.Contains(t, err.Error(), "request 1")
	_, err = e.SubmitAll(ctx, nil)
	require.ErrorIs(t, err, model.ErrInvalidRequest)
	_, err = e.SubmitAll(ctx, []*model.Request{greedyRequest(m, prompts[0], 4), nil})
	require.ErrorIs(t, err, model.ErrInvalidRequest)
	// A request submitted after them runs alone: the only prompt to
	// start at position 0 is its own.
	_, _, err = wait(t, submit(t, ctx, e, greedyRequest(m, prompts[2], 4)))
	require.NoError(t, err)
	starts := 0
	for _, st := range log.get() {
		for _, p := range st.pos {
			if p == 0 {
				starts++
			}
		}
	}
	assert.Equal(t, 1, starts, "prompts evaluated")

	// All good: the jobs come back in request order, each with its own text.
	alone := make([]string, len(prompts))
	reqs := make([]*model.Request, len(prompts))
	for i, p := range prompts {
		text, _, err := wait(t, submit(t, ctx, e, greedyRequest(m, p, 12)))
		require.NoError(t, err)
		alone[i] = text
		reqs[i] = greedyRequest(m, p, 12)
	}
	jobs, err := e.SubmitAll(ctx, reqs)
	require.NoError(t, err)
	require.Len(t, jobs, len(prompts))
	for i, j := range jobs {
		text, _, err := wait(t, j)
		require.NoError(t, err)
		assert.Equal(t, alone[i], text, "job %d", i)
	}

	e.Close()
	_, err = e.SubmitAll(ctx, reqs)
	assert.ErrorIs(t, err, model.ErrEngineClosed)
}

// promptCounter is an Observer that counts the prompt tokens evaluated.
type promptCounter struct{ prompt atomic.Int64 }

func (c *promptCounter) Admitted(time.Duration, int) {}
func (c *promptCounter) Stepped(st model.StepStats)  { c.prompt.Add(int64(st.Prompt)) }
func (c *promptCounter) Sampled(bool, time.Duration) {}
func (c *promptCounter) Ended(*model.Result, error)  {}

// TestSubmitAllSharesThePrompt: requests of one prompt submitted together
// evaluate it once when the backend copies slots (the CPU backend), and
// once each behind a decorator that hides the copier; the text of each is
// what a Session alone generates with its options, both ways.
func TestSubmitAllSharesThePrompt(t *testing.T) {
	const prompt = "Once upon a time there was a little girl who liked to play in the park with her dog"
	opts := func(i int) model.GenerateOptions {
		o := model.GenerateOptions{MaxTokens: 16, IgnoreEOS: true, Sampling: model.Greedy()}
		if i > 0 {
			o.Sampling = sample.DefaultParams()
			o.Sampling.Seed = uint64(100 + i)
		}
		return o
	}
	ref := loadCPUModel(t, 1)
	ids := ref.Tokenizer.Encode(prompt, true, true)
	const n = 4
	want := make([]string, n)
	for i := range n {
		s, err := ref.NewSession(0)
		require.NoError(t, err)
		var sb strings.Builder
		_, err = s.Generate(context.Background(), ids, opts(i), func(text string) error { sb.WriteString(text); return nil })
		require.NoError(t, err)
		want[i] = sb.String()
	}
	require.NotEqual(t, want[1], want[2], "two seeds, one text")

	for _, c := range []struct {
		name   string
		be     model.Backend
		prompt int // prompt tokens evaluated
	}{
		{"copier", cpu.New(cpu.Options{Threads: 2}), len(ids) + n - 1},
		{"no copier", decorated{cpu.New(cpu.Options{Threads: 2})}, n * len(ids)},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := model.Load(fixture.BundledModel(t), c.be, model.Options{Slots: n, CtxSize: 128})
			require.NoError(t, err)
			defer m.Close()
			counter := &promptCounter{}
			// Chunks of 5 prompt tokens: the first request's prompt takes
			// several steps, which the others wait through.
			eo := model.EngineOptions{BatcherOptions: model.BatcherOptions{PrefillChunk: 5}, Observer: counter}
			for i := range n {
				s, err := m.NewSession(i)
				require.NoError(t, err)
				eo.Sessions = append(eo.Sessions, s)
			}
			e := model.NewEngine(m, eo)
			defer e.Close()
			reqs := make([]*model.Request, n)
			for i := range n {
				reqs[i] = &model.Request{Prompt: ids, Options: opts(i)}
			}
			jobs, err := e.SubmitAll(context.Background(), reqs)
			require.NoError(t, err)
			for i, j := range jobs {
				text, res, err := wait(t, j)
				require.NoError(t, err)
				assert.Equal(t, want[i], text, "request %d", i)
				assert.Len(t, res.Tokens, 16)
			}
			e.Close() // the last step is reported after its jobs end
			assert.EqualValues(t, c.prompt, counter.prompt.Load(), "prompt tokens evaluated (prompt of %d)", len(ids))
		})
	}
}

func loadCPUModel(t *testing.T, slots int) *model.Model {
	t.Helper()
	m, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{Threads: 2}), model.Options{Slots: slots, CtxSize: 128})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// TestCopySlot: after copying the first positions of a slot, the next
// token gives, in the copy, exactly the logits it gives in the original,
// for float32 and byte (f16; quantized types are stored as bytes too)
// caches; bad copies are refused.
func TestCopySlot(t *testing.T) {
	for _, ct := range []model.CacheType{model.CacheF32, model.CacheF16} { // both kinds of storage (quantized types are bytes as f16)
		t.Run(ct.String(), func(t *testing.T) {
			m, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{Threads: 2}),
				model.Options{Slots: 3, CtxSize: 64, CacheTypeK: ct, CacheTypeV: ct})
			require.NoError(t, err)
			defer m.Close()
			require.True(t, m.CanCopySlots())
			ids := m.Tokenizer.Encode("Lily and Tom went to the park to play", true, true)
			n := len(ids) - 1
			// Slot 2 first holds another text, which the copy overwrites.
			other := m.Tokenizer.Encode("The big red ball rolled down the hill and far away", true, true)
			prefill := func(slot int32, toks []int32) {
				b := &model.Batch{}
				for i, id := range toks {
					b.Tokens, b.Pos, b.Slot = append(b.Tokens, id), append(b.Pos, int32(i)), append(b.Slot, slot)
				}
				require.NoError(t, m.Forward(b, nil, nil))
			}
			prefill(0, ids[:n])
			prefill(2, other)
			require.NoError(t, m.CopySlot(2, 0, n))
			vocab := m.Config.VocabSize
			last := func(slot int32) []float32 {
				out := make([]float32, vocab)
				b := &model.Batch{Tokens: ids[n:], Pos: []int32{int32(n)}, Slot: []int32{slot}}
				require.NoError(t, m.Forward(b, []int32{0}, out))
				return out
			}
			assert.Equal(t, last(0), last(2))

			for _, bad := range [][3]int{{1, 1, 4}, {3, 0, 4}, {1, -1, 4}, {1, 0, 65}, {1, 0, -1}} {
				assert.Error(t, m.CopySlot(bad[0], bad[1], bad[2]), "copy %v", bad)
			}
		})
	}
	m, err := model.Load(fixture.BundledModel(t), decorated{cpu.New(cpu.Options{})}, model.Options{Slots: 2, CtxSize: 16})
	require.NoError(t, err)
	defer m.Close()
	assert.False(t, m.CanCopySlots())
	assert.ErrorIs(t, m.CopySlot(1, 0, 1), model.ErrUnsupported)
}

// failingCopier is the CPU backend whose slot copies fail.
type failingCopier struct{ *cpu.Backend }

func (failingCopier) CopySlot(int, int, int) error { return errInjected }

// TestSubmitAllSharingFallsBack: requests of one prompt that cannot copy
// it evaluate it themselves, with the same text: when the copy fails, and
// when the first request has ended before the others got a slot.
func TestSubmitAllSharingFallsBack(t *testing.T) {
	ref := loadCPUModel(t, 1)
	ids := ref.Tokenizer.Encode("Lily and Tom went to the park to play with a ball", true, true)
	opts := model.GenerateOptions{MaxTokens: 6, IgnoreEOS: true, Sampling: model.Greedy()}
	s, err := ref.NewSession(0)
	require.NoError(t, err)
	var want strings.Builder
	_, err = s.Generate(context.Background(), ids, opts, func(text string) error { want.WriteString(text); return nil })
	require.NoError(t, err)

	run := func(t *testing.T, be model.Backend, slots int, busy bool) int64 {
		m, err := model.Load(fixture.BundledModel(t), be, model.Options{Slots: slots, CtxSize: 128})
		require.NoError(t, err)
		defer m.Close()
		counter := &promptCounter{}
		eo := model.EngineOptions{Observer: counter}
		for i := range slots {
			ses, err := m.NewSession(i)
			require.NoError(t, err)
			eo.Sessions = append(eo.Sessions, ses)
		}
		e := model.NewEngine(m, eo)
		defer e.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if busy {
			// Hold every slot but one, so the requests run one after the other.
			long := &model.Request{Prompt: ref.Tokenizer.Encode("The cat", true, true),
				Options: model.GenerateOptions{MaxTokens: 100, IgnoreEOS: true, Sampling: model.Greedy()}}
			for range slots - 1 {
				firstPiece(t, submit(t, ctx, e, long))
			}
			counter.prompt.Store(0)
		}
		jobs, err := e.SubmitAll(ctx, []*model.Request{{Prompt: ids, Options: opts}, {Prompt: ids, Options: opts}, {Prompt: ids, Options: opts}})
		require.NoError(t, err)
		for i, j := range jobs {
			text, _, err := wait(t, j)
			require.NoError(t, err)
			assert.Equal(t, want.String(), text, "request %d", i)
		}
		cancel()
		e.Close() // the last step is reported after its jobs end
		return counter.prompt.Load()
	}
	t.Run("the copy fails", func(t *testing.T) {
		assert.EqualValues(t, 3*len(ids), run(t, failingCopier{cpu.New(cpu.Options{Threads: 2})}, 3, false))
	})
	t.Run("the first ended first", func(t *testing.T) {
		// The later requests take the first one's slot, whose cache holds
		// the prompt: one token each.
		assert.EqualValues(t, len(ids)+2, run(t, cpu.New(cpu.Options{Threads: 2}), 2, true))
	})
}
