package cuda_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/gputest"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// splitModel writes a 4-layer narrowed TinyLlama shape in typ (or mix).
func splitModel(t *testing.T, opts synth.Options) string {
	t.Helper()
	p := synth.Presets["tinyllama"]
	p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Vocab = 4, 256, 8, 4, 512, 1000
	path := filepath.Join(t.TempDir(), "split.gguf")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, synth.Write(f, p, opts))
	require.NoError(t, f.Close())
	return path
}

// placementRun is what one placement computes: the prompt's logits (one
// batch over two slots), the logits of 8 single-token decode steps, and 32
// greedy tokens.
type placementRun struct {
	prompt, decode []float32
	tokens         []int32
}

func runPlacement(t *testing.T, path string, be model.Backend) placementRun {
	t.Helper()
	m, err := model.Load(path, be, model.Options{CtxSize: 96, Slots: 2})
	require.NoError(t, err)
	defer m.Close()
	var r placementRun
	ids := promptIDs(m, 40) // with the second sequence, a batch that streams (model.StreamMinRows)
	// Two sequences in one batch: continuous batching across the split.
	n := len(ids)
	b := &model.Batch{Tokens: append(append([]int32{}, ids...), ids[:n/2]...), Pos: make([]int32, n+n/2), Slot: make([]int32, n+n/2)}
	rows := make([]int32, n+n/2)
	for i := range rows {
		rows[i] = int32(i)
		if i < n {
			b.Pos[i] = int32(i)
		} else {
			b.Pos[i], b.Slot[i] = int32(i-n), 1
		}
	}
	r.prompt = make([]float32, len(rows)*m.Config.VocabSize)
	require.NoError(t, m.Forward(b, rows, r.prompt))
	r.decode = forwardEach(t, m, ids[:8], 1)

	s, err := m.NewSession(0)
	require.NoError(t, err)
	res, err := s.Generate(context.Background(), ids[:4], model.GenerateOptions{MaxTokens: 32, Sampling: model.Greedy(), IgnoreEOS: true}, nil)
	require.NoError(t, err)
	r.tokens = res.Tokens
	if sp, ok := be.(*model.Split); ok {
		t.Logf("%s: %s; %d products streamed", sp.Name(), sp.Placement(), sp.Streamed())
		if sp.Stages()[0].Layers > 0 && sp.Stages()[0].Backend.Name() == "cpu" && len(sp.Stages()) > 1 {
			assert.Positive(t, sp.Streamed(), "the prompt's products of the CPU layers ran on the GPU")
		}
	}
	return r
}

// TestSplitPlacements: on the GPU, every placement of llama.cpp's -ngl
// and --tensor-split gives the single-GPU run's greedy tokens and logits
// within the whole-model bound: all on the GPU, all on the CPU, half and
// half (output on the CPU and on the GPU), two backends on one GPU
// (--devices 0,0 --tensor-split 1,1), and the CPU with two GPU backends.
func TestSplitPlacements(t *testing.T) {
	for _, mc := range []struct {
		name string
		opts synth.Options
	}{
		{"f16", synth.Options{Type: gguf.TypeF16, Seed: 11}},
		{"q4_0", synth.Options{Type: gguf.TypeQ4_0, Seed: 11}},
		{"q4_k_m", synth.Options{Mix: synth.MixQ4_K_M, Seed: 11}},
	} {
		t.Run(mc.name, func(t *testing.T) {
			path := splitModel(t, mc.opts)
			ref := runPlacement(t, path, newGPUOwned(t))
			for _, pc := range []struct {
				name   string
				layout model.Layout
				gpus   int
			}{
				{"all on the GPU", model.Layout{GPU: []int{4}, OutputOnGPU: true}, 1},
				{"all on the CPU", model.Layout{CPU: 4}, 1},
				{"half, output on the CPU", model.Layout{CPU: 2, GPU: []int{2}}, 1},
				{"half, output on the GPU", model.Layout{CPU: 2, GPU: []int{2}, OutputOnGPU: true}, 1},
				{"devices 0,0 split 1,1", model.Layout{GPU: []int{2, 2}, OutputOnGPU: true}, 2},
				{"cpu and devices 0,0", model.Layout{CPU: 1, GPU: []int{2, 1}, OutputOnGPU: true}, 2},
			} {
				t.Run(pc.name, func(t *testing.T) {
					var gpus []model.Backend
					for range pc.gpus {
						gpus = append(gpus, newGPUOwned(t))
					}
					be, err := pc.layout.Build(cpu.New(cpu.Options{FloatActivations: true}), gpus)
					require.NoError(t, err)
					got := runPlacement(t, path, be)
					assert.Equal(t, ref.tokens, got.tokens, "greedy tokens")
					assert.Less(t, nmse(ref.prompt, got.prompt), tolModel, "prompt logits")
					assert.Less(t, nmse(ref.decode, got.decode), tolModel, "decode logits")
				})
			}
		})
	}
}

