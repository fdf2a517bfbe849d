package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDotKernels compares the dispatching dot and dot4 (assembly on amd64
// with AVX2) with a float64 reference, for lengths around every tail case.
func TestDotKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	ref := func(a, b []float32) float64 {
		var s float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	for _, n := range []int{1, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 100, 172, 4096 + 5} {
		w, x0, x1, x2, x3 := vec(n), vec(n), vec(n), vec(n), vec(n)
		tol := 1e-5 * math.Sqrt(float64(n)) * 4
		assert.InDelta(t, ref(w, x0), float64(dot(w, x0)), tol, "dot n=%d", n)
		assert.InDelta(t, ref(w, x0), float64(dotGeneric(w, x0)), tol, "dotGeneric n=%d", n)
		a, b, c, d := dot4(w, x0, x1, x2, x3)
		for j, got := range []float32{a, b, c, d} {
			x := [][]float32{x0, x1, x2, x3}[j]
			assert.InDelta(t, ref(w, x), float64(got), tol, "dot4[%d] n=%d", j, n)
		}
	}
}

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := -87.0; x <= 88.0; x += 0.0037 {
		got := float64(expf(float32(x)))
		// Compare against e^(float32(x)), the exact input expf sees.
		want := math.Exp(float64(float32(x)))
		worst = max(worst, math.Abs(got-want)/want)
	}
	assert.Less(t, worst, 3e-7) // about 2.5 float32 ulp
	assert.Equal(t, float32(0), expf(-100))
	assert.True(t, math.IsInf(float64(expf(100)), 1))
	assert.True(t, math.IsNaN(float64(expf(float32(math.NaN())))))
	assert.Equal(t, float32(1), expf(0))
}

// TestFusedDot compares the fused F16 row kernel with convert-then-dot.
func TestFusedDot(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []gguf.Type{gguf.TypeF16} {
		if !hasFusedDot(typ) {
			t.Skipf("%s: no fused kernel on this CPU", typ)
		}
		for _, n := range []int{32, 64, 96, 4096 + 32} {
			src := make([]float32, n)
			x := make([]float32, n)
			for i := range src {
				src[i], x[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			size, _ := typ.RowSize(int64(n))
			raw := make([]byte, size)
			require.NoError(t, gguf.Quantize(raw, src, typ))
			deq := make([]float32, n)
			require.NoError(t, gguf.Dequantize(deq, raw, typ))
			var want float64
			for i := range deq {
				want += float64(deq[i]) * float64(x[i])
			}
			got := fusedDot(typ, raw, x)
			assert.InDelta(t, want, float64(got), 1e-4*math.Sqrt(float64(n)), "%s n=%d", typ, n)
		}
	}
}

// TestMatMulPathsAgree checks that a product computed row by row (the
// decode path: the fused F16 kernel, integer kernels for the quantized
// types) equals the same product in one batch (the prompt path: converted
// rows four activation rows at once for F16, the same integer kernels over
// all rows for the quantized types).
func TestMatMulPathsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const rows, cols, n = 83, 96, 6
	for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_0, gguf.TypeQ4_K, gguf.TypeQ6_K, gguf.TypeQ5_K} {
		t.Run(typ.String(), func(t *testing.T) {
			k := cols
			if typ.BlockSize() == 256 {
				k = 256
			}
			src := make([]float32, rows*k)
			for i := range src {
				src[i] = float32(r.NormFloat64())
			}
			size, _ := typ.RowSize(int64(len(src)))
			raw := make([]byte, size)
			require.NoError(t, gguf.Quantize(raw, src, typ))
			ti := &gguf.TensorInfo{Name: "w", Type: typ, Dims: []int64{int64(k), rows}, Size: size}
			b := New(Options{Threads: 2})
			defer b.Close()
			w, err := b.LoadWeight(ti, raw)
			require.NoError(t, err)
			xs := make([]float32, n*k)
			for i := range xs {
				xs[i] = float32(r.Float64()*2 - 1)
			}
			x := BufFrom(n, k, xs)
			batch, _ := b.NewBuf(n, rows)
			b.MatMul(batch, x, w, nil, n)
			for i := range n {
				one, _ := b.NewBuf(1, rows)
				b.MatMul(one, BufFrom(1, k, xs[i*k:(i+1)*k]), w, nil, 1)
				want := Data(batch)[i*rows : (i+1)*rows]
				for j, v := range Data(one) {
					assert.InDelta(t, want[j], v, 1e-4, "%s row %d col %d", typ, i, j)
				}
			}
		})
	}
}

// TestAttentionKernels compares scores, expSub and wsum (assembly on amd64
// with AVX2) with float64 references over head widths, strides and
// position counts around the 8-wide blocks.
func TestAttentionKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, hd := range []int{8, 16, 24, 64, 128, 12} {
		for _, npos := range []int{1, 7, 8, 9, 17, 64, 131} {
			stride := hd*3 + 8 // rows of a KV cache holding several heads
			keys := make([]float32, npos*stride)
			for i := range keys {
				keys[i] = float32(r.Float64()*2 - 1)
			}
			q := make([]float32, hd)
			for i := range q {
				q[i] = float32(r.Float64()*2 - 1)
			}
			const scale = 0.37
			sc := make([]float32, npos)
			scores(sc, q, keys[hd:], stride, scale)
			maxS := float64(-1e30)
			for p := range npos {
				var want float64
				for j := range hd {
					want += float64(q[j]) * float64(keys[hd+p*stride+j])
				}
				want *= scale
				maxS = max(maxS, want)
				require.InDelta(t, want, sc[p], 1e-5, "scores hd=%d npos=%d p=%d", hd, npos, p)
			}

			e := append([]float32(nil), sc...)
			sum := expSub(e, float32(maxS))
			var wantSum float64
			for p := range npos {
				want := math.Exp(float64(sc[p] - float32(maxS))) // the kernel's own input
				wantSum += want
				require.InDelta(t, want, e[p], 3e-7*want+1e-30, "expSub p=%d", p)
			}
			require.InDelta(t, wantSum, sum, 1e-5*wantSum)

			out := make([]float32, hd)
			for i := range out {
				out[i] = float32(math.NaN()) // poisoned
			}
			wsum(out, keys[2*hd:], stride, e)
			for j := range hd {
				var want float64
				for p := range npos {
					want += float64(e[p]) * float64(keys[2*hd+p*stride+j])
				}
				require.InDelta(t, want, out[j], 1e-5*float64(npos), "wsum hd=%d npos=%d j=%d", hd, npos, j)
			}
		}
	}
}
