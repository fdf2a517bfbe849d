package synth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// small shrinks a preset to a size a test can run.
func small(name string) Preset {
	p := Presets[name]
	p.Layers = 2
	p.Vocab = 600
	if p.HeadDim > 0 {
		p.HeadDim = 32
	}
	p.Dim, p.FFN = p.Heads*16, 96
	return p
}

// TestWriteLoadsAndRuns writes every preset shape (shrunk) with every
// weight name, checks the types and the size, and runs the model on the
// CPU backend. The small presets' ffn_down rows (96) and the qwen2.5
// rows (224) are not whole K-quant super-blocks, so they also exercise
// the fallback.
func TestWriteLoadsAndRuns(t *testing.T) {
	for _, name := range []string{"tinyllama", "llama3-8b", "qwen2.5-0.5b", "qwen3-0.6b"} {
		for _, wname := range WeightNames() {
			typ, mix, ok := ParseWeights(wname)
			require.True(t, ok)
			t.Run(name+"/"+wname, func(t *testing.T) {
				p := small(name)
				opts := Options{Type: typ, Mix: mix, Seed: 1}
				path := filepath.Join(t.TempDir(), "m.gguf")
				f, err := os.Create(path)
				require.NoError(t, err)
				require.NoError(t, Write(f, p, opts))
				require.NoError(t, f.Close())

				g, err := gguf.Open(path)
				require.NoError(t, err)
				var data int64
				for _, ti := range g.Tensors {
					data += ti.Size
					if len(ti.Dims) == 2 && mix == NoMix {
						want, ok := fallback(typ, ti.Dims[0])
						require.True(t, ok)
						assert.Equal(t, want, ti.Type, ti.Name)
					}
				}
				assert.Equal(t, Size(p, opts, 0), data)
				ftype, err := g.Metadata.Uint32("general.file_type")
				require.NoError(t, err)
				if mix != NoMix {
					assert.Equal(t, mix.FileType(), ftype)
				} else {
					assert.Equal(t, pureFileTypes[typ], ftype)
				}
				emb, _ := g.Tensor("token_embd.weight")
				vals, err := g.Float32s(emb)
				require.NoError(t, err)
				var ss float64
				for _, v := range vals {
					ss += float64(v) * float64(v)
				}
				assert.InDelta(t, 0.02, math.Sqrt(ss/float64(len(vals))), 0.002, "weights ~N(0, 0.02)")
				g.Close()

				m, err := model.Load(path, cpu.New(cpu.Options{}), model.Options{CtxSize: 16})
				require.NoError(t, err)
				defer m.Close()
				s, err := m.NewSession(0)
				require.NoError(t, err)
				logits, err := s.Eval(context.Background(), []int32{1, 300, 301})
				require.NoError(t, err)
				for _, v := range logits {
					require.False(t, v != v, "NaN logit")
				}
			})
		}
	}
}

func TestWriteDeterministic(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"Q8_0", Options{Type: gguf.TypeQ8_0}},
		{"Q4_K_M", Options{Mix: MixQ4_K_M}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := small("tinyllama")
			if tt.opts.Mix != NoMix {
				// token_embd and output of 8400*512 elements span two
				// chunks, so chunk and worker boundaries cut K-quant
				// tensors.
				p.Vocab = 8400
			}
			hash := func(workers int, seed uint64) [32]byte {
				opts := tt.opts
				opts.Seed, opts.Workers = seed, workers
				var buf bytes.Buffer
				require.NoError(t, Write(&buf, p, opts))
				return sha256.Sum256(buf.Bytes())
			}
			a := hash(1, 5)
			assert.Equal(t, a, hash(3, 5), "independent of the number of workers")
			assert.Equal(t, a, hash(7, 5), "independent of the number of workers")
			assert.NotEqual(t, a, hash(1, 6), "depends on the seed")
		})
	}
}

