package server

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepLog records the batches a scheduler runs.
type stepLog struct {
	mu    sync.Mutex
	steps []loggedStep
}

type loggedStep struct {
	at       time.Time
	seq, pos []int32
}

func (l *stepLog) record(b *model.Batch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.steps = append(l.steps, loggedStep{at: time.Now(), seq: append([]int32(nil), b.Slot...), pos: append([]int32(nil), b.Pos...)})
}

func (l *stepLog) get() []loggedStep {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedStep(nil), l.steps...)
}

func newTestScheduler(t *testing.T, slots, ctx, queue, chunk int) (*scheduler, *model.Model, *stepLog) {
	t.Helper()
	m, _ := loadModel(t, slots, ctx)
	log := &stepLog{}
	s := newScheduler(m, schedulerOptions{queue: queue, chunk: chunk, log: slog.New(slog.NewTextHandler(io.Discard, nil)), onStep: log.record})
	t.Cleanup(func() {
		s.stop()
		m.Close()
	})
	return s, m, log
}

// submitText submits prompt (tokenized with BOS) for up to n tokens,
// greedy, ignoring end-of-text.
func submitText(t *testing.T, ctx context.Context, s *scheduler, m *model.Model, prompt string, n int) *task {
	t.Helper()
	return submitIDs(t, ctx, s, m, m.Tokenizer.Encode(prompt, true, true), n)
}

func submitIDs(t *testing.T, ctx context.Context, s *scheduler, m *model.Model, ids []int32, n int) *task {
	t.Helper()
	gen, err := m.NewGeneration(ids, model.GenerateOptions{MaxTokens: n, Sampling: model.Greedy(), IgnoreEOS: true})
	require.NoError(t, err)
	tk := newTask(ctx, ids, gen)
	require.NoError(t, s.submit(tk))
	return tk
}

// wait reads t to its end and returns its text and result.
func wait(t *testing.T, tk *task) (string, Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var text strings.Builder
	for {
		pieces, done, res, err := tk.next(ctx)
		for _, p := range pieces {
			text.WriteString(p)
		}
		if err != nil || done {
			return text.String(), res, err
		}
	}
}

// firstPiece waits until t has produced text, and keeps that text.
func firstPiece(t *testing.T, tk *task) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		pieces, done, _, err := tk.next(ctx)
		require.NoError(t, err)
		require.False(t, done && len(pieces) == 0, "ended before any text")
		if len(pieces) > 0 {
			return strings.Join(pieces, "")
		}
	}
}

