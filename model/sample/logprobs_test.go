package sample

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// directLogSoftmax is the textbook log-softmax in float64 (math.Exp, no
// shortcuts): NaN entries are left out of the sum and come back NaN.
func directLogSoftmax(logits []float32) []float64 {
	top := math.Inf(-1)
	for _, v := range logits {
		if !math.IsNaN(float64(v)) {
			top = math.Max(top, float64(v))
		}
	}
	var z float64
	for _, v := range logits {
		if !math.IsNaN(float64(v)) {
			z += math.Exp(float64(v) - top)
		}
	}
	out := make([]float64, len(logits))
	for i, v := range logits {
		out[i] = float64(v) - top - math.Log(z)
	}
	return out
}

// directTop returns the n ids of highest logit (ties: lower id first) by
// sorting every valid id.
func directTop(logits []float32, n int) []int32 {
	var ids []int32
	for i, v := range logits {
		if v > nInf {
			ids = append(ids, int32(i))
		}
	}
	slices.SortStableFunc(ids, func(a, b int32) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	return ids[:min(n, len(ids))]
}

func TestLogProbs(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	big := randomLogits(r, 32000, 3)
	holes := randomLogits(r, 500, 2)
	for i := 0; i < len(holes); i += 7 {
		holes[i] = nInf
	}
	holes[3], holes[10] = nan, nan
	ties := []float32{1, 3, 3, 2, 3, -1}
	sparse := []float32{nInf, 2, nInf, nan, 0.5}
	tests := []struct {
		name   string
		logits []float32
		n      int
		want   int // tokens listed
	}{
		{"vocab 32000, top 20", big, 20, 20},
		{"vocab 32000, top 0", big, 0, 0},
		{"n above the limit is clamped", big, 50, MaxTopLogProbs},
		{"-Inf and NaN holes", holes, 5, 5},
		{"ties toward the lower id", ties, 4, 4},
		{"fewer valid than asked", sparse, 5, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := directLogSoftmax(tt.logits)
			norm := LogNormalizer(tt.logits)
			for i, v := range tt.logits {
				if v > nInf {
					assert.InDelta(t, want[i], float64(v)-norm, 1e-9, "token %d", i)
				}
			}
			top := TopLogProbs(nil, tt.logits, tt.n, norm)
			require.Len(t, top, tt.want)
			ids := directTop(tt.logits, tt.want)
			var mass float64
			for i, tp := range top {
				assert.Equal(t, ids[i], tp.ID, "rank %d", i)
				assert.InDelta(t, want[tp.ID], tp.LogProb, 1e-9, "rank %d", i)
				if i > 0 {
					assert.GreaterOrEqual(t, top[i-1].LogProb, tp.LogProb)
				}
				mass += math.Exp(tp.LogProb)
			}
			assert.LessOrEqual(t, mass, 1+1e-12)

			// The same vector as a candidate set in shuffled order.
			perm := r.Perm(len(tt.logits))
			cids := make([]int32, len(perm))
			cvals := make([]float32, len(perm))
			for i, p := range perm {
				cids[i], cvals[i] = int32(p), tt.logits[p]
			}
			cnorm, ctop := CandidateLogProbs(nil, cids, cvals, tt.n)
			assert.InDelta(t, norm, cnorm, 1e-9)
			require.Len(t, ctop, len(top))
			for i := range top {
				assert.Equal(t, top[i].ID, ctop[i].ID, "rank %d", i)
				assert.InDelta(t, top[i].LogProb, ctop[i].LogProb, 1e-9, "rank %d", i)
			}
		})
	}

	t.Run("no valid logit", func(t *testing.T) {
		l := []float32{nInf, nan, nInf}
		assert.True(t, math.IsInf(LogNormalizer(l), -1))
		assert.Empty(t, TopLogProbs(nil, l, 3, LogNormalizer(l)))
		norm, top := CandidateLogProbs(nil, []int32{0, 1}, []float32{nInf, nan}, 3)
		assert.True(t, math.IsInf(norm, -1))
		assert.Empty(t, top)
	})
}

