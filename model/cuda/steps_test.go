package cuda

import (
	"errors"
	"fmt"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/gputest"
	"github.com/m40llm/m40llm/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// seqBatch returns n tokens at positions from, from+1, ... of slot 0.
func seqBatch(n, from int) *model.Batch {
	b := &model.Batch{Tokens: make([]int32, n), Pos: make([]int32, n), Slot: make([]int32, n)}
	for i := range n {
		b.Tokens[i], b.Pos[i] = int32(300+i), int32(from+i)
	}
	return b
}

// matrix loads a (rows, cols) FP16 weight of zeros.
func matrix(t *testing.T, b *Backend, rows, cols int) model.Weight {
	t.Helper()
	ti := &gguf.TensorInfo{Name: "w", Type: gguf.TypeF16, Dims: []int64{int64(cols), int64(rows)}, Size: int64(2 * rows * cols)}
	w, err := b.LoadWeight(ti, make([]byte, ti.Size))
	require.NoError(t, err)
	return w
}

// TestStepOutOfMemory (fake device): an allocation that does not fit while
// a step is recorded or submitted fails that step only: the error matches
// cudadrv.ErrOutOfMemory, nothing of the step runs, Err stays nil, and the
// same step then runs once memory is available. Each case is a step that
// needs one allocation more than the steps before it.
func TestStepOutOfMemory(t *testing.T) {
	cases := []struct {
		name string
		// setup prepares a backend; step then runs a step that allocates.
		setup func(t *testing.T, b *Backend) (step func() error)
	}{
		{"scratch/longer-batch", func(t *testing.T, b *Backend) func() error {
			// Attention partials and top-k output for 4 rows, after 1.
			m, log := prefilled(t, b, synthModel(t, "tinyllama", 2))
			decodeStep(t, m, log)
			ids, vals := make([]int32, 4*decodeK), make([]float32, 4*decodeK)
			return func() error { return m.ForwardTopK(seqBatch(4, 4), []int32{0, 1, 2, 3}, decodeK, ids, vals) }
		}},
		{"batch-buffers", func(t *testing.T, b *Backend) func() error {
			x, err := b.NewBuf(100, 8)
			require.NoError(t, err)
			require.NoError(t, b.SetBatch(seqBatch(1, 0)))
			return func() error {
				if err := b.SetBatch(seqBatch(100, 0)); err != nil {
					return err
				}
				b.Add(x, x, 100)
				return b.Sync()
			}
		}},
		{"read-staging", func(t *testing.T, b *Backend) func() error {
			x, err := b.NewBuf(2, 8)
			require.NoError(t, err)
			require.NoError(t, b.SetBatch(seqBatch(2, 0)))
			return func() error {
				b.Add(x, x, 2)
				return b.Read(make([]float32, 16), x, 2)
			}
		}},
		{"rope-table", func(t *testing.T, b *Backend) func() error {
			x, err := b.NewBuf(1, 32)
			require.NoError(t, err)
			require.NoError(t, b.SetBatch(seqBatch(1, 0)))
			b.Rope(x, 1, 16, &model.RopeParams{Dim: 16, Base: 10000, FreqScale: 1})
			require.NoError(t, b.Sync())
			return func() error {
				// Other frequencies: a new inverse-frequency table.
				b.Rope(x, 1, 16, &model.RopeParams{Dim: 16, Base: 500000, FreqScale: 1})
				return b.Sync()
			}
		}},
		{"cublas-scratch", func(t *testing.T, b *Backend) func() error {
			x, err := b.NewBuf(20, 8)
			require.NoError(t, err)
			y, err := b.NewBuf(20, 8)
			require.NoError(t, err)
			w := matrix(t, b, 8, 8)
			require.NoError(t, b.SetBatch(seqBatch(20, 0)))
			return func() error {
				b.MatMul(y, x, w, nil, 20)
				return b.Sync()
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, d := newFake(t, Options{})
			step := c.setup(t, b)
			runs := d.runs
			d.limit = d.used // nothing more fits
			err := step()
			require.Error(t, err)
			assert.ErrorIs(t, err, cudadrv.ErrOutOfMemory)
			assert.NoError(t, b.Err(), "an allocation failure is not sticky")
			assert.Equal(t, runs, d.runs, "the failed step ran")
			t.Log(err)

			d.limit = 0
			require.NoError(t, step(), "the step once memory is available")
			assert.Equal(t, runs+1, d.runs)
			assert.NoError(t, b.Err())
		})
	}
}

// TestDeviceFailure (fake device): a failure of the step on the device is
// sticky: Err returns it and every later call fails with it at once,
// without running anything.
func TestDeviceFailure(t *testing.T) {
	b, d := newFake(t, Options{})
	x, err := b.NewBuf(2, 8)
	require.NoError(t, err)
	require.NoError(t, b.SetBatch(seqBatch(2, 0)))
	b.Add(x, x, 2)
	require.NoError(t, b.Sync())

	d.fail = fmt.Errorf("cuStreamSynchronize: %w", cudadrv.ErrLaunchFailed)
	b.Add(x, x, 2)
	err = b.Sync()
	assert.ErrorIs(t, err, cudadrv.ErrLaunchFailed)
	cause := b.Err()
	require.ErrorIs(t, cause, cudadrv.ErrLaunchFailed)

	d.fail = nil
	runs := d.runs
	checkFailsFast(t, b, x, cause)
	assert.Equal(t, runs, d.runs, "ran after the failure")
}

// checkFailsFast checks that every call that submits work, or allocates,
// fails with cause.
func checkFailsFast(t *testing.T, b *Backend, x model.Buf, cause error) {
	t.Helper()
	ids, vals := make([]int32, 4), make([]float32, 4)
	calls := []struct {
		name string
		call func() error
	}{
		{"SetBatch", func() error { return b.SetBatch(seqBatch(1, 0)) }},
		{"Read", func() error { b.Add(x, x, 1); return b.Read(make([]float32, 8), x, 1) }},
		{"ReadTopK", func() error { return b.ReadTopK(ids, vals, x, 1, 4) }},
		{"Sync", b.Sync},
		{"NewBuf", func() error { _, err := b.NewBuf(1, 8); return err }},
	}
	for _, c := range calls {
		assert.Equal(t, cause, c.call(), c.name)
	}
	assert.Equal(t, cause, b.Err())
}

// TestInjectFault: after InjectFault, the next step fails with the
// device's illegal-address error, and the backend is unusable from then
// on: Err returns that failure and every later call fails with it. On the
// GPU the fault is real and breaks the CUDA context of the process, so
// that case runs in a process of its own.
func TestInjectFault(t *testing.T) {
	t.Run("fake", func(t *testing.T) {
		b, _ := newFake(t, Options{})
		checkInjectFault(t, b)
	})
	t.Run("gpu", func(t *testing.T) {
		if !gputest.Isolate(t) {
			return
		}
		checkInjectFault(t, newTestGPU(t, Options{}))
	})
}

func checkInjectFault(t *testing.T, b *Backend) {
	m, log := prefilled(t, b, synthModel(t, "tinyllama", 2))
	decodeStep(t, m, log)
	x, err := b.NewBuf(1, 8)
	require.NoError(t, err)
	require.NoError(t, b.Err())

	b.InjectFault()
	ids, vals := make([]int32, decodeK), make([]float32, decodeK)
	err = m.ForwardTopK(seqBatch(1, 4), []int32{0}, decodeK, ids, vals)
	var r cudadrv.Result
	require.True(t, errors.As(err, &r), "not the driver's error: %v", err)
	// An illegal address on current GPUs; older drivers may report the
	// launch as failed.
	assert.Contains(t, []cudadrv.Result{cudadrv.ErrIllegalAddress, cudadrv.ErrLaunchFailed}, r, "%v", err)
	cause := b.Err()
	require.ErrorIs(t, cause, r)
	assert.ErrorIs(t, m.Err(), cause)
	assert.ErrorIs(t, m.Err(), model.ErrBackendFailed)
	assert.ErrorIs(t, err, model.ErrBackendFailed, "the model marks the failure")
	t.Logf("injected fault: %v", cause)

	steps := len(log.steps)
	err = m.ForwardTopK(seqBatch(1, 5), []int32{0}, decodeK, ids, vals)
	assert.ErrorIs(t, err, cause, "ForwardTopK")
	assert.ErrorIs(t, err, model.ErrBackendFailed, "ForwardTopK")
	checkFailsFast(t, b, x, cause)
	assert.Equal(t, steps, len(log.steps), "ran after the fault")
}

// TestCopySlot (fake device): one copy per layer for the keys and one for
// the values, from slot src's first positions to slot dst's, at the
// offsets of the [layer][slot][pos][dim] FP16 layout; bad copies are
// refused without copying.
func TestCopySlot(t *testing.T) {
	b, d := newFake(t, Options{})
	kv := model.KVConfig{Layers: 3, Slots: 4, Ctx: 16, KDim: 8, VDim: 12, TypeK: model.CacheF16, TypeV: model.CacheF16}
	require.NoError(t, b.InitKV(kv))
	require.NoError(t, b.CopySlot(3, 1, 5))
	var want []fakeCopy
	at := func(base cudadrv.DevicePtr, l, slot, dim int) cudadrv.DevicePtr {
		return base + cudadrv.DevicePtr(2*((l*kv.Slots+slot)*kv.Ctx)*dim)
	}
	for l := range kv.Layers {
		want = append(want,
			fakeCopy{at(b.kc, l, 3, kv.KDim), at(b.kc, l, 1, kv.KDim), 2 * 5 * kv.KDim},
			fakeCopy{at(b.vc, l, 3, kv.VDim), at(b.vc, l, 1, kv.VDim), 2 * 5 * kv.VDim})
	}
	assert.Equal(t, want, d.copies)

	// The whole context of the last slot stays inside the cache.
	d.copies = nil
	require.NoError(t, b.CopySlot(0, 3, kv.Ctx))
	assert.Len(t, d.copies, 2*kv.Layers)
	d.copies = nil
	for _, bad := range [][3]int{{1, 1, 4}, {4, 0, 4}, {-1, 0, 4}, {1, 0, 17}, {1, 0, -1}} {
		assert.Error(t, b.CopySlot(bad[0], bad[1], bad[2]), "copy %v", bad)
	}
	assert.Empty(t, d.copies)
	assert.NoError(t, b.Err())
}
