package model_test

import (
	"context"
	"sync"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// decorated is the one-line decorator a user writes to wrap a backend (to
// log, count or time its calls): it implements model.Backend and nothing
// else, so every optional interface of the wrapped backend is hidden.
type decorated struct{ model.Backend }

// TestDecoratedBackendKeepsTheMapping: the CPU backend's weights alias the
// model file's mapping, and a decorator hides whatever says so; Load must
// keep the mapping unless the backend says it copies the weights, or the
// first Eval reads unmapped memory.
func TestDecoratedBackendKeepsTheMapping(t *testing.T) {
	plain := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 16})
	m, err := model.Load(fixture.BundledModel(t), decorated{cpu.New(cpu.Options{})}, model.Options{CtxSize: 16})
	require.NoError(t, err)
	defer m.Close()

	ids := plain.Tokenizer.Encode("Once upon a time", true, true)
	want := evalLogits(t, plain, ids)
	got := evalLogits(t, m, ids)
	assert.Equal(t, want, got)
}

func evalLogits(t *testing.T, m *model.Model, ids []int32) []float32 {
	t.Helper()
	s, err := m.NewSession(0)
	require.NoError(t, err)
	logits, err := s.Eval(context.Background(), ids)
	require.NoError(t, err)
	return append([]float32(nil), logits...)
}

// TestForwardTopKConcurrentDecorated: Model.ForwardTopK serializes
// callers, whatever the backend; run under -race, two goroutines over a
// decorated backend must not touch shared state outside the model's lock.
func TestForwardTopKConcurrentDecorated(t *testing.T) {
	m, err := model.Load(fixture.BundledModel(t), decorated{cpu.New(cpu.Options{})}, model.Options{CtxSize: 16, Slots: 2})
	require.NoError(t, err)
	defer m.Close()
	const k = 8
	// Slot 0 and 1 get the same two-token prompt; the candidates must agree.
	var wg sync.WaitGroup
	results := make([][]int32, 2)
	errs := make([]error, 2)
	for g := range 2 {
		wg.Go(func() {
			ids, vals := make([]int32, k), make([]float32, k)
			for range 20 {
				b := &model.Batch{Tokens: []int32{1, 400}, Pos: []int32{0, 1}, Slot: []int32{int32(g), int32(g)}}
				if errs[g] = m.ForwardTopK(b, []int32{1}, k, ids, vals); errs[g] != nil {
					return
				}
			}
			results[g] = ids
		})
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, results[0], results[1])
}