func TestLogitBias(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	logits := randomLogits(r, 1000, 2)
	best := directTop(logits, 2)

	t.Run("-100 forbids the greedy token", func(t *testing.T) {
		s := newSampler(t, params(func(p *Params) {
			p.Temperature = 0
			p.LogitBias = map[int32]float32{best[0]: -100}
		}))
		assert.Equal(t, best[1], s.Sample(logits))
	})
	t.Run("+100 forces a token", func(t *testing.T) {
		low := directTop(logits, 1000)[900]
		for seed := range uint64(50) {
			p := DefaultParams()
			p.Seed = seed
			p.LogitBias = map[int32]float32{low: 100}
			s := newSampler(t, p)
			require.Equal(t, low, s.Sample(logits), "seed %d", seed)
		}
	})
	t.Run("equals sampling the biased logits", func(t *testing.T) {
		bias := map[int32]float32{}
		for range 30 {
			bias[int32(r.IntN(len(logits)))] = float32(r.Float64()*200 - 100)
		}
		biased := slices.Clone(logits)
		for id, v := range bias {
			biased[id] += v
		}
		for _, mod := range []func(*Params){
			nil,
			func(p *Params) { p.TopK = 0 },
			func(p *Params) { p.TopP = 1; p.MinP = 0 },
			func(p *Params) { p.RepeatPenalty = 1.3; p.FrequencyPenalty = 0.5 },
		} {
			p := DefaultParams()
			if mod != nil {
				mod(&p)
			}
			p.Seed = 11
			plain := newSampler(t, p)
			p.LogitBias = bias
			withBias := newSampler(t, p)
			assert.Zero(t, withBias.CandidateCount())
			assert.True(t, withBias.NeedsFullLogits())
			for i := range 40 {
				id := plain.Sample(biased)
				require.Equal(t, id, withBias.Sample(logits), "draw %d", i)
				plain.Accept(id)
				withBias.Accept(id)
			}
		}
		// The caller's logits are not modified.
		assert.NotEqual(t, biased, logits)
	})
	t.Run("candidates get their bias", func(t *testing.T) {
		ids := directTop(logits, 40)
		vals := make([]float32, len(ids))
		biased := make([]float32, len(ids))
		for i, id := range ids {
			vals[i] = logits[id]
			biased[i] = vals[i]
		}
		biased[5] += 100
		p := DefaultParams()
		plain := newSampler(t, p)
		p.LogitBias = map[int32]float32{ids[5]: 100, 999999: 3}
		withBias := newSampler(t, p)
		for range 20 {
			require.Equal(t, plain.SampleCandidates(ids, biased), withBias.SampleCandidates(ids, vals))
		}
	})
	t.Run("ids past the logits are skipped", func(t *testing.T) {
		s := newSampler(t, params(func(p *Params) {
			p.Temperature = 0
			p.LogitBias = map[int32]float32{int32(len(logits)): 100}
		}))
		assert.Equal(t, best[0], s.Sample(logits))
	})
	t.Run("New copies the map", func(t *testing.T) {
		m := map[int32]float32{best[0]: -100}
		s := newSampler(t, params(func(p *Params) { p.Temperature = 0; p.LogitBias = m }))
		m[best[0]] = 0
		assert.Equal(t, best[1], s.Sample(logits))
	})
	for _, tt := range []struct {
		name string
		bias map[int32]float32
		val  float64
	}{
		{"below -100", map[int32]float32{1: -100.5}, -100.5},
		{"above 100", map[int32]float32{1: 101}, 101},
		{"NaN", map[int32]float32{1: nan}, math.NaN()},
		{"negative id", map[int32]float32{-2: 1}, -2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(params(func(p *Params) { p.LogitBias = tt.bias }))
			var pe *ParamError
			require.True(t, errors.As(err, &pe), "%v", err)
			assert.Equal(t, "LogitBias", pe.Field)
			if math.IsNaN(tt.val) {
				assert.True(t, math.IsNaN(pe.Value))
			} else {
				assert.Equal(t, tt.val, pe.Value)
			}
		})
	}
	t.Run("the limits are allowed", func(t *testing.T) {
		_, err := New(params(func(p *Params) { p.LogitBias = map[int32]float32{0: -100, 1: 100} }))
		assert.NoError(t, err)
	})
}