// newGPUOwned returns a CUDA backend with opts that a model will own and
// close, or ends the test through gputest.Unavailable.
func newGPUOwned(t *testing.T, opts ...func(*cuda.Options)) *cuda.Backend {
	t.Helper()
	o := options()
	for _, f := range opts {
		f(&o)
	}
	b, err := cuda.New(o)
	if err != nil {
		gputest.Unavailable(t, "no usable CUDA GPU: %v", err)
	}
	return b
}

// TestFitMemoryLimit: under a memory limit smaller than the model, Fit
// puts as many layers on the GPU as the limit holds (computed here from
// the file's tensor sizes) and the model generates what the single-GPU run
// generates; under a limit too small for one layer, Fit says so.
func TestFitMemoryLimit(t *testing.T) {
	path := splitModel(t, synth.Options{Type: gguf.TypeF16, Seed: 11})
	mo := model.Options{CtxSize: 96, Slots: 2}
	f, err := gguf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	plan, err := model.PlanFile(f, mo)
	require.NoError(t, err)
	ref := runPlacement(t, path, newGPUOwned(t))

	// Bytes of one layer on the GPU (F16 matrices and F32 norms, as in
	// the file, and an F16 KV cache) and of the embedding and classifier.
	var layer1, rest int64
	for _, ti := range f.Tensors {
		switch {
		case strings.HasPrefix(ti.Name, "blk.1."):
			layer1 += ti.Size
		case !strings.HasPrefix(ti.Name, "blk."):
			rest += ti.Size
		}
	}
	kv := plan.KV
	kv.Layers = 1
	layer1 += kv.Bytes()
	all := newGPU(t, options()).Need(plan)

	for _, c := range []struct {
		limit int64
		want  model.Layout
	}{
		{all, model.Layout{GPU: []int{4}, OutputOnGPU: true}},
		{all - 1, model.Layout{GPU: []int{4}}},
		{all - rest - 2*layer1 + layer1/2, model.Layout{CPU: 2, GPU: []int{2}}},
	} {
		g := newGPUOwned(t, func(o *cuda.Options) { o.MemoryLimit = c.limit })
		l, err := model.Fit(plan, []model.Sizer{g}, nil)
		require.NoError(t, err)
		assert.Equal(t, c.want, l, "limit %d of %d", c.limit, all)
		be, err := l.Build(cpu.New(cpu.Options{FloatActivations: true}), []model.Backend{g})
		require.NoError(t, err)
		got := runPlacement(t, path, be)
		assert.Equal(t, ref.tokens, got.tokens)
	}

	small := newGPU(t, func() cuda.Options { o := options(); o.MemoryLimit = 1 << 20; return o }())
	_, err = model.Fit(plan, []model.Sizer{small}, nil)
	var fe *model.FitError
	require.ErrorAs(t, err, &fe)
	assert.ErrorIs(t, err, model.ErrOutOfMemory)
	t.Log(err)
}
