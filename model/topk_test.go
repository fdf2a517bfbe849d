package model_test

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// topKBySort is TopK written the obvious way.
func topKBySort(row []float32, k int) ([]int32, []float32) {
	idx := make([]int, len(row))
	vals := make([]float32, len(row))
	for i, v := range row {
		idx[i] = i
		if v != v {
			v = float32(math.Inf(-1))
		}
		vals[i] = v
	}
	sort.SliceStable(idx, func(a, b int) bool { return vals[idx[a]] > vals[idx[b]] })
	ids, out := make([]int32, k), make([]float32, k)
	for j := range k {
		if j < len(row) {
			ids[j], out[j] = int32(idx[j]), vals[idx[j]]
		} else {
			ids[j], out[j] = -1, float32(math.Inf(-1))
		}
	}
	return ids, out
}

func TestTopK(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ n, k int }{{1, 1}, {10, 3}, {512, 40}, {1000, 1000}, {5, 9}, {32000, 104}} {
		row := make([]float32, c.n)
		for i := range row {
			row[i] = float32(r.IntN(50)) / 7 // many ties
		}
		if c.n > 3 {
			row[2] = float32(math.NaN())
			row[3] = float32(math.Inf(-1))
		}
		ids, vals := make([]int32, c.k), make([]float32, c.k)
		model.TopK(ids, vals, row)
		wantIDs, wantVals := topKBySort(row, c.k)
		assert.Equal(t, wantIDs, ids, "n=%d k=%d", c.n, c.k)
		assert.Equal(t, wantVals, vals, "n=%d k=%d", c.n, c.k)
	}
}

// recorder notes the buffer shapes a model allocates.
type recorder struct {
	*cpu.Backend
	shapes [][2]int
	plan   *model.Plan
}

func (r *recorder) NewBuf(rows, cols int) (model.Buf, error) {
	r.shapes = append(r.shapes, [2]int{rows, cols})
	return r.Backend.NewBuf(rows, cols)
}

func (r *recorder) Plan(p *model.Plan) error { r.plan = p; return nil }

func TestPlanMatchesAllocations(t *testing.T) {
	rec := &recorder{Backend: cpu.New(cpu.Options{})}
	m, err := model.Load(fixture.BundledModel(t), rec, model.Options{CtxSize: 32, Slots: 3, BatchSize: 7})
	require.NoError(t, err)
	defer m.Close()
	require.NotNil(t, rec.plan)
	assert.ElementsMatch(t, rec.shapes, rec.plan.Bufs)
	assert.Equal(t, model.KVConfig{Layers: 5, Slots: 3, Ctx: 32, KDim: 32, VDim: 32}, rec.plan.KV)
	assert.Len(t, rec.plan.Tensors, 48)
}

func TestForwardTopK(t *testing.T) {
	for _, name := range []string{"cpu", "decorated"} {
		t.Run(name, func(t *testing.T) {
			var be model.Backend = cpu.New(cpu.Options{})
			if name == "decorated" {
				be = decorated{be}
			}
			m, err := model.Load(fixture.BundledModel(t), be, model.Options{CtxSize: 32})
			require.NoError(t, err)
			defer m.Close()
			ids := []int32{1, 400, 20, 30}
			b := &model.Batch{Tokens: ids, Pos: []int32{0, 1, 2, 3}, Slot: make([]int32, 4)}
			vocab := m.Config.VocabSize
			full := make([]float32, 2*vocab)
			require.NoError(t, m.Forward(b, []int32{3, 1}, full))
			const k = 17
			gotIDs, gotVals := make([]int32, 2*k), make([]float32, 2*k)
			require.NoError(t, m.ForwardTopK(b, []int32{3, 1}, k, gotIDs, gotVals))
			for j := range 2 {
				wantIDs, wantVals := topKBySort(full[j*vocab:(j+1)*vocab], k)
				assert.Equal(t, wantIDs, gotIDs[j*k:(j+1)*k])
				assert.Equal(t, wantVals, gotVals[j*k:(j+1)*k])
			}
			assert.Error(t, m.ForwardTopK(b, []int32{0}, 0, gotIDs, gotVals))
			assert.Error(t, m.ForwardTopK(b, []int32{0}, model.MaxTopK+1, gotIDs, gotVals))
		})
	}
}