// TestWriteQ4_K_M checks the per-tensor types of the Q4_K_M mix against
// llama.cpp's rule (see Mix) on a 16-layer model: n/8 = 2 and 7n/8 = 14,
// so attn_v and ffn_down take Q6_K in layers 0, 1, 4, 7, 10, 13, 14 and
// 15. The llama shape has rows of 256 and 512 (all K-quants); the tied
// qwen2.5 shape has rows of 224, which fall back.
func TestWriteQ4_K_M(t *testing.T) {
	moreBits := map[int]bool{0: true, 1: true, 4: true, 7: true, 10: true, 13: true, 14: true, 15: true}
	tests := []struct {
		preset string
		ffn    int
		// want gives the expected type of a tensor role in layer i (-1
		// for token_embd and output).
		want func(role string, i int) gguf.Type
	}{
		{"tinyllama", 256, func(role string, i int) gguf.Type {
			switch {
			case role == "output":
				return gguf.TypeQ6_K
			case (role == "attn_v" || role == "ffn_down") && moreBits[i]:
				return gguf.TypeQ6_K
			}
			return gguf.TypeQ4_K // token_embd (untied) included
		}},
		{"qwen2.5-0.5b", 96, func(role string, i int) gguf.Type {
			switch {
			case role == "token_embd":
				return gguf.TypeQ8_0 // tied: the output rule, rows of 224
			case (role == "attn_v" || role == "ffn_down") && moreBits[i]:
				return gguf.TypeQ8_0 // Q6_K's fallback
			}
			return gguf.TypeQ5_0 // Q4_K's fallback
		}},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			p := small(tt.preset)
			p.Layers, p.FFN = 16, tt.ffn
			var buf bytes.Buffer
			require.NoError(t, Write(&buf, p, Options{Mix: MixQ4_K_M, Seed: 1}))
			f, err := gguf.NewFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			require.NoError(t, err)
			ftype, err := f.Metadata.Uint32("general.file_type")
			require.NoError(t, err)
			assert.Equal(t, uint32(15), ftype, "LLAMA_FTYPE_MOSTLY_Q4_K_M")
			_, hasOutput := f.Tensor("output.weight")
			assert.Equal(t, !p.Tied, hasOutput)

			roles := []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
			n := 0
			var data int64
			for _, ti := range f.Tensors {
				data += ti.Size
				if len(ti.Dims) != 2 {
					assert.Equal(t, gguf.TypeF32, ti.Type, ti.Name)
					continue
				}
				n++
				role, layer := strings.TrimSuffix(ti.Name, ".weight"), -1
				if rest, ok := strings.CutPrefix(role, "blk."); ok {
					l, r, _ := strings.Cut(rest, ".")
					layer, err = strconv.Atoi(l)
					require.NoError(t, err)
					role = r
					assert.Contains(t, roles, role)
				}
				assert.Equal(t, tt.want(role, layer), ti.Type, ti.Name)
			}
			assert.Equal(t, 16*len(roles)+2-btoi(p.Tied), n, "2-D weights")
			assert.Equal(t, Size(p, Options{Mix: MixQ4_K_M}, 0), data, "Size")
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestMixRules checks the rule of each mix on the tensors it singles out,
// for a 32-layer llama shape (n/16 = 2, n/8 = 4, 7n/8 = 28) with rows of
// whole super-blocks, and the 70B bump of attn_v.
func TestMixRules(t *testing.T) {
	p := Presets["llama2-7b"]
	q3, q4, q5, q6 := gguf.TypeQ3_K, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K
	tests := []struct {
		mix  Mix
		role string
		// want[i] for layers 0..7, then layers 28 and 31.
		want []gguf.Type
	}{
		{MixQ3_K_S, "attn_v", []gguf.Type{q3, q3, q3, q3, q3, q3, q3, q3, q3, q3}},
		{MixQ3_K_S, "output", []gguf.Type{q6}},
		{MixQ3_K_S, "token_embd", []gguf.Type{q3}},
		{MixQ3_K_M, "attn_v", []gguf.Type{q5, q5, q4, q4, q4, q4, q4, q4, q4, q4}},
		{MixQ3_K_M, "ffn_down", []gguf.Type{q5, q5, q4, q4, q4, q4, q4, q4, q4, q4}},
		{MixQ3_K_M, "attn_output", []gguf.Type{q4, q4, q4, q4, q4, q4, q4, q4, q4, q4}},
		{MixQ3_K_M, "attn_q", []gguf.Type{q3, q3, q3, q3, q3, q3, q3, q3, q3, q3}},
		{MixQ3_K_L, "attn_v", []gguf.Type{q5, q5, q5, q5, q5, q5, q5, q5, q5, q5}},
		{MixQ3_K_L, "ffn_down", []gguf.Type{q5, q5, q5, q5, q5, q5, q5, q5, q5, q5}},
		{MixQ3_K_L, "attn_output", []gguf.Type{q5, q5, q5, q5, q5, q5, q5, q5, q5, q5}},
		{MixQ4_K_S, "attn_v", []gguf.Type{q5, q5, q5, q5, q4, q4, q4, q4, q4, q4}},
		{MixQ4_K_S, "ffn_down", []gguf.Type{q5, q5, q5, q5, q4, q4, q4, q4, q4, q4}},
		{MixQ4_K_S, "ffn_up", []gguf.Type{q4, q4, q4, q4, q4, q4, q4, q4, q4, q4}},
		// moreBits: i < 4, i >= 28, (i-4)%3 == 2 (6, 9, ...)
		{MixQ4_K_M, "attn_v", []gguf.Type{q6, q6, q6, q6, q4, q4, q6, q4, q6, q6}},
		{MixQ4_K_M, "ffn_down", []gguf.Type{q6, q6, q6, q6, q4, q4, q6, q4, q6, q6}},
		{MixQ4_K_M, "attn_output", []gguf.Type{q4, q4, q4, q4, q4, q4, q4, q4, q4, q4}},
		{MixQ4_K_M, "output", []gguf.Type{q6}},
		{MixQ4_K_M, "token_embd", []gguf.Type{q4}},
		{MixQ5_K_S, "attn_v", []gguf.Type{q5, q5, q5, q5, q5, q5, q5, q5, q5, q5}},
		{MixQ5_K_S, "output", []gguf.Type{q6}},
		{MixQ5_K_M, "attn_v", []gguf.Type{q6, q6, q6, q6, q5, q5, q6, q5, q6, q6}},
		{MixQ5_K_M, "ffn_down", []gguf.Type{q6, q6, q6, q6, q5, q5, q6, q5, q6, q6}},
		{MixQ5_K_M, "ffn_gate", []gguf.Type{q5, q5, q5, q5, q5, q5, q5, q5, q5, q5}},
	}
	layers := []int{0, 1, 2, 3, 4, 5, 6, 7, 28, 31}
	for _, tt := range tests {
		t.Run(tt.mix.String()+"/"+tt.role, func(t *testing.T) {
			for k, want := range tt.want {
				i := -1
				if len(tt.want) > 1 {
					i = layers[k]
				}
				assert.Equal(t, want, p.mixType(tt.mix, tt.role, i, 4096), "layer %d", i)
			}
		})
	}

	t.Run("70B", func(t *testing.T) {
		p := Presets["llama3-8b"]
		p.Layers = 80 // with 8 KV heads of 32: llama.cpp's LLM_TYPE_70B
		require.True(t, p.is70B())
		assert.Equal(t, q5, p.mixType(MixQ4_K_M, "attn_v", 20, 8192), "Q4_K bumped")
		assert.Equal(t, q6, p.mixType(MixQ4_K_M, "attn_v", 0, 8192), "Q6_K kept")
		assert.Equal(t, q5, p.mixType(MixQ3_K_M, "attn_v", 20, 8192), "Q4_K bumped")
		assert.Equal(t, q5, p.mixType(MixQ3_K_S, "attn_v", 20, 8192), "Q3_K bumped")
		assert.Equal(t, q4, p.mixType(MixQ4_K_M, "ffn_down", 20, 8192), "only attn_v")
		p.KVHeads = p.Heads
		assert.False(t, p.is70B(), "80 layers without GQA: LLM_TYPE_65B")
		q := Presets["qwen2.5-0.5b"]
		q.Layers = 80
		assert.True(t, q.is70B())
	})
}

func TestFallback(t *testing.T) {
	tests := []struct {
		typ    gguf.Type
		rowLen int64
		want   gguf.Type
		ok     bool
	}{
		{gguf.TypeQ4_K, 512, gguf.TypeQ4_K, true},
		{gguf.TypeQ4_K, 224, gguf.TypeQ5_0, true},
		{gguf.TypeQ5_K, 224, gguf.TypeQ5_1, true},
		{gguf.TypeQ6_K, 224, gguf.TypeQ8_0, true},
		{gguf.TypeQ3_K, 224, gguf.TypeIQ4_NL, true},
		{gguf.TypeQ2_K, 96, gguf.TypeIQ4_NL, true},
		{gguf.TypeQ4_K, 40, gguf.TypeF16, true},
		{gguf.TypeQ6_K, 40, gguf.TypeF16, true},
		{gguf.TypeQ8_0, 64, gguf.TypeQ8_0, true},
		{gguf.TypeQ8_0, 40, gguf.TypeQ8_0, false},
		{gguf.TypeIQ4_NL, 40, gguf.TypeIQ4_NL, false},
		{gguf.TypeF16, 40, gguf.TypeF16, true},
	}
	for _, tt := range tests {
		got, ok := fallback(tt.typ, tt.rowLen)
		assert.Equal(t, tt.ok, ok, "%s/%d", tt.typ, tt.rowLen)
		if ok {
			assert.Equal(t, tt.want, got, "%s/%d", tt.typ, tt.rowLen)
		}
	}
}

func TestParseWeights(t *testing.T) {
	tests := []struct {
		name string
		typ  gguf.Type
		mix  Mix
		ok   bool
	}{
		{"F16", gguf.TypeF16, NoMix, true},
		{"q8_0", gguf.TypeQ8_0, NoMix, true},
		{"IQ4_NL", gguf.TypeIQ4_NL, NoMix, true},
		{"Q4_K", gguf.TypeQ4_K, NoMix, true}, // one type, not llama.cpp's alias for Q4_K_M
		{"Q6_K", gguf.TypeQ6_K, NoMix, true},
		{"Q4_K_M", gguf.TypeQ4_K, MixQ4_K_M, true},
		{"q5_k_m", gguf.TypeQ5_K, MixQ5_K_M, true},
		{"Q3_K_S", gguf.TypeQ3_K, MixQ3_K_S, true},
		{"Q8_K", 0, NoMix, false},   // no quantizer
		{"BF16", 0, NoMix, false},   // no quantizer
		{"IQ4_XS", 0, NoMix, false}, // no quantizer
		{"Q2_K_S", 0, NoMix, false},
		{"", 0, NoMix, false},
	}
	for _, tt := range tests {
		typ, mix, ok := ParseWeights(tt.name)
		assert.Equal(t, tt.ok, ok, tt.name)
		assert.Equal(t, tt.typ, typ, tt.name)
		assert.Equal(t, tt.mix, mix, tt.name)
	}
	for _, n := range WeightNames() {
		_, _, ok := ParseWeights(n)
		assert.True(t, ok, n)
	}
	assert.Equal(t, "Q4_K_M", MixQ4_K_M.String())
	assert.Equal(t, uint32(17), MixQ5_K_M.FileType())
}

func TestWriteVocabFrom(t *testing.T) {
	v, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer v.Close()
	p := small("tinyllama")
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, p, Options{Type: gguf.TypeF16, Vocab: &v.Metadata}))
	f, err := gguf.NewFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	emb, _ := f.Tensor("token_embd.weight")
	assert.Equal(t, []int64{int64(p.Dim), 512}, emb.Dims, "vocabulary size from the vocab file")
	toks, err := f.Metadata.Strings("tokenizer.ggml.tokens")
	require.NoError(t, err)
	assert.Equal(t, "<s>", toks[1])
}