func TestChunkedPrefillDoesNotStallDecoding(t *testing.T) {
	const chunk = 16
	s, m, log := newTestScheduler(t, 2, 512, 4, chunk)
	ctx := context.Background()
	a := submitText(t, ctx, s, m, "Once upon a time", 400)
	firstPiece(t, a)
	aSlot := log.get()[0].seq[0]

	long := m.Tokenizer.Encode(strings.Repeat("The little dog ran to the park and played with a ball. ", 12), true, true)
	require.Greater(t, len(long), 5*chunk)
	require.Less(t, len(long), 400)
	b := submitIDs(t, ctx, s, m, long, 4)
	_, resB, err := wait(t, b)
	require.NoError(t, err)
	_, resA, err := wait(t, a)
	require.NoError(t, err)
	assert.Equal(t, 400, resA.CompletionTokens)
	assert.Equal(t, 4, resB.CompletionTokens)
	assert.Equal(t, model.FinishLength, resA.Finish)

	// Every step holds at most chunk prompt tokens; while B's prompt is
	// evaluated, A gets its next token in every step.
	bSlot := 1 - aSlot
	steps := log.get()
	maxA := int32(-1) // A's last position: A is active until a step holds it
	for _, st := range steps {
		for j, q := range st.seq {
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
		for j, q := range st.seq {
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
	s, m, _ := newTestScheduler(t, 4, 256, 4, 64)
	ctx := context.Background()
	prompts := []string{"Once upon a time", "Lily went to the park", "The cat", "Tom had a big red ball"}
	alone := make([]string, len(prompts))
	for i, p := range prompts {
		text, _, err := wait(t, submitText(t, ctx, s, m, p, 24))
		require.NoError(t, err)
		alone[i] = text
	}
	tasks := make([]*task, len(prompts))
	for i, p := range prompts {
		tasks[i] = submitText(t, ctx, s, m, p, 24)
	}
	for i, tk := range tasks {
		text, res, err := wait(t, tk)
		require.NoError(t, err)
		assert.Equal(t, alone[i], text, "prompt %q", prompts[i])
		assert.Equal(t, 24, res.CompletionTokens)
	}

	// Next to a sampler that needs the whole vocabulary (top-k off), the
	// step reads full logits rows; greedy text stays the same.
	ids := m.Tokenizer.Encode(prompts[1], true, true)
	p := model.Greedy()
	p.Temperature, p.TopK, p.Seed = 1, 0, 7
	gen, err := m.NewGeneration(ids, model.GenerateOptions{MaxTokens: 24, Sampling: p, IgnoreEOS: true})
	require.NoError(t, err)
	require.Zero(t, gen.CandidateCount())
	full := newTask(ctx, ids, gen)
	require.NoError(t, s.submit(full))
	greedy := submitText(t, ctx, s, m, prompts[0], 24)
	text, _, err := wait(t, greedy)
	require.NoError(t, err)
	assert.Equal(t, alone[0], text)
	_, res, err := wait(t, full)
	require.NoError(t, err)
	assert.Equal(t, 24, res.CompletionTokens)
}

func TestPrefixReuse(t *testing.T) {
	s, m, _ := newTestScheduler(t, 2, 256, 4, 64)
	ctx := context.Background()
	p1 := m.Tokenizer.Encode("Lily went to the park", true, true)
	p2 := m.Tokenizer.Encode("Once upon a time there was a dog", true, true)
	t1 := submitIDs(t, ctx, s, m, p1, 8)
	t2 := submitIDs(t, ctx, s, m, p2, 8)
	_, _, err := wait(t, t1)
	require.NoError(t, err)
	_, _, err = wait(t, t2)
	require.NoError(t, err)

	// A prompt that extends p2 takes p2's slot and evaluates only the rest.
	more := append(append([]int32(nil), p2...), m.Tokenizer.Encode(" The end.", false, true)...)
	_, res, err := wait(t, submitIDs(t, ctx, s, m, more, 4))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, res.CachedTokens, len(p2))
	assert.Less(t, res.CachedTokens, len(more))

	// The same prompt again reuses all but its last token.
	_, res, err = wait(t, submitIDs(t, ctx, s, m, p1, 4))
	require.NoError(t, err)
	assert.Equal(t, len(p1)-1, res.CachedTokens)
}

func TestCancelledRequestLeavesWithinOneStep(t *testing.T) {
	s, m, log := newTestScheduler(t, 1, 512, 4, 64)
	ctx, cancel := context.WithCancel(context.Background())
	tk := submitText(t, ctx, s, m, "Once upon a time", 400)
	firstPiece(t, tk)
	cancel()
	at := time.Now()
	_, _, err := wait(t, tk)
	require.ErrorIs(t, err, context.Canceled)
	require.Eventually(t, func() bool { return s.count() == 0 }, 5*time.Second, time.Millisecond)
	later := 0
	for _, st := range log.get() {
		if st.at.After(at) {
			later++
		}
	}
	assert.LessOrEqual(t, later, 1, "at most the step already under way runs after the cancel")
	// The slot is free for the next request.
	_, res, err := wait(t, submitText(t, context.Background(), s, m, "Once upon a time", 3))
	require.NoError(t, err)
	assert.Equal(t, 3, res.CompletionTokens)
}

func TestQueueBoundAndDrain(t *testing.T) {
	s, m, _ := newTestScheduler(t, 1, 512, 1, 64)
	ctx := context.Background()
	a := submitText(t, ctx, s, m, "Once upon a time", 300)
	b := submitText(t, ctx, s, m, "Lily", 2)
	gen, err := m.NewGeneration([]int32{1}, model.GenerateOptions{Sampling: model.Greedy()})
	require.NoError(t, err)
	assert.ErrorIs(t, s.submit(newTask(ctx, []int32{1}, gen)), ErrBusy, "one running, one queued, no room for a third")

	// Draining lets both finish and then refuses new work.
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, s.drain(dctx))
	_, resA, errA := wait(t, a)
	_, resB, errB := wait(t, b)
	require.NoError(t, errA)
	require.NoError(t, errB)
	assert.Equal(t, 300, resA.CompletionTokens)
	assert.Equal(t, 2, resB.CompletionTokens)
	assert.ErrorIs(t, s.submit(newTask(ctx, []int32{1}, gen)), ErrShuttingDown)
}

func TestDrainTimeoutEndsRequests(t *testing.T) {
	s, m, _ := newTestScheduler(t, 1, 512, 1, 64)
	ctx := context.Background()
	a := submitText(t, ctx, s, m, "Once upon a time", 500)
	b := submitText(t, ctx, s, m, "Lily", 2)
	firstPiece(t, a)
	dctx, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, s.drain(dctx), context.Canceled)
	_, _, errA := wait(t, a)
	_, _, errB := wait(t, b)
	assert.ErrorIs(t, errA, ErrShuttingDown)
	assert.ErrorIs(t, errB, ErrShuttingDown)
	assert.Equal(t, 0, s.count())
}
