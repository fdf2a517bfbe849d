package cuda_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/internal/gputest"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// models are the end-to-end cases: the bundled stories260K, the shared
// llama-2-tiny-random and the four transformers fixtures.
var models = []struct {
	name string
	path func(t testing.TB) string
}{
	{"stories260K", fixture.BundledModel},
	{"llama-2-tiny-random", func(t testing.TB) string { return fixture.Shared(t, "models/llama-2-tiny-random.gguf") }},
	{"llama-linear", hfFixture("llama-linear")},
	{"llama3", hfFixture("llama3")},
	{"qwen2", hfFixture("qwen2")},
	{"qwen3", hfFixture("qwen3")},
	// Quantized weights kept quantized on the GPU (quantFirst on): the
	// shared Q8_0 stories260K (its ffn_down rows of 172 are not whole
	// blocks: those are converted to FP16), synthetic models in llama.cpp's
	// Q4_K_M and Q5_K_M mixes (Q4_K/Q5_K with Q6_K attn_v, ffn_down and
	// output), and one synthetic model for each other type the kernels read.
	{"stories260K-q8_0", func(t testing.TB) string { return fixture.Shared(t, "models/tinyllamas-stories-260k-q8_0.gguf") }},
	{"synthetic-q4_k_m", synthMix(synth.MixQ4_K_M)},
	{"synthetic-q5_k_m", synthMix(synth.MixQ5_K_M)},
	{"synthetic-q4_0", synthQuant(gguf.TypeQ4_0)},
	{"synthetic-q4_1", synthQuant(gguf.TypeQ4_1)},
	{"synthetic-q5_0", synthQuant(gguf.TypeQ5_0)},
	{"synthetic-q5_1", synthQuant(gguf.TypeQ5_1)},
	{"synthetic-iq4_nl", synthQuant(gguf.TypeIQ4_NL)},
	{"synthetic-q2_k", synthQuant(gguf.TypeQ2_K)},
	{"synthetic-q3_k", synthQuant(gguf.TypeQ3_K)},
}

// quantFirst is the index in models of the first quantized model.
const quantFirst = 6

// synthQuant returns a 2-layer TinyLlama-shaped model (narrowed; rows of
// 256 and 512, whole K-quant super-blocks) with its matrices in typ,
// written once per test.
func synthQuant(typ gguf.Type) func(testing.TB) string {
	return synthModel(typ.String(), synth.Options{Type: typ, Seed: 5})
}

// synthMix is synthQuant for one of llama.cpp's mixes.
func synthMix(mix synth.Mix) func(testing.TB) string {
	return synthModel(mix.String(), synth.Options{Mix: mix, Seed: 5})
}

// synthModel writes the model of synthQuant with opts; edits, if any,
// change its shape first.
func synthModel(name string, opts synth.Options, edits ...func(*synth.Preset)) func(testing.TB) string {
	return func(t testing.TB) string {
		p := synth.Presets["tinyllama"]
		p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Vocab = 2, 256, 8, 4, 512, 1000
		for _, e := range edits {
			e(&p)
		}
		path := filepath.Join(t.TempDir(), "synth-"+name+".gguf")
		f, err := os.Create(path)
		require.NoError(t, err)
		require.NoError(t, synth.Write(f, p, opts))
		require.NoError(t, f.Close())
		return path
	}
}

func hfFixture(name string) func(testing.TB) string {
	return func(testing.TB) string { return filepath.Join("../testdata/hf", name+".gguf") }
}

