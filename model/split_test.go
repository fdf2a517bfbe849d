package model_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tiedModel writes a small qwen2-shaped model with tied embeddings and
// Llama 3 RoPE factors, the two tensors a split must hold on more than one
// stage.
func tiedModel(t *testing.T) string {
	t.Helper()
	p := synth.Preset{Name: "tied", Arch: "qwen2", Dim: 64, Layers: 4, Heads: 4, KVHeads: 2, FFN: 96, Vocab: 300,
		Ctx: 128, RopeBase: 10000, NormEps: 1e-6, RopeFreqs: true, Tied: true}
	path := filepath.Join(t.TempDir(), "tied.gguf")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, synth.Write(f, p, synth.Options{Type: gguf.TypeQ8_0, Seed: 7, Workers: 1}))
	require.NoError(t, f.Close())
	return path
}

// splitCPU returns a split of CPU backends holding layers[i] each.
func splitCPU(t *testing.T, layers []int, output int) *model.Split {
	t.Helper()
	var stages []model.Stage
	for _, n := range layers {
		stages = append(stages, model.Stage{Backend: cpu.New(cpu.Options{Threads: 1}), Layers: n})
	}
	s, err := model.NewSplit(stages, output)
	require.NoError(t, err)
	return s
}

// generateLogits runs a prompt and then n greedy steps on m and returns
// every step's logits.
func generateLogits(t *testing.T, m *model.Model, prompt []int32, n int) [][]float32 {
	t.Helper()
	s, err := m.NewSession(0)
	require.NoError(t, err)
	logits, err := s.Eval(context.Background(), prompt)
	require.NoError(t, err)
	var out [][]float32
	for range n {
		out = append(out, append([]float32(nil), logits...))
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		logits, err = s.Eval(context.Background(), []int32{int32(best)})
		require.NoError(t, err)
	}
	return out
}

// TestSplitMatchesOneBackend: a model split over CPU backends computes
// exactly what one CPU backend computes (the same ops on the same bytes,
// only held in different places), for splits with the output on the last
// layer's stage, on the first stage (llama.cpp's -ngl below the layer
// count), on a stage of its own, and with tied embeddings and RoPE factors
// that two stages need.
func TestSplitMatchesOneBackend(t *testing.T) {
	models := map[string]string{"stories260K": fixture.BundledModel(t), "tied": tiedModel(t)}
	layouts := []struct {
		name   string
		layers map[string][]int
		output int
	}{
		{"two stages, output last", map[string][]int{"stories260K": {2, 3}, "tied": {1, 3}}, 1},
		{"two stages, output first", map[string][]int{"stories260K": {3, 2}, "tied": {2, 2}}, 0},
		{"three stages", map[string][]int{"stories260K": {1, 2, 2}, "tied": {1, 1, 2}}, 2},
		{"output alone", map[string][]int{"stories260K": {5, 0}, "tied": {4, 0}}, 1},
	}
	opts := model.Options{CtxSize: 96, CacheTypeK: model.CacheF32, CacheTypeV: model.CacheF32}
	for name, path := range models {
		one, err := model.Load(path, cpu.New(cpu.Options{Threads: 1}), opts)
		require.NoError(t, err)
		prompt := one.Tokenizer.Encode("Once upon a time, there was", true, true)
		want := generateLogits(t, one, prompt, 24)
		require.NoError(t, one.Close())
		for _, lo := range layouts {
			t.Run(name+"/"+lo.name, func(t *testing.T) {
				sp := splitCPU(t, lo.layers[name], lo.output)
				m, err := model.Load(path, sp, opts)
				require.NoError(t, err)
				defer m.Close()
				got := generateLogits(t, m, prompt, 24)
				require.Equal(t, len(want), len(got))
				for i := range want {
					require.Equal(t, want[i], got[i], "step %d", i)
				}
			})
		}
	}
}

