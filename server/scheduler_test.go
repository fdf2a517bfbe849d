package server

import (
	"context"
	"testing"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The batching itself (chunked prefill, prefix reuse, cancellation) is the
// engine's and is tested in package model; these tests cover what the
// scheduler adds: the bound on requests in flight and draining.

func newTestScheduler(t *testing.T, slots, ctx, queue int) (*scheduler, *model.Model) {
	t.Helper()
	m, _ := loadModel(t, slots, ctx)
	s, err := newScheduler(m, schedulerOptions{queue: queue, chunk: 64})
	require.NoError(t, err)
	t.Cleanup(func() {
		s.stop()
		m.Close()
	})
	return s, m
}

func greedy(m *model.Model, prompt string, n int) *model.Request {
	return &model.Request{Prompt: m.Tokenizer.Encode(prompt, true, true),
		Options: model.GenerateOptions{MaxTokens: n, Sampling: model.Greedy(), IgnoreEOS: true}}
}

func submitGreedy(t *testing.T, s *scheduler, m *model.Model, prompt string, n int) *model.Job {
	t.Helper()
	j, err := s.submit(context.Background(), greedy(m, prompt, n))
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

func TestQueueBoundAndDrain(t *testing.T) {
	s, m := newTestScheduler(t, 1, 512, 1)
	a := submitGreedy(t, s, m, "Once upon a time", 300)
	b := submitGreedy(t, s, m, "Lily", 2)
	_, err := s.submit(context.Background(), greedy(m, "Tom", 2))
	assert.ErrorIs(t, err, ErrBusy, "one running, one queued, no room for a third")

	// Draining lets both finish and then refuses new work.
	dctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, s.drain(dctx))
	_, resA, errA := wait(t, a)
	_, resB, errB := wait(t, b)
	require.NoError(t, errA)
	require.NoError(t, errB)
	assert.Len(t, resA.Tokens, 300)
	assert.Len(t, resB.Tokens, 2)
	_, err = s.submit(context.Background(), greedy(m, "Tom", 2))
	assert.ErrorIs(t, err, ErrShuttingDown)
	assert.Equal(t, 0, s.count())
}

func TestDrainTimeoutEndsRequests(t *testing.T) {
	s, m := newTestScheduler(t, 1, 512, 1)
	a := submitGreedy(t, s, m, "Once upon a time", 500)
	b := submitGreedy(t, s, m, "Lily", 2)
	firstPiece(t, a)
	dctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, s.drain(dctx), context.Canceled)
	_, _, errA := wait(t, a)
	_, _, errB := wait(t, b)
	assert.ErrorIs(t, errA, model.ErrEngineClosed)
	assert.ErrorIs(t, errB, model.ErrEngineClosed)
	assert.Equal(t, CodeShuttingDown, apiError(errA).Code, "answered as the server shutting down")
	assert.Equal(t, 0, s.count())
}
