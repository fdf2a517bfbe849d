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

var (
	nan  = float32(math.NaN())
	pInf = float32(math.Inf(1))
	nInf = float32(math.Inf(-1))
)

// params returns p with the filters that DefaultParams turns on switched
// off, so that each test names only what it uses.
func params(mod func(*Params)) Params {
	p := Params{TopP: 1, RepeatPenalty: 1, RepeatLastN: 64, Temperature: 1}
	if mod != nil {
		mod(&p)
	}
	return p
}

func newSampler(t testing.TB, p Params) *Sampler {
	t.Helper()
	s, err := New(p)
	require.NoError(t, err)
	return s
}

// randomLogits returns n logits drawn from N(0, sd²).
func randomLogits(r *rand.Rand, n int, sd float64) []float32 {
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(r.NormFloat64() * sd)
	}
	return l
}

// logProbs returns ln(p) for each p.
func logProbs(p ...float64) []float32 {
	l := make([]float32, len(p))
	for i, x := range p {
		l[i] = float32(math.Log(x))
	}
	return l
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(*Params)
		field string // "" when valid
	}{
		{"defaults", nil, ""},
		{"negative temperature is greedy", func(p *Params) { p.Temperature = -1 }, ""},
		{"NaN temperature", func(p *Params) { p.Temperature = nan }, "Temperature"},
		{"Inf temperature", func(p *Params) { p.Temperature = pInf }, "Temperature"},
		{"top-p zero", func(p *Params) { p.TopP = 0 }, "TopP"},
		{"top-p negative", func(p *Params) { p.TopP = -0.5 }, "TopP"},
		{"top-p above one", func(p *Params) { p.TopP = 1.01 }, "TopP"},
		{"top-p NaN", func(p *Params) { p.TopP = nan }, "TopP"},
		{"top-p one", func(p *Params) { p.TopP = 1 }, ""},
		{"min-p negative is off", func(p *Params) { p.MinP = -1 }, ""},
		{"min-p one", func(p *Params) { p.MinP = 1 }, ""},
		{"min-p above one", func(p *Params) { p.MinP = 1.5 }, "MinP"},
		{"min-p NaN", func(p *Params) { p.MinP = nan }, "MinP"},
		{"repeat penalty zero", func(p *Params) { p.RepeatPenalty = 0 }, "RepeatPenalty"},
		{"repeat penalty negative", func(p *Params) { p.RepeatPenalty = -1.1 }, "RepeatPenalty"},
		{"repeat penalty Inf", func(p *Params) { p.RepeatPenalty = pInf }, "RepeatPenalty"},
		{"repeat penalty below one", func(p *Params) { p.RepeatPenalty = 0.9 }, ""},
		{"window whole history", func(p *Params) { p.RepeatLastN = -1 }, ""},
		{"window -2", func(p *Params) { p.RepeatLastN = -2 }, "RepeatLastN"},
		{"frequency NaN", func(p *Params) { p.FrequencyPenalty = nan }, "FrequencyPenalty"},
		{"presence -Inf", func(p *Params) { p.PresencePenalty = nInf }, "PresencePenalty"},
		{"negative top-k is off", func(p *Params) { p.TopK = -3 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultParams()
			if tt.mod != nil {
				tt.mod(&p)
			}
			s, err := New(p)
			if tt.field == "" {
				require.NoError(t, err)
				assert.Equal(t, p, s.Params())
				return
			}
			var pe *ParamError
			require.True(t, errors.As(err, &pe), "want *ParamError, got %v", err)
			assert.Equal(t, tt.field, pe.Field)
			assert.Nil(t, s)
		})
	}
}

