package model_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepLogits replays a generation through Model.Forward as the Batcher
// evaluates it (the prompt in one pass, then one token per pass) in the
// model's last slot and returns the logits each generated token was
// sampled from.
func stepLogits(t *testing.T, m *model.Model, prompt, gen []int32) [][]float32 {
	t.Helper()
	vocab := m.Config.VocabSize
	slot := int32(m.Slots() - 1)
	b := &model.Batch{}
	for i, id := range prompt {
		b.Tokens, b.Pos, b.Slot = append(b.Tokens, id), append(b.Pos, int32(i)), append(b.Slot, slot)
	}
	var out [][]float32
	for i := range gen {
		l := make([]float32, vocab)
		require.NoError(t, m.Forward(b, []int32{int32(b.Len() - 1)}, l))
		out = append(out, l)
		b.Tokens, b.Pos, b.Slot = []int32{gen[i]}, []int32{int32(len(prompt) + i)}, []int32{slot}
	}
	return out
}

// logSoftmax is the textbook float64 log-softmax of one row.
func logSoftmax(l []float32) []float64 {
	top := math.Inf(-1)
	for _, v := range l {
		top = math.Max(top, float64(v))
	}
	var z float64
	for _, v := range l {
		z += math.Exp(float64(v) - top)
	}
	out := make([]float64, len(l))
	for i, v := range l {
		out[i] = float64(v) - top - math.Log(z)
	}
	return out
}

func TestLogProbsMatchForward(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 128, Slots: 2})
	prompt := m.Tokenizer.Encode("Once upon a time", true, false)
	p := sample.DefaultParams()
	p.Temperature, p.Seed, p.RepeatPenalty = 1.5, 5, 1.2 // sampled tokens outside the top 1
	opts := model.GenerateOptions{MaxTokens: 24, Sampling: p, LogProbs: true, TopLogProbs: 3}

	engSession := mustSession(t, m, 0)
	eng := model.NewEngine(m, model.EngineOptions{BatcherOptions: model.BatcherOptions{Sessions: []*model.Session{engSession}}})
	j, err := eng.Submit(context.Background(), &model.Request{Prompt: prompt, Options: opts})
	require.NoError(t, err)
	var streamed []model.TokenLogProbs
	var res *model.Result
	for {
		pieces, done, r, err := j.NextPieces(context.Background())
		require.NoError(t, err)
		for _, pc := range pieces {
			streamed = append(streamed, pc.LogProbs...)
		}
		if done {
			res = r
			break
		}
	}
	eng.Close()
	require.Len(t, res.Tokens, 24)
	require.Len(t, res.LogProbs, len(res.Tokens))
	assert.Equal(t, res.LogProbs, streamed, "the pieces carry every token's log-probabilities once, in order")

	rows := stepLogits(t, m, prompt, res.Tokens)
	outsideTop := 0
	for i, lp := range res.LogProbs {
		want := logSoftmax(rows[i])
		require.Equal(t, res.Tokens[i], lp.ID)
		assert.InDelta(t, want[lp.ID], lp.LogProb, 1e-9, "token %d", i)
		order := make([]int32, len(want))
		for id := range order {
			order[id] = int32(id)
		}
		slices.SortStableFunc(order, func(a, b int32) int {
			switch {
			case rows[i][a] > rows[i][b]:
				return -1
			case rows[i][a] < rows[i][b]:
				return 1
			}
			return 0
		})
		require.Len(t, lp.Top, 3)
		for r, tp := range lp.Top {
			assert.Equal(t, order[r], tp.ID, "token %d rank %d", i, r)
			assert.InDelta(t, want[tp.ID], tp.LogProb, 1e-9)
		}
		if !slices.ContainsFunc(lp.Top, func(tp sample.TokenProb) bool { return tp.ID == lp.ID }) {
			outsideTop++
		}
	}
	assert.Positive(t, outsideTop, "some sampled token should be outside the top 3, so that its own entry is checked")

	t.Run("session generate records the same", func(t *testing.T) {
		engSession.Reset()
		_, r2 := generate(t, engSession, prompt, opts)
		assert.Equal(t, res.Tokens, r2.Tokens)
		assert.Equal(t, res.LogProbs, r2.LogProbs)
	})
	t.Run("off by default", func(t *testing.T) {
		_, r3 := generate(t, engSession, prompt, model.GenerateOptions{MaxTokens: 4, Sampling: model.Greedy()})
		assert.Nil(t, r3.LogProbs)
	})
}

func TestLogitBiasGeneration(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 64, Slots: 2})
	s := mustSession(t, m, 0)
	prompt := m.Tokenizer.Encode("Once upon a time", true, false)
	_, plain := generate(t, s, prompt, model.GenerateOptions{MaxTokens: 8, Sampling: model.Greedy()})
	first := plain.Tokens[0]

	g := model.Greedy()
	g.LogitBias = map[int32]float32{first: -100}
	_, res := generate(t, s, prompt, model.GenerateOptions{MaxTokens: 8, Sampling: g, LogProbs: true})
	assert.NotContains(t, res.Tokens, first)
	// The reported log-probabilities are of the raw logits: the forbidden
	// token's bias does not show in the top entry of the first position.
	rows := stepLogits(t, m, prompt, res.Tokens[:1])
	assert.InDelta(t, logSoftmax(rows[0])[res.Tokens[0]], res.LogProbs[0].LogProb, 1e-9)

	forced := m.Tokenizer.Encode(" dragon", false, false)[0]
	g.LogitBias = map[int32]float32{forced: 100}
	p := sample.DefaultParams()
	p.LogitBias = g.LogitBias
	for _, sp := range []sample.Params{g, p} {
		_, res = generate(t, s, prompt, model.GenerateOptions{MaxTokens: 5, Sampling: sp})
		assert.Equal(t, []int32{forced, forced, forced, forced, forced}, res.Tokens)
	}

	for _, tt := range []struct {
		name string
		opts model.GenerateOptions
		pe   bool
	}{
		{"bias outside the vocabulary", model.GenerateOptions{Sampling: sample.Params{TopP: 1, RepeatPenalty: 1, LogitBias: map[int32]float32{int32(m.Config.VocabSize): 1}}}, true},
		{"top logprobs without logprobs", model.GenerateOptions{Sampling: model.Greedy(), TopLogProbs: 2}, false},
		{"top logprobs over the limit", model.GenerateOptions{Sampling: model.Greedy(), LogProbs: true, TopLogProbs: 21}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.NewGeneration(prompt, tt.opts)
			var pe *sample.ParamError
			if tt.pe {
				require.True(t, errors.As(err, &pe), "%v", err)
				assert.Equal(t, "LogitBias", pe.Field)
				assert.Equal(t, float64(m.Config.VocabSize), pe.Value)
			} else {
				assert.ErrorIs(t, err, model.ErrInvalidRequest)
			}
		})
	}
}

func mustSession(t *testing.T, m *model.Model, slot int) *model.Session {
	t.Helper()
	s, err := m.NewSession(slot)
	require.NoError(t, err)
	return s
}
