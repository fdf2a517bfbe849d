package cuda

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/m40llm/m40llm/ptx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// synthModel writes a small random model of a synth preset's architecture
// (layers layers, a 600-token vocabulary, FP16 weights) and returns its
// path.
func synthModel(t testing.TB, preset string, layers int) string {
	t.Helper()
	return synthModelOf(t, preset, layers, gguf.TypeF16)
}

// synthModelOf is synthModel with the matrices in typ.
func synthModelOf(t testing.TB, preset string, layers int, typ gguf.Type) string {
	t.Helper()
	p, ok := synth.Presets[preset]
	require.True(t, ok, preset)
	p.Layers, p.Vocab = layers, 600
	if p.HeadDim > 0 {
		p.HeadDim = 32
	}
	p.Dim, p.FFN = p.Heads*16, 96
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d-%s.gguf", preset, layers, typ))
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, synth.Write(f, p, synth.Options{Type: typ, Seed: 1}))
	require.NoError(t, f.Close())
	return path
}

// decodeK is the top-k of the decode steps below, as a sampler asks.
const decodeK = 40

// prefilled loads path on b, its device keeping the steps it runs, and
// runs a 3-token prompt.
func prefilled(t testing.TB, b *Backend, path string) (*model.Model, *stepLog) {
	t.Helper()
	log := logSteps(b)
	m, err := model.Load(path, b, model.Options{CtxSize: 16})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	prompt := &model.Batch{Tokens: []int32{1, 300, 301}, Pos: []int32{0, 1, 2}, Slot: []int32{0, 0, 0}}
	require.NoError(t, m.Forward(prompt, nil, nil))
	return m, log
}

// decodeBatch is the token after the prompt of prefilled.
var decodeBatch = &model.Batch{Tokens: []int32{302}, Pos: []int32{3}, Slot: []int32{0}}

// decodeStep decodes decodeBatch through ForwardTopK, as generation does,
// and returns the records of that step as the device ran them.
func decodeStep(t *testing.T, m *model.Model, log *stepLog) []op {
	t.Helper()
	before := len(log.steps)
	ids, vals := make([]int32, decodeK), make([]float32, decodeK)
	require.NoError(t, m.ForwardTopK(decodeBatch, []int32{0}, decodeK, ids, vals))
	require.Len(t, log.steps, before+1, "a decode step is submitted once")
	return log.steps[before]
}

// kernels counts a step's records by kernel, matvec by its number of
// products ("matvec_f16×3" for Q, K and V in one launch).
func kernels(ops []op) map[string]int {
	m := map[string]int{}
	for _, o := range ops {
		name := o.kernel()
		if mv, ok := o.(matVec); ok {
			name = fmt.Sprintf("%s×%d", name, mv.outs)
		}
		m[name]++
	}
	return m
}

// layers is the depth of the models of TestDecodeKernels.
const layers = 2

// Kernels of a decode step (one token, then the top-k of its logits) of the
// llama-family forward pass, fused as record fuses them: embed, then per
// layer
//
//	add_rmsnorm (rmsnorm in layer 0), matvec Q·K·V, [head_rmsnorm q, k,]
//	rope_append (after the step's one rope_table), attn_decode, matvec O,
//	add_rmsnorm, gateup, matvec down,
//
// then the last residual add, the gather of the output row, its norm, the
// classifier and top-k.
var fusedDecode = map[string]int{
	"embed_f16":       1,
	"rmsnorm_f32":     2,            // layer 0's attention norm (after the embedding), the output norm
	"add_rmsnorm_f32": 2*layers - 1, // two per layer: the residual add and the next norm
	"matvec_f16×3":    layers,       // Q, K and V (with qwen2's biases)
	"rope_table":      1,
	"rope_append":     layers, // rope q, rope k, KV store
	"attn_decode":     layers,
	"matvec_f16×1":    2*layers + 1, // attention output and down per layer, the classifier
	"gateup_f16":      layers,       // gate, up and SwiGLU
	"add_f32":         1,            // the last layer's residual (the gather follows)
	"gather_rows_f32": 1,
	"topk_pass":       1,
}