func loadGPU(t testing.TB, path string, mo model.Options, opts cuda.Options) *model.Model {
	t.Helper()
	be := newGPU(t, opts)
	m, err := model.Load(path, be, mo)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func loadCPU(t testing.TB, path string, mo model.Options) *model.Model {
	t.Helper()
	m, err := model.Load(path, cpu.New(cpu.Options{FloatActivations: true}), mo) // as the GPU's products
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// promptIDs returns a deterministic prompt of n tokens.
func promptIDs(m *model.Model, n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32((i*7919 + 13) % m.Config.VocabSize)
	}
	if m.Tokenizer.AddBOS() {
		ids[0] = m.Tokenizer.BOS()
	}
	return ids
}

// forwardAll runs ids as one batch of slot 0 and returns every row's
// logits.
func forwardAll(t *testing.T, m *model.Model, ids []int32) []float32 {
	n := len(ids)
	b := &model.Batch{Tokens: ids, Pos: make([]int32, n), Slot: make([]int32, n)}
	rows := make([]int32, n)
	for i := range n {
		b.Pos[i], rows[i] = int32(i), int32(i)
	}
	out := make([]float32, n*m.Config.VocabSize)
	require.NoError(t, m.Forward(b, rows, out))
	return out
}

// forwardEach runs ids one token per forward pass in slot, returning the
// logits after each.
func forwardEach(t *testing.T, m *model.Model, ids []int32, slot int32) []float32 {
	vocab := m.Config.VocabSize
	out := make([]float32, len(ids)*vocab)
	for i, id := range ids {
		b := &model.Batch{Tokens: []int32{id}, Pos: []int32{int32(i)}, Slot: []int32{slot}}
		require.NoError(t, m.Forward(b, []int32{0}, out[i*vocab:(i+1)*vocab]))
	}
	return out
}

// TestModelLogits compares GPU and CPU logits for every position of a
// prompt, processed as one batch (the prefill path; above 16 tokens the
// GEMM and tiled attention) and token by token (decode: matvec kernels,
// split attention, graphs).
func TestModelLogits(t *testing.T) {
	for _, mc := range models {
		t.Run(mc.name, func(t *testing.T) {
			mo := model.Options{CtxSize: 64, Slots: 2}
			path := mc.path(t)
			mc2 := loadCPU(t, path, mo)
			mg := loadGPU(t, path, mo, options())
			vocab := mc2.Config.VocabSize
			for _, n := range []int{5, 40} {
				ids := promptIDs(mc2, n)
				want := forwardAll(t, mc2, ids)
				got := forwardAll(t, mg, ids)
				worst := 0.0
				for i := range n {
					worst = max(worst, nmse(want[i*vocab:(i+1)*vocab], got[i*vocab:(i+1)*vocab]))
				}
				assert.LessOrEqual(t, worst, tolModel, "batch of %d: worst row NMSE", n)
				t.Logf("batch of %d: worst row NMSE %.2g", n, worst)
			}
			ids := promptIDs(mc2, 24)
			want := forwardEach(t, mc2, ids, 1)
			got := forwardEach(t, mg, ids, 1)
			worst := 0.0
			for i := range ids {
				worst = max(worst, nmse(want[i*vocab:(i+1)*vocab], got[i*vocab:(i+1)*vocab]))
			}
			assert.LessOrEqual(t, worst, tolModel, "token by token: worst row NMSE")
			t.Logf("token by token: worst row NMSE %.2g", worst)
		})
	}
}

// TestGreedyQuantized: greedy decoding of the quantized models on the GPU
// (weights kept quantized) chooses the CPU's tokens for 32 steps.
func TestGreedyQuantized(t *testing.T) {
	for _, mc := range models[quantFirst:] {
		t.Run(mc.name, func(t *testing.T) {
			path := mc.path(t)
			mo := model.Options{CtxSize: 64}
			var got [2][]int32
			for i, m := range []*model.Model{loadCPU(t, path, mo), loadGPU(t, path, mo, options())} {
				s, err := m.NewSession(0)
				require.NoError(t, err)
				res, err := s.Generate(context.Background(), promptIDs(m, 4), model.GenerateOptions{MaxTokens: 32, Sampling: model.Greedy(), IgnoreEOS: true}, nil)
				require.NoError(t, err)
				got[i] = res.Tokens
			}
			assert.Equal(t, got[0], got[1], "greedy tokens: CPU, GPU")
		})
	}
}

// TestGreedyStories260K reproduces llama.cpp's and llama2.c's greedy
// output on the GPU (sampling through the GPU top-k path).
func TestGreedyStories260K(t *testing.T) {
	var exp struct {
		GreedyFromBOS struct {
			Text         string  `json:"text"`
			GeneratedIDs []int32 `json:"generated_ids"`
		} `json:"greedy_from_bos_200_steps"`
		GreedyWithPrompt []struct {
			Prompt       string  `json:"prompt"`
			GeneratedIDs []int32 `json:"generated_ids"`
			Output       string  `json:"output_text_including_prompt"`
		} `json:"greedy_with_prompt"`
	}
	data, err := os.ReadFile(fixture.Shared(t, "models/stories260K.expected.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &exp))
	m := loadGPU(t, fixture.BundledModel(t), model.Options{CtxSize: 256}, options())
	s, err := m.NewSession(0)
	require.NoError(t, err)
	gen := func(prompt []int32, n int) (string, *model.Result) {
		var sb strings.Builder
		s.Reset()
		res, err := s.Generate(context.Background(), prompt, model.GenerateOptions{MaxTokens: n, Sampling: model.Greedy()},
			func(text string) error { sb.WriteString(text); return nil })
		require.NoError(t, err)
		return sb.String(), res
	}
	for _, c := range exp.GreedyWithPrompt {
		t.Run(c.Prompt, func(t *testing.T) {
			text, res := gen(m.Tokenizer.Encode(c.Prompt, true, false), len(c.GeneratedIDs))
			assert.Equal(t, c.GeneratedIDs, res.Tokens)
			assert.Equal(t, c.Output, c.Prompt+text)
		})
	}
	t.Run("from BOS, 200 steps", func(t *testing.T) {
		text, res := gen([]int32{m.Tokenizer.BOS()}, 200)
		assert.Equal(t, exp.GreedyFromBOS.GeneratedIDs, res.Tokens)
		assert.Equal(t, exp.GreedyFromBOS.Text, strings.TrimPrefix(text, " "))
	})
	t.Run("seeded top-k sampling matches the CPU", func(t *testing.T) {
		mc := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 256})
		opts := model.GenerateOptions{MaxTokens: 60, Sampling: sample.Params{Temperature: 0.9, TopK: 40, TopP: 0.95, RepeatPenalty: 1, Seed: 7}}
		var texts [2]string
		for i, mm := range []*model.Model{mc, m} {
			ss, err := mm.NewSession(0)
			require.NoError(t, err)
			var sb strings.Builder
			_, err = ss.Generate(context.Background(), mm.Tokenizer.Encode("Once upon a time", true, false), opts,
				func(text string) error { sb.WriteString(text); return nil })
			require.NoError(t, err)
			texts[i] = sb.String()
		}
		assert.Equal(t, texts[0], texts[1])
	})
}

// TestGraphReplay: decoding through captured graphs gives exactly what
// launching every kernel gives, and without fusion within rounding.
func TestGraphReplay(t *testing.T) {
	path := filepath.Join("../testdata/hf", "qwen2.gguf")
	mo := model.Options{CtxSize: 64}
	ref := loadGPU(t, path, mo, func() cuda.Options { o := options(); o.NoGraphs = true; return o }())
	unfused := loadGPU(t, path, mo, func() cuda.Options { o := options(); o.NoGraphs, o.NoFusion = true, true; return o }())
	graphs := loadGPU(t, path, mo, options())
	ids := promptIDs(ref, 30)
	want := forwardEach(t, ref, ids, 0)
	got := forwardEach(t, graphs, ids, 0)
	assert.Equal(t, want, got, "graph replay differs from plain launches")
	gb := graphs.Backend().(*cuda.Backend)
	assert.Positive(t, gb.Graphs(), "no graph was captured")
	t.Logf("%d graphs captured", gb.Graphs())
	e := nmse(want, forwardEach(t, unfused, ids, 0))
	assert.LessOrEqual(t, e, 1e-10, "fused vs unfused kernels")
	t.Logf("fused vs unfused NMSE %.2g", e)
}

// TestBatchedDecode: one forward pass over one token in each of four
// slots gives what four separate passes give.
func TestBatchedDecode(t *testing.T) {
	for _, name := range []string{"llama3", "qwen3"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("../testdata/hf", name+".gguf")
			mo := model.Options{CtxSize: 64, Slots: 4}
			mb := loadGPU(t, path, mo, options())
			ms := loadGPU(t, path, mo, options())
			vocab := mb.Config.VocabSize
			next := make([]int32, 4)
			lens := make([]int32, 4)
			for slot := range 4 {
				ids := promptIDs(mb, 3+5*slot)
				forwardEach(t, mb, ids, int32(slot))
				forwardEach(t, ms, ids, int32(slot))
				lens[slot] = int32(len(ids))
				next[slot] = int32(100 + slot)
			}
			b := &model.Batch{Tokens: next, Pos: lens, Slot: []int32{0, 1, 2, 3}}
			batched := make([]float32, 4*vocab)
			require.NoError(t, mb.Forward(b, []int32{0, 1, 2, 3}, batched))
			for slot := range 4 {
				one := make([]float32, vocab)
				bb := &model.Batch{Tokens: next[slot : slot+1], Pos: lens[slot : slot+1], Slot: []int32{int32(slot)}}
				require.NoError(t, ms.Forward(bb, []int32{0}, one))
				e := nmse(one, batched[slot*vocab:(slot+1)*vocab])
				assert.LessOrEqual(t, e, 1e-12, "slot %d", slot)
			}
		})
	}
}

