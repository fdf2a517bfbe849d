package model_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func generate(t *testing.T, s *model.Session, prompt []int32, opts model.GenerateOptions) (string, *model.Result) {
	t.Helper()
	var sb strings.Builder
	res, err := s.Generate(context.Background(), prompt, opts, func(text string) error {
		sb.WriteString(text)
		return nil
	})
	require.NoError(t, err)
	return sb.String(), res
}

// TestGreedyStories260K reproduces llama.cpp's and llama2.c's greedy output.
func TestGreedyStories260K(t *testing.T) {
	var exp storiesExpected
	loadJSON(t, fixture.Shared(t, "models/stories260K.expected.json"), &exp)
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 256})
	s, err := m.NewSession(0)
	require.NoError(t, err)

	for _, c := range exp.GreedyWithPrompt {
		t.Run(c.Prompt, func(t *testing.T) {
			ids := m.Tokenizer.Encode(c.Prompt, true, false)
			require.Equal(t, c.PromptIDs, ids)
			s.Reset()
			text, res := generate(t, s, ids, model.GenerateOptions{MaxTokens: len(c.GeneratedIDs), Sampling: model.Greedy()})
			assert.Equal(t, c.GeneratedIDs, res.Tokens)
			assert.Equal(t, c.Output, c.Prompt+text)
			assert.Equal(t, model.FinishLength, res.Finish)
		})
	}

	t.Run("from BOS, 200 steps", func(t *testing.T) {
		s.Reset()
		text, res := generate(t, s, []int32{m.Tokenizer.BOS()}, model.GenerateOptions{MaxTokens: 200, Sampling: model.Greedy()})
		assert.Equal(t, exp.GreedyFromBOS.GeneratedIDs, res.Tokens)
		// llama2.c strips the first piece's leading space.
		assert.Equal(t, exp.GreedyFromBOS.Text, strings.TrimPrefix(text, " "))
	})
}

func TestGenerateStopStringsAndReuse(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 128})
	s, err := m.NewSession(0)
	require.NoError(t, err)
	prompt := m.Tokenizer.Encode("Once upon a time", true, false)

	full, _ := generate(t, s, prompt, model.GenerateOptions{MaxTokens: 40, Sampling: model.Greedy()})
	require.Contains(t, full, "Lily")
	cut := strings.Index(full, "Lily")

	text, res := generate(t, s, prompt, model.GenerateOptions{MaxTokens: 40, Sampling: model.Greedy(), Stop: []string{"zzz", "Lily"}})
	assert.Equal(t, full[:cut], text)
	assert.Equal(t, model.FinishStop, res.Finish)
	// The whole prompt but its last token was still cached.
	assert.Equal(t, len(prompt)-1, res.CachedTokens)

	// Sampling with a seed is reproducible.
	opts := model.GenerateOptions{MaxTokens: 30, Sampling: sample.Params{Temperature: 0.9, TopK: 40, TopP: 0.95, RepeatPenalty: 1, Seed: 7}}
	a, _ := generate(t, s, prompt, opts)
	b, _ := generate(t, s, prompt, opts)
	assert.Equal(t, a, b)
}

func TestGenerateCancelAndContextFull(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 16})
	s, err := m.NewSession(0)
	require.NoError(t, err)
	prompt := m.Tokenizer.Encode("Once upon a time", true, false)

	res, err := s.Generate(context.Background(), prompt, model.GenerateOptions{Sampling: model.Greedy()}, nil)
	require.NoError(t, err)
	assert.Equal(t, model.FinishLength, res.Finish)
	assert.Equal(t, 16, s.Len())

	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err = s.Generate(ctx, prompt, model.GenerateOptions{MaxTokens: 8, Sampling: model.Greedy()}, func(string) error {
		n++
		cancel()
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, n)

	_, err = s.Eval(context.Background(), make([]int32, 17))
	assert.True(t, errors.Is(err, model.ErrContextFull), "%v", err)
}

// nanLogits is the CPU backend whose logits come out NaN, as a model with
// NaN weights (or zero rope_freqs) produces.
type nanLogits struct{ model.Backend }

func (b nanLogits) Read(dst []float32, src model.Buf, n int) error {
	if err := b.Backend.Read(dst, src, n); err != nil {
		return err
	}
	for i := range dst[:n*src.Cols()] {
		dst[i] = float32(math.NaN())
	}
	return nil
}

func (b nanLogits) ReadTopK(ids []int32, vals []float32, src model.Buf, n, k int) error {
	full := make([]float32, n*src.Cols())
	if err := b.Read(full, src, n); err != nil {
		return err
	}
	for i := range n {
		model.TopK(ids[i*k:(i+1)*k], vals[i*k:(i+1)*k], full[i*src.Cols():(i+1)*src.Cols()])
	}
	return nil
}

// TestNonFiniteLogits: logits with nothing finite end the generation with
// ErrNonFiniteLogits, on the full-logits path and on the candidates path,
// and no token is emitted or fed back (the sampler's "no token", -1, used
// to be generated and evaluated).
func TestNonFiniteLogits(t *testing.T) {
	m, err := model.Load(fixture.BundledModel(t), nanLogits{cpu.New(cpu.Options{})}, model.Options{CtxSize: 64})
	require.NoError(t, err)
	defer m.Close()
	prompt := m.Tokenizer.Encode("Once upon a time", true, false)
	full := model.Greedy()
	full.Temperature, full.TopK = 1, 0 // the whole vocabulary
	for name, p := range map[string]sample.Params{"candidates": model.Greedy(), "full logits": full} {
		t.Run(name, func(t *testing.T) {
			s, err := m.NewSession(0)
			require.NoError(t, err)
			emitted := 0
			res, err := s.Generate(context.Background(), prompt, model.GenerateOptions{MaxTokens: 4, Sampling: p}, func(string) error {
				emitted++
				return nil
			})
			require.ErrorIs(t, err, model.ErrNonFiniteLogits)
			assert.Contains(t, err.Error(), "position 4")
			assert.Empty(t, res.Tokens)
			assert.Zero(t, emitted)
			assert.Equal(t, len(prompt), s.Len(), "nothing fed back")
		})
	}
}