func TestWriteErrors(t *testing.T) {
	p := small("tinyllama")
	assert.ErrorContains(t, Write(&bytes.Buffer{}, p, Options{Type: gguf.TypeIQ4_XS}), "not supported")
	assert.ErrorContains(t, Write(&bytes.Buffer{}, p, Options{Mix: Mix(99)}), "unknown mix")
	assert.Zero(t, Size(p, Options{Type: gguf.TypeIQ4_XS}, 0))
	bad := p
	bad.KVHeads = 3
	assert.ErrorContains(t, Write(&bytes.Buffer{}, bad, Options{Type: gguf.TypeF16}), "multiple")
	odd := p
	odd.Dim, odd.Heads, odd.KVHeads = 40, 2, 2 // rows of 40: not whole Q8_0 blocks
	assert.ErrorContains(t, Write(&bytes.Buffer{}, odd, Options{Type: gguf.TypeQ8_0}), "blocks")
	assert.Zero(t, Size(odd, Options{Type: gguf.TypeQ8_0}, 0))
	assert.NoError(t, Write(&bytes.Buffer{}, odd, Options{Type: gguf.TypeQ4_K}), "Q4_K falls back to F16 for rows of 40")
	// The output rule (tied or not) gives Q8_0 to rows that are not whole
	// K-quant blocks; llama.cpp has no fallback for Q8_0 either.
	assert.ErrorContains(t, Write(&bytes.Buffer{}, odd, Options{Mix: MixQ4_K_M}), "not whole Q8_0 blocks")
}

// BenchmarkWrite measures generation throughput (bytes of tensor data per
// second) for F16 weights.
func BenchmarkWrite(b *testing.B) {
	p := Presets["tinyllama"]
	p.Layers = 2
	size := Size(p, Options{Type: gguf.TypeF16}, 0)
	b.SetBytes(size)
	for b.Loop() {
		if err := Write(discard{}, p, Options{Type: gguf.TypeF16}); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