// TestOutOfMemory: a model that cannot fit fails before allocating, says
// how much it needs and how much is free, and leaves nothing allocated.
func TestOutOfMemory(t *testing.T) {
	be := newGPU(t, options())
	before := be.MemoryUsage()
	_, err := model.Load(fixture.BundledModel(t), be, model.Options{CtxSize: 1 << 20, Slots: 1 << 10, BatchSize: 1 << 10})
	require.Error(t, err)
	var oom *cuda.OutOfMemoryError
	require.True(t, errors.As(err, &oom), "%v", err)
	assert.True(t, errors.Is(err, cudadrv.ErrOutOfMemory))
	assert.Greater(t, oom.Need, oom.Free)
	assert.Contains(t, err.Error(), "is free")
	t.Log(err)
	after := be.MemoryUsage()
	assert.Equal(t, before.Total(), after.Total(), "bytes held after the failed load")
}

// TestMemoryUsage: what the backend holds is the FP16 weights, the KV
// cache, the activations and a small scratch.
func TestMemoryUsage(t *testing.T) {
	path := filepath.Join("../testdata/hf", "llama3.gguf")
	m := loadGPU(t, path, model.Options{CtxSize: 128, Slots: 2}, options())
	u := m.Backend().(model.MemoryReporter).MemoryUsage()
	c := m.Config
	kv := int64(2 * c.Layers * 2 * 128 * (c.KVDim() + c.VDim()))
	assert.Equal(t, kv, u.KV)
	assert.Positive(t, u.Weights)
	assert.Positive(t, u.DeviceTotal)
	t.Logf("%+v", u)
	t.Log(m.Backend().(*cuda.Backend).Describe())
}