// unfusedDecode is the same step with Options.NoFusion: one kernel per op.
var unfusedDecode = map[string]int{
	"embed_f16":       1,
	"rmsnorm_f32":     2*layers + 1,
	"matvec_f16×1":    7*layers + 1, // q, k, v, o, gate, up, down; the classifier
	"rope_table":      1,
	"rope_f32":        2 * layers,
	"kv_append":       layers,
	"attn_decode":     layers,
	"add_f32":         2 * layers,
	"swiglu_f32":      layers,
	"gather_rows_f32": 1,
	"topk_pass":       1,
}

// with returns m plus extra.
func with(m map[string]int, extra map[string]int) map[string]int {
	m = maps.Clone(m)
	for k, v := range extra {
		m[k] += v
	}
	return m
}

// TestDecodeKernels pins the kernels of a decode step of each architecture
// the project runs, fused and with NoFusion, on the fake device (CI) and on
// the GPU: losing a fusion, or adding a kernel to the step, fails it.
// Every record of these steps is one kernel launch (top-k over 600 logits
// is one pass).
func TestDecodeKernels(t *testing.T) {
	qkNorms := map[string]int{"head_rmsnorm_f32": 2 * layers}
	cases := []struct {
		arch, preset    string
		fused, unfused  map[string]int
		launches, plain int
	}{
		{"llama", "tinyllama", fusedDecode, unfusedDecode, 23, 38},
		{"llama3-rope-freqs", "llama3-8b", fusedDecode, unfusedDecode, 23, 38},
		{"qwen2-qkv-bias", "qwen2.5-0.5b", fusedDecode, unfusedDecode, 23, 38},
		{"qwen3-qk-norm", "qwen3-0.6b", with(fusedDecode, qkNorms), with(unfusedDecode, qkNorms), 27, 42},
	}
	for _, c := range cases {
		t.Run(c.arch, func(t *testing.T) {
			path := synthModel(t, c.preset, layers)
			for _, dev := range testDevices {
				for _, noFusion := range []bool{false, true} {
					name, want, launches := dev.name, c.fused, c.launches
					if noFusion {
						name, want, launches = dev.name+"/NoFusion", c.unfused, c.plain
					}
					t.Run(name, func(t *testing.T) {
						m, log := prefilled(t, dev.new(t, Options{NoFusion: noFusion}), path)
						step := decodeStep(t, m, log)
						assert.Equal(t, want, kernels(step), "kernels of the decode step")
						assert.Equal(t, launches, len(step), "kernel launches of the decode step")
						for _, o := range step {
							if tk, ok := o.(topK); ok {
								assert.Zero(t, ptx.TopKScratch(tk.rows, tk.cols, tk.k), "top-k in one pass")
							}
						}
						t.Logf("%d launches: %v", len(step), kernels(step))
					})
				}
			}
		})
	}
}

// quantDecode is the decode step of a model whose matrices are all of one
// quantized type (name: "q8_0"): the same launches as the fused FP16 step,
// with the quantized kernels (QKV in one matvec_q launch, gate/up with
// SwiGLU in gateup_q) and the embedding row dequantized.
func quantDecode(name string) map[string]int {
	return map[string]int{
		"embed_" + name:   1,
		"rmsnorm_f32":     2,
		"add_rmsnorm_f32": 2*layers - 1,
		"matvec_" + name:  3*layers + 1, // qkv, o, down; the classifier
		"gateup_" + name:  layers,
		"rope_table":      1,
		"rope_append":     layers,
		"attn_decode":     layers,
		"add_f32":         1,
		"gather_rows_f32": 1,
		"topk_pass":       1,
	}
}

