package synth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math"
	"os"
	"path/filepath"
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

func TestWriteLoadsAndRuns(t *testing.T) {
	for _, name := range []string{"tinyllama", "llama3-8b", "qwen2.5-0.5b", "qwen3-0.6b"} {
		for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_0} {
			t.Run(name+"/"+typ.String(), func(t *testing.T) {
				p := small(name)
				path := filepath.Join(t.TempDir(), "m.gguf")
				f, err := os.Create(path)
				require.NoError(t, err)
				require.NoError(t, Write(f, p, Options{Type: typ, Seed: 1}))
				require.NoError(t, f.Close())

				g, err := gguf.Open(path)
				require.NoError(t, err)
				var data int64
				for _, ti := range g.Tensors {
					data += ti.Size
					if len(ti.Dims) == 2 {
						assert.Equal(t, typ, ti.Type, ti.Name)
					}
				}
				assert.Equal(t, Size(p, typ, 0), data)
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
	p := small("tinyllama")
	hash := func(workers int, seed uint64) [32]byte {
		var buf bytes.Buffer
		require.NoError(t, Write(&buf, p, Options{Type: gguf.TypeQ8_0, Seed: seed, Workers: workers}))
		return sha256.Sum256(buf.Bytes())
	}
	a := hash(1, 5)
	assert.Equal(t, a, hash(3, 5), "independent of the number of workers")
	assert.NotEqual(t, a, hash(1, 6), "depends on the seed")
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
	assert.ErrorContains(t, Write(&bytes.Buffer{}, p, Options{Type: gguf.TypeQ4_K}), "not supported")
	bad := p
	bad.KVHeads = 3
	assert.ErrorContains(t, Write(&bytes.Buffer{}, bad, Options{Type: gguf.TypeF16}), "multiple")
	odd := p
	odd.Dim, odd.Heads, odd.KVHeads = 40, 2, 2 // rows of 40: not whole Q8_0 blocks
	assert.ErrorContains(t, Write(&bytes.Buffer{}, odd, Options{Type: gguf.TypeQ8_0}), "blocks")
}

// BenchmarkWrite measures generation throughput (bytes of tensor data per
// second) for F16 weights.
func BenchmarkWrite(b *testing.B) {
	p := Presets["tinyllama"]
	p.Layers = 2
	size := Size(p, gguf.TypeF16, 0)
	b.SetBytes(size)
	for b.Loop() {
		if err := Write(discard{}, p, Options{Type: gguf.TypeF16}); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