// fillDevice allocates the free memory of the GPU, in blocks of 1 GiB down
// to 256 KiB, from ctx's thread (the process's primary context, which
// the backends share), and returns the function that frees it.
func fillDevice(t *testing.T, ctx *cudadrv.Context) (release func()) {
	t.Helper()
	var blocks []cudadrv.DevicePtr
	release = func() {
		require.NoError(t, ctx.Do(func() error {
			var errs []error
			for _, p := range blocks {
				errs = append(errs, cudadrv.MemFree(p))
			}
			blocks = nil
			return errors.Join(errs...)
		}))
	}
	err := ctx.Do(func() error {
		for size := 1 << 30; size >= 256<<10; size /= 2 {
			for {
				p, err := cudadrv.MemAlloc(size)
				if errors.Is(err, cudadrv.ErrOutOfMemory) {
					break
				}
				if err != nil {
					return err
				}
				blocks = append(blocks, p)
			}
		}
		free, total, err := cudadrv.MemGetInfo()
		t.Logf("device filled with %d blocks: %d of %d bytes free", len(blocks), free, total)
		return err
	})
	if err != nil {
		release()
		t.Fatal(err)
	}
	return release
}

// TestStepOutOfMemoryGPU: a step whose scratch does not fit in the device's
// memory fails alone. After a first decode step, the device is filled and
// a step of 16 tokens, whose attention partials and top-k scratch (4 MiB
// over a 32000-token vocabulary) are larger than the first step's, fails
// with cudadrv.ErrOutOfMemory while the backend stays usable (Err nil);
// once the memory is freed, the same batch gives the CPU's logits.
func TestStepOutOfMemoryGPU(t *testing.T) {
	// It fills the whole device; whatever else runs in the process would
	// meet the same wall, so it runs in a process of its own.
	if !gputest.Isolate(t) {
		return
	}
	p := synth.Presets["tinyllama"]
	p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Ctx = 2, 64, 4, 2, 96, 64
	path := filepath.Join(t.TempDir(), "tiny-32000.gguf")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, synth.Write(f, p, synth.Options{Type: gguf.TypeF16, Seed: 3}))
	require.NoError(t, f.Close())

	mo := model.Options{CtxSize: 64}
	mg := loadGPU(t, path, mo, options())
	mc := loadCPU(t, path, mo)
	ctx := gputest.Context(t)
	vocab := mc.Config.VocabSize
	ids := promptIDs(mc, 17)
	first := nmse(forwardEach(t, mc, ids[:1], 0), forwardEach(t, mg, ids[:1], 0))
	require.LessOrEqual(t, first, tolModel, "first step")

	n := len(ids) - 1
	long := &model.Batch{Tokens: ids[1:], Pos: make([]int32, n), Slot: make([]int32, n)}
	rows := make([]int32, n)
	for i := range n {
		long.Pos[i], rows[i] = int32(1+i), int32(i)
	}
	k := model.MaxTopK
	topIDs, topVals := make([]int32, n*k), make([]float32, n*k)
	release := fillDevice(t, ctx)
	err = mg.ForwardTopK(long, rows, k, topIDs, topVals)
	release()
	require.Error(t, err, "a step that cannot fit")
	assert.ErrorIs(t, err, cudadrv.ErrOutOfMemory)
	assert.NoError(t, mg.Err(), "an allocation failure is not sticky")
	t.Log(err)

	want := make([]float32, n*vocab)
	require.NoError(t, mc.Forward(long, rows, want))
	got := make([]float32, n*vocab)
	require.NoError(t, mg.Forward(long, rows, got), "the step after")
	worst := 0.0
	for i := range n {
		worst = max(worst, nmse(want[i*vocab:(i+1)*vocab], got[i*vocab:(i+1)*vocab]))
	}
	assert.LessOrEqual(t, worst, tolModel, "worst row NMSE of the step after")
	t.Logf("step after: worst row NMSE %.2g", worst)
	require.NoError(t, mg.ForwardTopK(long, rows, k, topIDs, topVals), "the failed step, with memory")
	assert.NoError(t, mg.Err())
}