// q4KMDecode is the decode step of a 2-layer Q4_K_M model (rows of 256
// and 512): layer 1 and the classifier have Q6_K attn_v, ffn_down and
// output, so that layer's V product is a launch of its own (products fuse
// only within one type).
var q4KMDecode = map[string]int{
	"embed_q4_k":      1,
	"rmsnorm_f32":     2,
	"add_rmsnorm_f32": 3,
	"matvec_q4_k":     5, // layer 0: qkv, o, down; layer 1: qk, o
	"matvec_q6_k":     3, // layer 1: v, down; the classifier
	"gateup_q4_k":     2,
	"rope_table":      1,
	"rope_append":     2,
	"attn_decode":     2,
	"add_f32":         1,
	"gather_rows_f32": 1,
	"topk_pass":       1,
}

// TestDecodeKernelsQuantized pins the decode step of Q8_0, Q4_0 and Q4_K_M
// models: their matrices stay quantized (matvec_q, gateup_q, embed_q), on
// the fake device and on the GPU.
func TestDecodeKernelsQuantized(t *testing.T) {
	require.Equal(t, 2, layers, "q4KMDecode counts two layers")
	t.Run("q4_k_m", func(t *testing.T) {
		p := synth.Presets["tinyllama"]
		p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Vocab = layers, 256, 8, 4, 512, 600
		path := filepath.Join(t.TempDir(), "q4_k_m.gguf")
		f, err := os.Create(path)
		require.NoError(t, err)
		require.NoError(t, synth.Write(f, p, synth.Options{Mix: synth.MixQ4_K_M, Seed: 1}))
		require.NoError(t, f.Close())
		for _, dev := range testDevices {
			t.Run(dev.name, func(t *testing.T) {
				m, log := prefilled(t, dev.new(t, Options{}), path)
				step := decodeStep(t, m, log)
				assert.Equal(t, q4KMDecode, kernels(step), "kernels of the decode step")
				t.Logf("%d launches: %v", len(step), kernels(step))
			})
		}
	})
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_0} {
		name := strings.ToLower(typ.String())
		t.Run(name, func(t *testing.T) {
			path := synthModelOf(t, "tinyllama", layers, typ)
			for _, dev := range testDevices {
				t.Run(dev.name, func(t *testing.T) {
					m, log := prefilled(t, dev.new(t, Options{}), path)
					step := decodeStep(t, m, log)
					assert.Equal(t, quantDecode(name), kernels(step), "kernels of the decode step")
					t.Logf("%d launches: %v", len(step), kernels(step))
				})
			}
			t.Run("fake/FP16Weights", func(t *testing.T) {
				m, log := prefilled(t, testDevices[0].new(t, Options{FP16Weights: true}), path)
				assert.Equal(t, fusedDecode, kernels(decodeStep(t, m, log)), "expanded to FP16: the fused FP16 step")
			})
		})
	}
}

// TestDecodeAllocs: recording a decode step seen before allocates nothing
// per op (put reuses the records' boxes), so a step's allocations do not
// grow with the number of layers. What remains per step is the forward
// pass's and the submission's own (parameter structs, closures).
func TestDecodeAllocs(t *testing.T) {
	perStep := func(layers int) float64 {
		b, d := newFake(t, Options{})
		m, log := prefilled(t, b, synthModel(t, "qwen3-0.6b", layers))
		step := decodeStep(t, m, log)
		d.trusted, log.off = true, true // their checks and copies allocate
		ids, vals := make([]int32, decodeK), make([]float32, decodeK)
		allocs := testing.AllocsPerRun(20, func() {
			if err := m.ForwardTopK(decodeBatch, []int32{0}, decodeK, ids, vals); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%d layers: %d records, %.0f allocations per decode step", layers, len(step), allocs)
		return allocs
	}
	assert.Equal(t, perStep(2), perStep(8), "allocations per decode step grow with the layers")
}

// BenchmarkRecordDecode is the host's share of a decode step of a 22-layer
// TinyLlama shape (narrowed; the device's share is not run): the forward
// pass's backend calls, the records and their fusion, the submission's
// bookkeeping, and the comparison with the captured step that decides a
// graph replay.
func BenchmarkRecordDecode(b *testing.B) {
	for _, rows := range []int{1, 8} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) { benchRecordDecode(b, rows) })
	}
}

