package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/stretchr/testify/require"
)

// TestQDotRows checks the multi-row decode kernels against qdot row by
// row, bit for bit: every type with a kernel, the 32-element types with
// odd and even block counts (their kernels take blocks two at a time), the
// K-quants with 1 to 3 super-blocks, 1 to 7 rows, random rows and
// activations. Without the
// kernels (another CPU or architecture) qdotRows must report false.
func TestQDotRows(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	cases := []struct {
		typ gguf.Type
		nbs []int
	}{
		{gguf.TypeQ4_0, []int{1, 2, 3, 8, 9}},
		{gguf.TypeQ8_0, []int{1, 2, 3, 8, 9}},
		{gguf.TypeQ4_K, []int{8, 16, 24}},
		{gguf.TypeQ6_K, []int{8, 16, 24}},
		{gguf.TypeQ4_1, []int{1, 2, 3, 9}},
		{gguf.TypeQ5_0, []int{1, 2, 3, 9}},
		{gguf.TypeQ5_1, []int{1, 2, 3, 9}},
		{gguf.TypeIQ4_NL, []int{1, 2, 3, 9}},
		{gguf.TypeQ2_K, []int{8, 16, 24}},
		{gguf.TypeQ3_K, []int{8, 16, 24}},
		{gguf.TypeQ5_K, []int{8, 16, 24}},
	}
	for _, c := range cases {
		typ := c.typ
		for _, nb := range c.nbs {
			for rows := 1; rows <= 7; rows++ {
				t.Run(fmt.Sprintf("%s/blocks=%d/rows=%d", typ, nb, rows), func(t *testing.T) {
					k := nb * qblock
					var raw []byte
					stride := 0
					for range rows {
						w := make([]float32, k)
						for i := range w {
							w[i] = float32(r.NormFloat64()) * float32(1+r.IntN(8))
						}
						row, _ := quantizedRow(t, typ, w)
						stride = len(row)
						raw = append(raw, row...)
					}
					var q qrows
					q.reset(1, k)
					x := make([]float32, k)
					for i := range x {
						x[i] = float32(r.NormFloat64())
					}
					quantizeRow(q.row(0), x)
					out := make([]float32, rows+1)
					out[rows] = 42 // must stay
					ok := qdotRows(typ, raw, stride, q.row(0), out[:rows])
					if !useAVX2 {
						require.False(t, ok)
						return
					}
					require.True(t, ok)
					for j := range rows {
						want := qdot(typ, raw[j*stride:(j+1)*stride], q.row(0))
						require.Equal(t, math.Float32bits(want), math.Float32bits(out[j]), "row %d: %v, want %v", j, out[j], want)
					}
					require.Equal(t, float32(42), out[rows])
				})
			}
		}
	}
	var q qrows
	q.reset(1, 64)
	require.False(t, qdotRows(gguf.TypeF16, make([]byte, 128), 128, q.row(0), make([]float32, 1)), "F16 has no multi-row kernel")
	require.False(t, qdotRows(gguf.TypeQ4_K, make([]byte, 144), 144, q.row(0), make([]float32, 1)), "64 elements: no whole Q4_K super-block")
	require.False(t, qdotRows(gguf.TypeQ4_0, make([]byte, 40), 40, q.row(0), make([]float32, 1)), "row of the wrong size")
}

// TestMatMulQBits checks MatMul with an integer kernel and a bias against
// qdot + bias per (token, row), bit for bit, for 1 to 7 tokens (the
// tokens past the last four take the multi-row kernels) and 1 and 3
// threads.
func TestMatMulQBits(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	const k, rows = 512, 37
	for _, typ := range []gguf.Type{gguf.TypeQ4_0, gguf.TypeQ8_0, gguf.TypeQ4_K, gguf.TypeQ6_K, gguf.TypeQ5_0, gguf.TypeQ2_K} {
		src := make([]float32, rows*k)
		for i := range src {
			src[i] = float32(r.NormFloat64())
		}
		raw, _ := quantizedRow(t, typ, src)
		rb := len(raw) / rows
		ti := &gguf.TensorInfo{Name: "w", Type: typ, Dims: []int64{k, rows}, Size: int64(len(raw))}
		bias := make([]float32, rows)
		for i := range bias {
			bias[i] = float32(r.NormFloat64())
		}
		braw := make([]byte, 4*rows)
		require.NoError(t, gguf.Quantize(braw, bias, gguf.TypeF32))
		bti := &gguf.TensorInfo{Name: "b", Type: gguf.TypeF32, Dims: []int64{rows}, Size: 4 * rows}
		for _, threads := range []int{1, 3} {
			for n := 1; n <= 7; n++ {
				t.Run(fmt.Sprintf("%s/threads=%d/n=%d", typ, threads, n), func(t *testing.T) {
					be := New(Options{Threads: threads})
					defer be.Close()
					w, err := be.LoadWeight(ti, raw)
					require.NoError(t, err)
					bw, err := be.LoadWeight(bti, braw)
					require.NoError(t, err)
					xs := make([]float32, n*k)
					for i := range xs {
						xs[i] = float32(r.NormFloat64())
					}
					out, _ := be.NewBuf(n, rows)
					be.MatMul(out, BufFrom(n, k, xs), w, bw, n)
					var q qrows
					q.reset(n, k)
					for i := range n {
						quantizeRow(q.row(i), xs[i*k:(i+1)*k])
					}
					for i := range n {
						for j := range rows {
							var want float32
							if i < n/4*4 {
								want = qdot4(typ, raw[j*rb:(j+1)*rb], &q, i/4*4)[i%4] + bias[j]
							} else {
								want = qdot(typ, raw[j*rb:(j+1)*rb], q.row(i)) + bias[j]
							}
							require.Equal(t, math.Float32bits(want), math.Float32bits(Data(out)[i*rows+j]), "token %d row %d", i, j)
						}
					}
				})
			}
		}
	}
}