func TestGreedy(t *testing.T) {
	tests := []struct {
		name   string
		logits []float32
		want   int32
	}{
		{"argmax", []float32{0.1, 2, -3, 1.9}, 1},
		{"ties go to the lowest id", []float32{1, 3, 0, 3, 3}, 1},
		{"NaN never chosen", []float32{nan, 1, nan, 0.5}, 1},
		{"NaN first and last", []float32{nan, -5, nan}, 1},
		{"all -Inf except one", []float32{nInf, nInf, -100, nInf}, 2},
		{"all -Inf", []float32{nInf, nInf}, NoToken},
		{"all NaN", []float32{nan, nan}, NoToken},
		{"empty", nil, NoToken},
		{"+Inf wins, lowest first", []float32{1, pInf, 2, pInf}, 1},
		{"single", []float32{-7}, 0},
	}
	modes := []struct {
		name string
		mod  func(*Params)
	}{
		{"temperature 0", func(p *Params) { p.Temperature = 0 }},
		{"temperature -1", func(p *Params) { p.Temperature = -1 }},
		{"greedy with filters", func(p *Params) { p.Temperature = 0; p.TopK = 2; p.TopP = 0.5; p.MinP = 0.5 }},
		{"top-k 1", func(p *Params) { p.TopK = 1 }},
		// An unused penalty window takes the top-k path instead of argmax.
		{"greedy with idle penalty", func(p *Params) { p.Temperature = 0; p.RepeatPenalty = 1.5 }},
	}
	for _, m := range modes {
		for _, tt := range tests {
			t.Run(m.name+"/"+tt.name, func(t *testing.T) {
				s := newSampler(t, params(m.mod))
				assert.Equal(t, tt.want, s.Sample(tt.logits))
				ids := make([]int32, len(tt.logits))
				for i := range ids {
					ids[i] = int32(i)
				}
				assert.Equal(t, tt.want, s.SampleCandidates(ids, tt.logits), "SampleCandidates")
			})
		}
	}
}

func TestTopKOneIsGreedy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	s := newSampler(t, params(func(p *Params) { p.TopK = 1; p.Temperature = 1.5; p.Seed = 7 }))
	for range 200 {
		logits := randomLogits(r, 1000, 3)
		want, _ := argmax(logits)
		require.Equal(t, want, s.Sample(logits))
	}
}

func TestSeedReproducible(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	inputs := make([][]float32, 300)
	for i := range inputs {
		inputs[i] = randomLogits(r, 500, 1)
	}
	configs := []struct {
		name string
		p    Params
	}{
		{"default", DefaultParams()},
		{"temperature only", params(nil)},
		{"top-p", params(func(p *Params) { p.TopP = 0.9 })},
		{"penalties", params(func(p *Params) { p.TopK = 50; p.RepeatPenalty = 1.3; p.FrequencyPenalty = 0.2 })},
	}
	run := func(s *Sampler) []int32 {
		out := make([]int32, len(inputs))
		for i, l := range inputs {
			out[i] = s.Sample(l)
			s.Accept(out[i])
		}
		return out
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			p := c.p
			p.Seed = 42
			a := newSampler(t, p)
			first := run(a)
			assert.Equal(t, first, run(newSampler(t, p)), "same seed")
			a.Reset()
			assert.Equal(t, first, run(a), "after Reset")
			p.Seed = 43
			assert.NotEqual(t, first, run(newSampler(t, p)), "different seed")
		})
	}
}