// TestCopySlotGPU: after copying the first positions of slot 0 over
// another text in slot 2, the next token gives the same logits in both
// slots, bit for bit (same kernels over the same cache rows); and requests
// of one prompt submitted together (which share it through CopySlot)
// generate what a Session alone generates.
func TestCopySlotGPU(t *testing.T) {
	m := loadGPU(t, fixture.BundledModel(t), model.Options{CtxSize: 128, Slots: 3}, options())
	require.True(t, m.CanCopySlots())
	ids := m.Tokenizer.Encode("Lily and Tom went to the park to play", true, true)
	n := len(ids) - 1
	other := m.Tokenizer.Encode("The big red ball rolled down the hill and far away", true, true)
	prefill := func(slot int32, toks []int32) {
		b := &model.Batch{}
		for i, id := range toks {
			b.Tokens, b.Pos, b.Slot = append(b.Tokens, id), append(b.Pos, int32(i)), append(b.Slot, slot)
		}
		require.NoError(t, m.Forward(b, nil, nil))
	}
	prefill(0, ids[:n])
	prefill(2, other)
	require.NoError(t, m.CopySlot(2, 0, n))
	vocab := m.Config.VocabSize
	last := func(slot int32) []float32 {
		out := make([]float32, vocab)
		b := &model.Batch{Tokens: ids[n:], Pos: []int32{int32(n)}, Slot: []int32{slot}}
		require.NoError(t, m.Forward(b, []int32{0}, out))
		return out
	}
	assert.Equal(t, last(0), last(2))

	opts := model.GenerateOptions{MaxTokens: 24, IgnoreEOS: true, Sampling: model.Greedy()}
	s, err := m.NewSession(0)
	require.NoError(t, err)
	var want strings.Builder
	_, err = s.Generate(context.Background(), ids, opts, func(text string) error { want.WriteString(text); return nil })
	require.NoError(t, err)
	s.Reset()
	eo := model.EngineOptions{}
	for i := range 3 {
		ses, err := m.NewSession(i)
		require.NoError(t, err)
		eo.Sessions = append(eo.Sessions, ses)
	}
	e := model.NewEngine(m, eo)
	defer e.Close()
	reqs := []*model.Request{{Prompt: ids, Options: opts}, {Prompt: ids, Options: opts}, {Prompt: ids, Options: opts}}
	jobs, err := e.SubmitAll(context.Background(), reqs)
	require.NoError(t, err)
	for i, j := range jobs {
		text, _, err := j.Wait(context.Background())
		require.NoError(t, err)
		assert.Equal(t, want.String(), text, "request %d", i)
	}
}