// TestSplitCopiesAtBoundaries: activations cross between stages only
// where one stage's layers end (the residual stream, once per boundary and
// pass) and, when the classifier is elsewhere, for the rows whose logits
// are read.
func TestSplitCopiesAtBoundaries(t *testing.T) {
	path := fixture.BundledModel(t)
	cases := []struct {
		layers []int
		output int
		want   int // copies per forward pass
	}{
		{[]int{2, 3}, 1, 1},
		{[]int{3, 2}, 0, 2},
		{[]int{1, 2, 2}, 2, 2},
		{[]int{5, 0}, 1, 1},
	}
	for _, c := range cases {
		sp := splitCPU(t, c.layers, c.output)
		m, err := model.Load(path, sp, model.Options{CtxSize: 32})
		require.NoError(t, err)
		s, err := m.NewSession(0)
		require.NoError(t, err)
		_, err = s.Eval(context.Background(), []int32{1, 400, 300, 200})
		require.NoError(t, err)
		copies, bytes := sp.Transfers()
		assert.Equal(t, c.want, copies, "%v output %d: prompt pass", c.layers, c.output)
		assert.Positive(t, bytes)
		_, err = s.Eval(context.Background(), []int32{42})
		require.NoError(t, err)
		copies, _ = sp.Transfers()
		assert.Equal(t, 2*c.want, copies, "%v output %d: after a decode pass", c.layers, c.output)
		require.NoError(t, m.Close())
	}
}

func TestSplitErrors(t *testing.T) {
	_, err := model.NewSplit(nil, 0)
	assert.ErrorContains(t, err, "0 stages")
	_, err = model.NewSplit([]model.Stage{{Backend: cpu.New(cpu.Options{}), Layers: 5}}, 1)
	assert.ErrorContains(t, err, "output stage 1")
	_, err = model.NewSplit([]model.Stage{{Backend: cpu.New(cpu.Options{}), Layers: -1}}, 0)
	assert.ErrorContains(t, err, "-1 layers")
	_, err = model.NewSplit([]model.Stage{{Backend: decorated{cpu.New(cpu.Options{})}, Layers: 5}}, 0)
	assert.ErrorContains(t, err, "no Write")

	// The stages must hold the model's layers: refused before loading.
	sp := splitCPU(t, []int{2, 2}, 1)
	_, err = model.Load(fixture.BundledModel(t), sp, model.Options{CtxSize: 16})
	var oe *model.OptionError
	require.ErrorAs(t, err, &oe)
	assert.Contains(t, err.Error(), "the stages hold 4 layers, the model has 5")
}

func TestSplitPlacement(t *testing.T) {
	sp := splitCPU(t, []int{2, 3, 0}, 2)
	assert.Equal(t, "layers 0-1 on cpu, layers 2-4 on cpu, the output on cpu", sp.Placement())
	assert.Equal(t, "cpu+cpu+cpu", sp.Name())
	sp = splitCPU(t, []int{1, 4}, 0)
	assert.Equal(t, "layer 0 and the output on cpu, layers 1-4 on cpu", sp.Placement())
	assert.Equal(t, map[string]int{"cpu": 5}, model.LayersByDevice(sp, 5))
	g := &streamingCPU{Backend: cpu.New(cpu.Options{})}
	sp, err := model.NewSplit([]model.Stage{{Backend: cpu.New(cpu.Options{}), Layers: 3}, {Backend: named{g, "gpu"}, Layers: 2}}, 1)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"cpu": 3, "gpu": 2}, model.LayersByDevice(sp, 5))
	assert.Equal(t, map[string]int{"cpu": 7}, model.LayersByDevice(cpu.New(cpu.Options{}), 7))
}

// named renames a backend that can Write.
type named struct {
	*streamingCPU
	name string
}

func (n named) Name() string { return n.name }

// streamingCPU is a CPU backend that streams: it runs a product with a
// weight of another stage by loading that weight for the one product, so
// that a split of CPU backends takes the streaming path with the same
// arithmetic as the weight's own stage.
type streamingCPU struct {
	*cpu.Backend
	products int
}

func (b *streamingCPU) StreamMatMul(dst, x model.Buf, ti *gguf.TensorInfo, data []byte, n int) (bool, error) {
	w, err := b.LoadWeight(ti, data)
	if err != nil {
		return false, err
	}
	b.MatMul(dst, x, w, nil, n)
	b.products++
	return true, nil
}