// TestDistribution checks the empirical distribution against softmax. Each
// count is Binomial(n, p); it must lie within 4 standard deviations,
// sqrt(n p (1-p)), of n p. For one token that fails with probability
// 6.3e-5 under a normal approximation, so well under 1e-3 for all the
// tokens here; the seed is fixed anyway, so the test cannot flake.
func TestDistribution(t *testing.T) {
	const n = 20000
	base := []float32{1, 2, 0.5, -1}
	tests := []struct {
		name   string
		logits []float32
		mod    func(*Params)
		temp   float64
		kept   int // the first kept logits of base count; the rest must not appear
	}{
		{"temperature 1", base, nil, 1, 4},
		{"temperature 0.5", base, func(p *Params) { p.Temperature = 0.5 }, 0.5, 4},
		// With a fifth, lowest token and top-k 4 the candidate path runs.
		{"top-k path temperature 1", append(slices.Clone(base), -2), func(p *Params) { p.TopK = 4 }, 1, 4},
		{"top-k path temperature 0.5", append(slices.Clone(base), -2), func(p *Params) { p.TopK = 4; p.Temperature = 0.5 }, 0.5, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(t, params(tt.mod))
			counts := make([]int, len(tt.logits))
			for range n {
				counts[s.Sample(tt.logits)]++
			}
			var z float64
			for _, l := range base[:tt.kept] {
				z += math.Exp(float64(l) / tt.temp)
			}
			for i, c := range counts {
				if i >= tt.kept {
					assert.Zero(t, c, "token %d is filtered out", i)
					continue
				}
				p := math.Exp(float64(base[i])/tt.temp) / z
				sd := math.Sqrt(n * p * (1 - p))
				assert.InDelta(t, n*p, float64(c), 4*sd, "token %d: p=%.4f", i, p)
			}
		})
	}
	// Temperature 0.5 sharpens: the most likely token gains mass.
	hot, cold := newSampler(t, params(nil)), newSampler(t, params(func(p *Params) { p.Temperature = 0.5 }))
	var h, c int
	for range n {
		if hot.Sample(base) == 1 {
			h++
		}
		if cold.Sample(base) == 1 {
			c++
		}
	}
	assert.Greater(t, c, h)
}