func benchRecordDecode(b *testing.B, rows int) {
	be, d := newFake(b, Options{})
	log := logSteps(be)
	m, err := model.Load(synthModel(b, "tinyllama", 22), be, model.Options{CtxSize: 16, Slots: rows})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	// One token in each of rows slots, as batched decode runs them.
	batch := &model.Batch{}
	out := make([]int32, rows)
	for i := range rows {
		batch.Tokens = append(batch.Tokens, int32(300+i))
		batch.Pos = append(batch.Pos, 0)
		batch.Slot = append(batch.Slot, int32(i))
		out[i] = int32(i)
	}
	ids, vals := make([]int32, rows*decodeK), make([]float32, rows*decodeK)
	if err := m.ForwardTopK(batch, out, decodeK, ids, vals); err != nil {
		b.Fatal(err)
	}
	d.trusted, log.off = true, true
	f := &replayDevice{device: be.dev}
	f.cache.m = map[graphKey][]graphEntry{}
	last := log.steps[len(log.steps)-1]
	f.cache.m[graphKey{rows, len(last)}] = []graphEntry{{ops: last}}
	be.dev = f
	b.ReportAllocs()
	for b.Loop() {
		if err := m.ForwardTopK(batch, out, decodeK, ids, vals); err != nil {
			b.Fatal(err)
		}
	}
	if f.misses > 0 {
		b.Fatalf("%d steps differed from the captured one", f.misses)
	}
}

// replayDevice looks every step up in a graph cache, as the GPU's run
// does before it replays.
type replayDevice struct {
	device
	cache  graphCache
	misses int
}

func (r *replayDevice) run(n int, ops []op) error {
	if _, ok := r.cache.find(n, ops); !ok {
		r.misses++
	}
	return r.device.run(n, ops)
}

// TestDecodeBytes: a decode step of a Q4_0 model reads its matrices in
// their GGUF encoding (the planes take exactly the file's bytes), its FP32
// vectors, and one row of the embedding table.
func TestDecodeBytes(t *testing.T) {
	path := synthModelOf(t, "tinyllama", layers, gguf.TypeQ4_0)
	b := testDevices[0].new(t, Options{})
	m, err := model.Load(path, b, model.Options{CtxSize: 16})
	require.NoError(t, err)
	defer m.Close()
	f, err := gguf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	ti, ok := f.Tensor("token_embd.weight")
	require.True(t, ok)
	embd := ti.Size
	assert.Equal(t, m.Weights.Bytes-embd+embd/ti.Rows(), b.DecodeBytes(m.Weights))
}

// synthHeadDim64 writes a 2-layer llama model with heads of 64 (4 query
// heads, 2 KV heads: KV rows of 128), so that every cache type fits it.
func synthHeadDim64(t testing.TB) string {
	t.Helper()
	p := synth.Presets["tinyllama"]
	p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Vocab = layers, 256, 4, 2, 96, 600
	path := filepath.Join(t.TempDir(), "hd64.gguf")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, synth.Write(f, p, synth.Options{Type: gguf.TypeF16, Seed: 3}))
	require.NoError(t, f.Close())
	return path
}