// TestCacheTypesGPU compares the GPU with the CPU backend for each cache
// type (and mixed pairs) on a synthetic model with heads of 64: logits of
// a 40-token prompt in one batch (prefill attention) and of 24 tokens one
// at a time (split decode attention) within tolModel for f32/f16 caches
// and 1e-3 with a quantized half (both backends quantize with ggml's
// reference rounding, but from keys and values computed in a different
// order, so a value at a rounding boundary may land one level apart), and
// 32 greedy tokens equal.
func TestCacheTypesGPU(t *testing.T) {
	path := synthModel("hd64", synth.Options{Type: gguf.TypeF16, Seed: 9}, func(p *synth.Preset) { p.Heads, p.KVHeads = 4, 2 })(t)
	pairs := [][2]model.CacheType{
		{model.CacheF32, model.CacheF32}, {model.CacheF16, model.CacheF16}, {model.CacheQ8_0, model.CacheQ8_0},
		{model.CacheQ4_0, model.CacheQ4_0}, {model.CacheF16, model.CacheQ8_0}, {model.CacheQ8_0, model.CacheF16},
		{model.CacheQ4_0, model.CacheQ8_0}, {model.CacheF32, model.CacheQ4_0},
	}
	for _, pr := range pairs {
		t.Run(fmt.Sprintf("k=%s,v=%s", pr[0], pr[1]), func(t *testing.T) {
			mo := model.Options{CtxSize: 64, CacheTypeK: pr[0], CacheTypeV: pr[1]}
			mc := loadCPU(t, path, mo)
			require.Equal(t, 64, mc.Config.HeadDim)
			mg := loadGPU(t, path, mo, options())
			tol := tolModel
			if pr[0].BlockSize() > 1 || pr[1].BlockSize() > 1 {
				tol = 1e-3
			}
			vocab := mc.Config.VocabSize
			worstOf := func(want, got []float32, rows int) float64 {
				worst := 0.0
				for i := range rows {
					worst = max(worst, nmse(want[i*vocab:(i+1)*vocab], got[i*vocab:(i+1)*vocab]))
				}
				return worst
			}
			ids := promptIDs(mc, 40)
			w := worstOf(forwardAll(t, mc, ids), forwardAll(t, mg, ids), len(ids))
			assert.LessOrEqual(t, w, tol, "batch of 40: worst row NMSE")
			t.Logf("batch of 40: worst row NMSE %.2g", w)
			ids = promptIDs(mc, 24)
			w = worstOf(forwardEach(t, mc, ids, 0), forwardEach(t, mg, ids, 0), len(ids))
			assert.LessOrEqual(t, w, tol, "token by token: worst row NMSE")
			t.Logf("token by token: worst row NMSE %.2g", w)

			var got [2][]int32
			for i, m := range []*model.Model{mc, mg} {
				s, err := m.NewSession(0)
				require.NoError(t, err)
				res, err := s.Generate(context.Background(), promptIDs(m, 4), model.GenerateOptions{MaxTokens: 32, Sampling: model.Greedy(), IgnoreEOS: true}, nil)
				require.NoError(t, err)
				got[i] = res.Tokens
			}
			assert.Equal(t, got[0], got[1], "greedy tokens: CPU, GPU")
		})
	}
}