// survivors samples at a huge temperature, where the draw is uniform over
// whatever the filters kept (top-p and min-p look at temperature 1), and
// returns the set of drawn IDs. The callers draw 500 times for at most 4
// survivors (one is missed with probability below 4*0.75^500 = 1e-62),
// 12000 times for 405 (below 405*e^-29.6 = 6e-11) and 30000 times for 1004
// (below 1004*e^-29.9 = 1e-10).
func survivors(t *testing.T, p Params, logits []float32, draws int) []int32 {
	t.Helper()
	p.Temperature = 1e6
	s := newSampler(t, p)
	seen := map[int32]bool{}
	for range draws {
		seen[s.Sample(logits)] = true
	}
	ids := make([]int32, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func idRange(lo, hi int32) []int32 {
	var ids []int32
	for i := lo; i < hi; i++ {
		ids = append(ids, i)
	}
	return ids
}

func TestTopPMinP(t *testing.T) {
	// Probabilities 0.5, 0.25, 0.15, 0.1 at temperature 1. Top-p keeps the
	// shortest prefix reaching the mass: 0.45 → {0} (0.5), 0.7 → {0,1}
	// (0.75), 0.8 → {0,1,2} (0.9), 0.95 → all (1.0). Min-p keeps p >= min_p
	// * 0.5: 0.4 → p >= 0.2 → {0,1}; 0.25 → p >= 0.125 → {0,1,2}; 0.1 →
	// p >= 0.05 → all.
	small := logProbs(0.5, 0.25, 0.15, 0.1)
	tests := []struct {
		name string
		mod  func(*Params)
		want []int32
	}{
		{"top-p 0.45", func(p *Params) { p.TopP = 0.45 }, []int32{0}},
		{"top-p 0.7", func(p *Params) { p.TopP = 0.7 }, []int32{0, 1}},
		{"top-p 0.8", func(p *Params) { p.TopP = 0.8 }, []int32{0, 1, 2}},
		{"top-p 0.95", func(p *Params) { p.TopP = 0.95 }, []int32{0, 1, 2, 3}},
		{"min-p 0.4", func(p *Params) { p.MinP = 0.4 }, []int32{0, 1}},
		{"min-p 0.25", func(p *Params) { p.MinP = 0.25 }, []int32{0, 1, 2}},
		{"min-p 0.1", func(p *Params) { p.MinP = 0.1 }, []int32{0, 1, 2, 3}},
		{"min-p 1", func(p *Params) { p.MinP = 1 }, []int32{0}},
		{"top-p 0.8 then min-p 0.4", func(p *Params) { p.TopP = 0.8; p.MinP = 0.4 }, []int32{0, 1}},
		{"top-p 0.7 then min-p 0.1", func(p *Params) { p.TopP = 0.7; p.MinP = 0.1 }, []int32{0, 1}},
		{"top-k 3 then top-p 0.95", func(p *Params) { p.TopK = 3; p.TopP = 0.95 }, []int32{0, 1, 2}},
		// After top-k 3 the mass renormalises to 0.5/0.9 = 0.556, 0.833, 1.
		{"top-k 3 then top-p 0.8", func(p *Params) { p.TopK = 3; p.TopP = 0.8 }, []int32{0, 1}},
		{"top-k 3 then top-p 0.85", func(p *Params) { p.TopK = 3; p.TopP = 0.85 }, []int32{0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run("4 tokens/"+tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, survivors(t, params(tt.mod), small, 500))
		})
		// The same four tokens, shuffled to the back of a 3004-token vocabulary
		// whose other tokens carry a total mass of 3e-9 (and so leave the
		// cuts alone), exercise the full-vocabulary histogram and the
		// top-k heap on a realistic length.
		t.Run("3004 tokens/"+tt.name, func(t *testing.T) {
			const tail = 3000
			logits := make([]float32, tail, tail+4)
			for i := range logits {
				logits[i] = float32(math.Log(1e-12)) - float32(i%7)
			}
			logits = append(logits, small...)
			want := make([]int32, len(tt.want))
			for i, id := range tt.want {
				want[i] = id + tail
			}
			assert.Equal(t, want, survivors(t, params(tt.mod), logits, 500))
		})
	}

	// A long flat tail: probabilities 0.4, 0.3, 0.15, 0.1 and 1000 tokens of
	// 5e-5 each. Top-p 0.97002 needs 0.02002 from the tail after 0.95:
	// 400 tokens give 0.02, so 401 are kept (the lowest IDs among equals).
	long := logProbs(0.4, 0.3, 0.15, 0.1)
	for range 1000 {
		long = append(long, float32(math.Log(5e-5)))
	}
	p := params(func(p *Params) { p.TopP = 0.97002 })
	assert.Equal(t, idRange(0, 4+401), survivors(t, p, long, 12000))
	// After top-k 900 the mass is 0.95 + 896*5e-5 = 0.9948, so top-p needs
	// 0.97002*0.9948 = 0.9649759: 299 tail tokens give 0.96495, 300 give
	// 0.965.
	p.TopK = 900
	assert.Equal(t, idRange(0, 4+300), survivors(t, p, long, 12000))
	// Min-p keeps p >= min_p * 0.4: 1e-4 → 4e-5, everything; 1.5e-4 →
	// 6e-5, none of the tail.
	p = params(func(p *Params) { p.MinP = 1e-4 })
	assert.Equal(t, idRange(0, 1004), survivors(t, p, long, 30000))
	p.MinP = 1.5e-4
	assert.Equal(t, idRange(0, 4), survivors(t, p, long, 500))
}

// penalized applies s's penalties to a copy of logits through the same code
// Sample uses.
func penalized(s *Sampler, logits []float32) []float32 {
	s.countWindow(len(logits))
	defer s.releaseCounts()
	out := slices.Clone(logits)
	for _, id := range s.distinct {
		out[id] = s.penalty(out[id], s.count[id])
	}
	return out
}

func TestPenalties(t *testing.T) {
	logits := []float32{2, -1, 0.5, 3, 0}
	history := []int32{0, 1, 0, 3, 3, 3} // counts: 0→2, 1→1, 3→3
	tests := []struct {
		name string
		mod  func(*Params)
		want []float32
	}{
		// Repeat 2: positive logits halve, others double, once per token.
		{"repeat", func(p *Params) { p.RepeatPenalty = 2 }, []float32{1, -2, 0.5, 1.5, 0}},
		// Frequency 0.5: minus 0.5 per occurrence.
		{"frequency", func(p *Params) { p.FrequencyPenalty = 0.5 }, []float32{1, -1.5, 0.5, 1.5, 0}},
		// Presence 0.25: minus 0.25 once.
		{"presence", func(p *Params) { p.PresencePenalty = 0.25 }, []float32{1.75, -1.25, 0.5, 2.75, 0}},
		// All three: 2/2 - (2*0.5+0.25), -1*2 - (0.5+0.25), 3/2 - (3*0.5+0.25).
		{"all", func(p *Params) { p.RepeatPenalty = 2; p.FrequencyPenalty = 0.5; p.PresencePenalty = 0.25 },
			[]float32{-0.25, -2.75, 0.5, -0.25, 0}},
		// Only the last three tokens (3, 3, 3) are in the window.
		{"window 3", func(p *Params) { p.RepeatPenalty = 2; p.FrequencyPenalty = 0.5; p.RepeatLastN = 3 },
			[]float32{2, -1, 0.5, 0, 0}},
		{"whole history", func(p *Params) { p.FrequencyPenalty = 0.5; p.RepeatLastN = -1 },
			[]float32{1, -1.5, 0.5, 1.5, 0}},
		{"window 0 is off", func(p *Params) { p.RepeatPenalty = 2; p.RepeatLastN = 0 }, logits},
		{"reward below one", func(p *Params) { p.RepeatPenalty = 0.5 }, []float32{4, -0.5, 0.5, 6, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(t, params(tt.mod))
			for _, id := range history {
				s.Accept(id)
			}
			assert.Equal(t, tt.want, penalized(s, logits))
			// The chosen token follows the penalised logits, and the
			// caller's logits stay as they were.
			in := slices.Clone(logits)
			s.p.Temperature, s.greedy = 0, true
			want, _ := argmax(tt.want)
			assert.Equal(t, want, s.Sample(in), "greedy after penalties")
			assert.Equal(t, logits, in)
			s.Reset()
			assert.Equal(t, logits, penalized(s, logits), "Reset forgets the history")
		})
	}

	// Greedy decisions flip where the hand computation says they do, on
	// both the argmax path (no top-k) and the top-k path.
	flips := []struct {
		name    string
		mod     func(*Params)
		logits  []float32
		history []int32
		want    int32
	}{
		{"repeat 1.1: 2/1.1 < 1.9", func(p *Params) { p.RepeatPenalty = 1.1 }, []float32{2, 1.9}, []int32{0}, 1},
		{"repeat 1.1 on a negative logit", func(p *Params) { p.RepeatPenalty = 1.1 }, []float32{-1, -1.05}, []int32{0}, 1},
		{"frequency 0.3 twice: 3-0.6 < 2.5", func(p *Params) { p.FrequencyPenalty = 0.3 }, []float32{3, 2.5}, []int32{0, 0}, 1},
		{"frequency 0.3 once: 3-0.3 > 2.5", func(p *Params) { p.FrequencyPenalty = 0.3 }, []float32{3, 2.5}, []int32{0}, 0},
		{"presence 0.6 is once", func(p *Params) { p.PresencePenalty = 0.6 }, []float32{3, 2.5}, []int32{0, 0, 0}, 1},
		{"presence 0.4 is once", func(p *Params) { p.PresencePenalty = 0.4 }, []float32{3, 2.5}, []int32{0, 0, 0}, 0},
		{"token left the window", func(p *Params) { p.RepeatPenalty = 2; p.RepeatLastN = 2 }, []float32{2, 1.9, 0}, []int32{0, 2, 2}, 0},
	}
	for _, tt := range flips {
		for _, k := range []int{0, 1, 2} {
			p := params(tt.mod)
			p.Temperature, p.TopK = 0, k
			s := newSampler(t, p)
			for _, id := range tt.history {
				s.Accept(id)
			}
			assert.Equal(t, tt.want, s.Sample(tt.logits), "%s, top-k %d", tt.name, k)
		}
	}
}

// topRaw returns the IDs and logits of the n highest logits (ties toward
// the lower ID), computed by a full sort.
func topRaw(logits []float32, n int) ([]int32, []float32) {
	idx := make([]int32, len(logits))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortStableFunc(idx, func(a, b int32) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	idx = idx[:min(n, len(idx))]
	vals := make([]float32, len(idx))
	for i, id := range idx {
		vals[i] = logits[id]
	}
	return idx, vals
}

func TestSampleCandidatesMatchesSample(t *testing.T) {
	configs := []struct {
		name string
		p    Params
	}{
		{"default", DefaultParams()},
		{"greedy", params(func(p *Params) { p.Temperature = 0 })},
		{"greedy with penalties", params(func(p *Params) { p.Temperature = 0; p.RepeatPenalty = 1.3; p.RepeatLastN = 16 })},
		{"top-k 40 with penalties", params(func(p *Params) {
			p.TopK, p.TopP, p.MinP, p.Temperature = 40, 0.9, 0.02, 0.7
			p.RepeatPenalty, p.FrequencyPenalty, p.PresencePenalty, p.RepeatLastN = 1.2, 0.1, 0.2, 16
		})},
		{"top-k 5", params(func(p *Params) { p.TopK = 5 })},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			c.p.Seed = 9
			full, part := newSampler(t, c.p), newSampler(t, c.p)
			n := full.CandidateCount()
			require.False(t, full.NeedsFullLogits())
			require.Positive(t, n)
			r := rand.New(rand.NewPCG(3, 3))
			for step := range 300 {
				// Low-entropy logits so that a handful of tokens repeat
				// and the penalties matter.
				logits := randomLogits(r, 2000, 2)
				for i := range 8 {
					logits[i] += 6
				}
				want := full.Sample(logits)
				ids, vals := topRaw(logits, n)
				got := part.SampleCandidates(ids, vals)
				require.Equal(t, want, got, "step %d", step)
				full.Accept(want)
				part.Accept(got)
			}
		})
	}
}

func TestCandidateCount(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Params)
		want int
	}{
		{"greedy", func(p *Params) { p.Temperature = 0 }, 1},
		{"greedy ignores top-k", func(p *Params) { p.Temperature = 0; p.TopK = 40 }, 1},
		{"top-k", func(p *Params) { p.TopK = 40; p.TopP = 0.9; p.MinP = 0.1 }, 40},
		{"top-k off", func(p *Params) { p.TopP = 0.9 }, 0},
		{"top-k with penalties", func(p *Params) { p.TopK = 40; p.RepeatPenalty = 1.1; p.RepeatLastN = 64 }, 104},
		{"greedy with penalties", func(p *Params) { p.Temperature = 0; p.PresencePenalty = 0.5; p.RepeatLastN = 10 }, 11},
		{"penalties that raise", func(p *Params) { p.TopK = 40; p.RepeatPenalty = 0.9 }, 0},
		{"negative frequency", func(p *Params) { p.TopK = 40; p.FrequencyPenalty = -0.1 }, 0},
		{"whole-history window", func(p *Params) { p.TopK = 40; p.RepeatPenalty = 1.1; p.RepeatLastN = -1 }, 0},
		{"idle penalties", func(p *Params) { p.TopK = 40; p.RepeatPenalty = 1.1; p.RepeatLastN = 0 }, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(t, params(tt.mod))
			assert.Equal(t, tt.want, s.CandidateCount())
			assert.Equal(t, tt.want == 0, s.NeedsFullLogits())
		})
	}
}