// TestKernelsCacheTypes pins the KV kernels that steps record for each
// pair of cache types (on the fake device, and on the GPU): the decode
// step's fused store and split attention, the unfused store, and the
// prefill attention of a 20-token prompt are those of the pair
// (rope_append_q8_0_q4_0, ...; f16/f16 keeps kv_append, attn_decode), and
// the cache holds rows of the types' sizes: per (layer, position) 128
// keys and 128 values, 4 bytes each for f32, 2 for f16, 34 per 32 for
// q8_0 and 18 per 32 for q4_0.
func TestKernelsCacheTypes(t *testing.T) {
	path := synthHeadDim64(t)
	rowBytes := map[model.CacheType]int64{model.CacheF32: 512, model.CacheF16: 256, model.CacheQ8_0: 136, model.CacheQ4_0: 72}
	for _, kt := range model.CacheTypes() {
		for _, vt := range model.CacheTypes() {
			suffix := "_" + kt.String() + "_" + vt.String()
			if kt == model.CacheF16 && vt == model.CacheF16 {
				suffix = ""
			}
			for _, dev := range testDevices {
				t.Run(fmt.Sprintf("k=%s,v=%s/%s", kt, vt, dev.name), func(t *testing.T) {
					for _, noFusion := range []bool{false, true} {
						b := dev.new(t, Options{NoFusion: noFusion})
						assert.True(t, b.SupportsCacheType(kt))
						log := logSteps(b)
						m, err := model.Load(path, b, model.Options{CtxSize: 32, CacheTypeK: kt, CacheTypeV: vt})
						require.NoError(t, err)
						defer m.Close()
						assert.Equal(t, 2*32*(rowBytes[kt]+rowBytes[vt]), b.MemoryUsage().KV, "KV cache bytes")

						prompt := &model.Batch{Slot: make([]int32, 20)}
						for i := range 20 {
							prompt.Tokens = append(prompt.Tokens, int32(100+i))
							prompt.Pos = append(prompt.Pos, int32(i))
						}
						require.NoError(t, m.Forward(prompt, nil, nil))
						pre := kernels(log.steps[len(log.steps)-1])
						assert.Equal(t, layers, pre["attn_prefill"+suffix], "prefill attention: %v", pre)

						batch := &model.Batch{Tokens: []int32{302}, Pos: []int32{20}, Slot: []int32{0}}
						ids, vals := make([]int32, decodeK), make([]float32, decodeK)
						require.NoError(t, m.ForwardTopK(batch, []int32{0}, decodeK, ids, vals))
						got := kernels(log.steps[len(log.steps)-1])
						assert.Equal(t, layers, got["attn_decode"+suffix], "decode attention: %v", got)
						store := "rope_append" + suffix
						if noFusion {
							store = "kv_append" + suffix
						}
						assert.Equal(t, layers, got[store], "KV store: %v", got)
						if suffix != "" {
							for _, f16 := range []string{"attn_decode", "rope_append", "kv_append", "attn_prefill"} {
								assert.Zero(t, got[f16]+pre[f16], "%s recorded for a %s/%s cache", f16, kt, vt)
							}
						}
					}
				})
			}
		}
	}
}

// TestCacheTypeRefusals: the CUDA backend runs every cache type, and
// model.Load refuses a quantized type for heads that are not whole blocks
// before it allocates anything (the synthetic model's heads are 16 wide).
func TestCacheTypeRefusals(t *testing.T) {
	path := synthModel(t, "tinyllama", layers)
	for _, ct := range []model.CacheType{model.CacheQ8_0, model.CacheQ4_0} {
		b, d := newFake(t, Options{})
		_, err := model.Load(path, b, model.Options{CtxSize: 16, CacheTypeV: ct})
		var oe *model.OptionError
		require.ErrorAs(t, err, &oe, "%s values for heads of 16", ct)
		assert.Contains(t, err.Error(), "head dimension 16 is not a multiple of the type's 32-element blocks")
		assert.Zero(t, d.used, "nothing allocated")
	}
	b, _ := newFake(t, Options{})
	err := b.InitKV(model.KVConfig{Layers: 1, Slots: 1, Ctx: 4, KDim: 48, VDim: 64, TypeK: model.CacheQ8_0})
	assert.Error(t, err, "q8_0 rows of 48")
}
