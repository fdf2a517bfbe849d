package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKVStoreMatchesGGUF checks that a cached row holds exactly the bytes
// of gguf's reference quantizer (ggml's quantize_row_*_ref) for the type,
// and that rows reads them back as gguf's dequantizer does.
func TestKVStoreMatchesGGUF(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const dim, rows = 128, 3
	for _, ct := range []model.CacheType{model.CacheF16, model.CacheQ8_0, model.CacheQ4_0} {
		t.Run(ct.String(), func(t *testing.T) {
			h, err := newKVHalf(ct, rows, dim)
			require.NoError(t, err)
			x := make([]float32, dim)
			for i := range x {
				x[i] = float32(rng.NormFloat64()) * 3
			}
			h.store(1, x)
			want := make([]byte, ct.RowBytes(dim))
			require.NoError(t, gguf.Quantize(want, x, ct.GGUFType()))
			assert.Equal(t, want, h.raw[h.rowBytes:2*h.rowBytes])
			assert.Equal(t, make([]byte, h.rowBytes), h.raw[:h.rowBytes], "row 0 untouched")

			// The second head of 64: dequantized as gguf does.
			deq := make([]float32, dim)
			require.NoError(t, gguf.Dequantize(deq, want, ct.GGUFType()))
			got, stride := h.rows(1, 1, 64, 64, make([]float32, 64))
			assert.Equal(t, 64, stride)
			assert.Equal(t, deq[64:], got)
		})
	}
}

// TestKVRowBytes pins the block layouts: 34 bytes per 32 elements for
// q8_0, 18 for q4_0, as in ggml.
func TestKVRowBytes(t *testing.T) {
	for _, c := range []struct {
		t    model.CacheType
		want int64
	}{{model.CacheF32, 512}, {model.CacheF16, 256}, {model.CacheQ8_0, 136}, {model.CacheQ4_0, 72}} {
		assert.Equal(t, c.want, c.t.RowBytes(128), c.t.String())
		size, ok := c.t.GGUFType().RowSize(128)
		assert.True(t, ok)
		assert.Equal(t, c.want, size, c.t.String())
	}
	_, err := newKVHalf(model.CacheQ8_0, 1, 8)
	assert.Error(t, err, "8 elements are not a q8_0 block")
}

// TestAttentionCacheTypes runs Attention with each cache type against the
// same batch on an f32 cache and bounds the difference by the NMSE of the
// outputs: f16 rounds K and V to 11 significant bits, q8_0 to about 8 and
// q4_0 to 4, so the bounds are 1e-6, 2e-4 and 2e-2 (observed at most
// 4e-8, 2e-5 and 5e-3). Inputs are uniform in [-1, 1] as in test-backend-ops.
func TestAttentionCacheTypes(t *testing.T) {
	bounds := map[model.CacheType]float64{model.CacheF16: 1e-6, model.CacheQ8_0: 2e-4, model.CacheQ4_0: 2e-2}
	for _, hd := range []int{32, 64} {
		const heads, kvHeads, n = 4, 2, 37
		p := &model.AttnParams{Heads: heads, KVHeads: kvHeads, HeadDim: hd, ValueDim: hd, Scale: float32(1 / math.Sqrt(float64(hd)))}
		rng := rand.New(rand.NewPCG(uint64(hd), 7))
		fill := func(rows, cols int) []float32 {
			x := make([]float32, rows*cols)
			for i := range x {
				x[i] = rng.Float32()*2 - 1
			}
			return x
		}
		q, k, v := fill(n, heads*hd), fill(n, kvHeads*hd), fill(n, kvHeads*hd)
		batch := &model.Batch{Tokens: make([]int32, n), Pos: make([]int32, n), Slot: make([]int32, n)}
		for i := range n {
			batch.Pos[i] = int32(i)
		}
		run := func(kt, vt model.CacheType) []float32 {
			b := New(Options{Threads: 2})
			defer b.Close()
			require.NoError(t, b.InitKV(model.KVConfig{Layers: 1, Slots: 1, Ctx: n, KDim: kvHeads * hd, VDim: kvHeads * hd, TypeK: kt, TypeV: vt}))
			require.NoError(t, b.SetBatch(batch))
			out := make([]float32, n*heads*hd)
			// Two halves: the second reads what the first stored.
			h := n / 2
			b.batch = model.Batch{Tokens: batch.Tokens[:h], Pos: batch.Pos[:h], Slot: batch.Slot[:h]}
			b.Attention(BufFrom(h, heads*hd, out[:h*heads*hd]), BufFrom(h, heads*hd, q[:h*heads*hd]),
				BufFrom(h, kvHeads*hd, k[:h*kvHeads*hd]), BufFrom(h, kvHeads*hd, v[:h*kvHeads*hd]), 0, h, p)
			b.batch = model.Batch{Tokens: batch.Tokens[h:], Pos: batch.Pos[h:], Slot: batch.Slot[h:]}
			r := n - h
			b.Attention(BufFrom(r, heads*hd, out[h*heads*hd:]), BufFrom(r, heads*hd, q[h*heads*hd:]),
				BufFrom(r, kvHeads*hd, k[h*kvHeads*hd:]), BufFrom(r, kvHeads*hd, v[h*kvHeads*hd:]), 0, r, p)
			return out
		}
		ref := run(model.CacheF32, model.CacheF32)
		for _, ct := range []model.CacheType{model.CacheF16, model.CacheQ8_0, model.CacheQ4_0} {
			for _, pair := range [][2]model.CacheType{{ct, model.CacheF32}, {model.CacheF32, ct}, {ct, ct}} {
				t.Run(fmt.Sprintf("ATTN(type_k=%s,type_v=%s,hd=%d,n=%d)", pair[0], pair[1], hd, n), func(t *testing.T) {
					got := run(pair[0], pair[1])
					e := nmse(got, ref)
					t.Logf("nmse %.3g", e)
					assert.Less(t, e, bounds[ct])
				})
			}
		}
	}
}

// nmse is mse(a, b) / mse(b, 0), test-backend-ops' measure.
func nmse(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return num / den
}