// BenchmarkDecodeAtDepth times whole decode steps (one token, then the
// top-k of its logits, as generation runs them: a replayed CUDA graph) of
// the Llama 2 7B shape with synthetic F16 weights at position 4000 of a
// 4096-position cache, per cache type, after a 4000-token prompt filled
// the cache. It reports tok/s and the KV cache's bytes (both halves, all
// layers), and needs about 14 GB of disk for the model file and 18 GB of
// GPU memory.
func BenchmarkDecodeAtDepth(b *testing.B) {
	newGPU(b, options()).Close() // skip before writing 13 GB without a GPU
	const depth, ctxLen = 4000, 4096
	path := filepath.Join(b.TempDir(), "llama2-7b-f16.gguf")
	f, err := os.Create(path)
	require.NoError(b, err)
	require.NoError(b, synth.Write(f, synth.Presets["llama2-7b"], synth.Options{Type: gguf.TypeF16, Seed: 1}))
	require.NoError(b, f.Close())
	for _, ct := range []model.CacheType{model.CacheF16, model.CacheQ8_0, model.CacheQ4_0} {
		b.Run(fmt.Sprintf("7b/pos=%d,ctx=%d,type=%s", depth, ctxLen, ct), func(b *testing.B) {
			m := loadGPU(b, path, model.Options{CtxSize: ctxLen, BatchSize: 512, CacheTypeK: ct, CacheTypeV: ct}, options())
			for p0 := 0; p0 < depth; p0 += 512 {
				n := min(512, depth-p0)
				batch := &model.Batch{Tokens: make([]int32, n), Pos: make([]int32, n), Slot: make([]int32, n)}
				for i := range n {
					batch.Tokens[i], batch.Pos[i] = int32((p0+i)*7919%m.Config.VocabSize), int32(p0+i)
				}
				require.NoError(b, m.Forward(batch, nil, nil))
			}
			step := &model.Batch{Tokens: []int32{42}, Pos: []int32{depth}, Slot: []int32{0}}
			ids, vals := make([]int32, 40), make([]float32, 40)
			require.NoError(b, m.ForwardTopK(step, []int32{0}, 40, ids, vals)) // captures the graph
			steps := 0
			start := time.Now()
			for b.Loop() {
				if err := m.ForwardTopK(step, []int32{0}, 40, ids, vals); err != nil {
					b.Fatal(err)
				}
				steps++
			}
			b.ReportMetric(float64(steps)/time.Since(start).Seconds(), "tok/s")
			b.ReportMetric(float64(m.KV().Bytes())/(1<<20), "KV-MiB")
		})
	}
}