// TestSplitStreamsPromptProducts: with a streaming stage, the products of
// a prompt of StreamMinRows tokens or more whose weights live on another
// stage run there (each layer's seven matrices), decode steps do not
// stream, and the logits are those of one backend.
func TestSplitStreamsPromptProducts(t *testing.T) {
	path := fixture.BundledModel(t)
	opts := model.Options{CtxSize: 96, CacheTypeK: model.CacheF32, CacheTypeV: model.CacheF32}
	one, err := model.Load(path, cpu.New(cpu.Options{Threads: 1}), opts)
	require.NoError(t, err)
	defer one.Close()
	prompt := make([]int32, model.StreamMinRows+8)
	for i := range prompt {
		prompt[i] = int32(1 + (i*37)%500)
	}
	want := generateLogits(t, one, prompt, 8)

	g := &streamingCPU{Backend: cpu.New(cpu.Options{Threads: 1})}
	sp, err := model.NewSplit([]model.Stage{{Backend: cpu.New(cpu.Options{Threads: 1}), Layers: 2}, {Backend: g, Layers: 3}}, 1)
	require.NoError(t, err)
	m, err := model.Load(path, sp, opts)
	require.NoError(t, err)
	defer m.Close()
	got := generateLogits(t, m, prompt, 8)
	for i := range want {
		require.Equal(t, want[i], got[i], "step %d", i)
	}
	assert.Equal(t, 2*7, sp.Streamed(), "the prompt's products of layers 0-1")
	assert.Equal(t, 2*7, g.products)

	// A prompt one token short of the threshold does not stream.
	s, err := m.NewSession(0)
	require.NoError(t, err)
	short := make([]int32, model.StreamMinRows-1)
	for i := range short {
		short[i] = int32(2 + (i*41)%500)
	}
	copies, _ := sp.Transfers()
	_, err = s.Eval(context.Background(), short)
	require.NoError(t, err)
	after, _ := sp.Transfers()
	assert.Greater(t, after, copies, "the short prompt ran")
	assert.Equal(t, 2*7, sp.Streamed())
}

// TestSplitEmbeds: embeddings through a split (the hidden rows read from
// the stage that holds the final norm, whichever it is), alone and in the
// steps of a generation (hidden rows and logit rows in one pass), equal
// the pooled row-by-row hidden states of one backend.
func TestSplitEmbeds(t *testing.T) {
	ids := embedPrompt(24)
	rows := hiddenRowByRow(t, ids)
	ctx := context.Background()
	for _, lo := range []struct {
		layers []int
		output int
	}{{[]int{2, 3}, 1}, {[]int{3, 2}, 0}, {[]int{5, 0}, 1}} {
		m, err := model.Load(fixture.BundledModel(t), splitCPU(t, lo.layers, lo.output),
			f32KV(model.Options{CtxSize: 64, Slots: 2}))
		require.NoError(t, err)
		e := engineOver(t, m, 5)
		for _, p := range []model.Pooling{model.PoolingMean, model.PoolingCLS, model.PoolingLast} {
			what := fmt.Sprintf("layers %v, output %d, %s", lo.layers, lo.output, p)
			gen, err := e.Submit(ctx, &model.Request{Prompt: ids[:3], Options: model.GenerateOptions{MaxTokens: 12, IgnoreEOS: true, Sampling: model.Greedy()}})
			require.NoError(t, err, what)
			job, err := e.Submit(ctx, &model.Request{Prompt: ids, Embed: &model.EmbedOptions{Pooling: p}})
			require.NoError(t, err, what)
			_, res, err := wait(t, job)
			require.NoError(t, err, what)
			_, gres, err := wait(t, gen)
			require.NoError(t, err, what)
			assert.Len(t, gres.Tokens, 12, what)
			want := poolByHand(rows, p)
			require.Len(t, res.Embedding, len(want), what)
			for i := range want {
				require.InDelta(t, want[i], res.Embedding[i], embedTol, "%s: component %d", what, i)
			}
		}
		e.Close()
		require.NoError(t, m.Close())
	}
}