func TestInvalidLogitsWhenSampling(t *testing.T) {
	modes := []struct {
		name string
		mod  func(*Params)
	}{
		{"full vocabulary", nil},
		{"top-k", func(p *Params) { p.TopK = 2 }},
		{"top-p", func(p *Params) { p.TopP = 0.9 }},
		{"min-p", func(p *Params) { p.MinP = 0.01 }},
		{"defaults", func(p *Params) { *p = DefaultParams() }},
	}
	tests := []struct {
		name   string
		logits []float32
		allow  []int32 // NoToken alone when nothing may be chosen
	}{
		{"NaN never chosen", []float32{nan, 0, nan, 0.1, nan}, []int32{1, 3}},
		{"all -Inf except one", []float32{nInf, nInf, 5, nInf}, []int32{2}},
		{"-Inf and NaN except one", []float32{nan, nInf, nan, -50}, []int32{3}},
		{"nothing valid", []float32{nan, nInf, nan}, []int32{NoToken}},
		{"+Inf wins", []float32{3, pInf, 2, pInf}, []int32{1}},
	}
	for _, m := range modes {
		for _, tt := range tests {
			t.Run(m.name+"/"+tt.name, func(t *testing.T) {
				s := newSampler(t, params(m.mod))
				for range 200 {
					assert.Contains(t, tt.allow, s.Sample(tt.logits))
				}
			})
		}
	}
}

func TestSteadyStateAllocations(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	logits := randomLogits(r, 32000, 2)
	ids, vals := topRaw(logits, 104)
	configs := map[string]Params{
		"greedy":    params(func(p *Params) { p.Temperature = 0 }),
		"default":   DefaultParams(),
		"top-p":     params(func(p *Params) { p.TopP = 0.9 }),
		"full":      params(nil),
		"penalties": params(func(p *Params) { p.TopK = 40; p.RepeatPenalty = 1.1; p.FrequencyPenalty = 0.1 }),
	}
	for name, p := range configs {
		t.Run(name, func(t *testing.T) {
			s := newSampler(t, p)
			for i := range 64 {
				s.Accept(int32(i * 7))
			}
			s.Sample(logits) // grow the buffers
			s.SampleCandidates(ids, vals)
			assert.Zero(t, testing.AllocsPerRun(20, func() { s.Sample(logits) }), "Sample")
			assert.Zero(t, testing.AllocsPerRun(20, func() { s.SampleCandidates(ids, vals) }), "SampleCandidates")
			assert.Zero(t, testing.AllocsPerRun(20, func() { s.Accept(5) }), "Accept")
		})
	}
}

func TestExpNeg(t *testing.T) {
	for x := -707.9; x <= 0; x += 0.00137 {
		want := math.Exp(x)
		require.InEpsilon(t, want, expNeg(x), 1e-11, "x=%v", x)
	}
	assert.Equal(t, 1.0, expNeg(0))
	assert.Zero(t, expNeg(-709))
	assert.Zero(t, expNeg(math.Inf(-1)))
}

// benchLogits imitates a confident model: N(0, 2²) over the vocabulary
// plus 20 plausible tokens lifted to 8..17, so the top token holds about
// half of the mass.
func benchLogits(n int) []float32 {
	r := rand.New(rand.NewPCG(5, 5))
	l := randomLogits(r, n, 2)
	for i := range 20 {
		l[r.IntN(n)] = 17 - float32(i)*0.45
	}
	return l
}

func BenchmarkSample(b *testing.B) {
	const vocab = 128256 // Llama 3
	logits := benchLogits(vocab)
	cases := []struct {
		name string
		p    Params
	}{
		{"greedy", params(func(p *Params) { p.Temperature = 0 })},
		{"topk40", params(func(p *Params) { p.TopK = 40 })},
		{"topp0.9", params(func(p *Params) { p.TopP = 0.9 })},
		{"default", DefaultParams()},
		{"full", params(nil)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			s := newSampler(b, c.p)
			s.Sample(logits) // grow the buffers outside the measurement
			b.ReportAllocs()
			for b.Loop() {
				s.Sample(logits)
			}
		})
	}
}
