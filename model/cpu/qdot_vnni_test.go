//go:build amd64

package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/stretchr/testify/assert"
)

// vnniKernels pairs each VNNI four-row kernel with the AVX2 one it must
// equal bit for bit.
// (n counts the type's blocks, xs is ignored by the types without mins).
var vnniKernels = []struct {
	typ        gguf.Type
	vnni, avx2 func(w *byte, xq *int8, xd, xs *float32, k, n int, out *[4]float32)
}{
	{gguf.TypeQ4_0, noSums(qdot4Q4_0VNNI), noSums(qdot4Q4_0AVX2)},
	{gguf.TypeQ4_1, qdot4Q4_1VNNI, qdot4Q4_1AVX2},
	{gguf.TypeQ5_0, noSums(qdot4Q5_0VNNI), noSums(qdot4Q5_0AVX2)},
	{gguf.TypeQ5_1, qdot4Q5_1VNNI, qdot4Q5_1AVX2},
	{gguf.TypeIQ4_NL, noSums(qdot4IQ4_NLVNNI), noSums(qdot4IQ4_NLAVX2)},
	{gguf.TypeQ8_0, noSums(qdot4Q8_0VNNI), noSums(qdot4Q8_0AVX2)},
	{gguf.TypeQ4_K, qdot4Q4_KVNNI, qdot4Q4_KAVX2},
	{gguf.TypeQ5_K, qdot4Q5_KVNNI, qdot4Q5_KAVX2},
}

// noSums adapts a four-row kernel of a type without mins to the signature
// with the activation sums.
func noSums(f func(w *byte, xq *int8, xd *float32, k, n int, out *[4]float32)) func(*byte, *int8, *float32, *float32, int, int, *[4]float32) {
	return func(w *byte, xq *int8, xd, _ *float32, k, n int, out *[4]float32) { f(w, xq, xd, k, n, out) }
}

// TestQDot4VNNI checks the VNNI kernels against the AVX2 ones on real
// quantized rows (random scales, so every float operation rounds) and on
// random bytes with unit scales (every code, Q8_0's −128 included): the
// integer lanes are the same, so the results must be the same bits. It is
// skipped, saying so, on a CPU without AVX512-VNNI.
func TestQDot4VNNI(t *testing.T) {
	if !useVNNI {
		t.Skip("this CPU has no AVX512-VNNI/AVX512VL: the VNNI kernels cannot run here")
	}
	r := rand.New(rand.NewPCG(23, 24))
	for _, kern := range vnniKernels {
		for _, nb := range []int{1, 2, 5} {
			for _, codes := range []string{"quantized", "random"} {
				t.Run(fmt.Sprintf("%s/blocks=%d/%s", kern.typ, nb, codes), func(t *testing.T) {
					k := kern.typ.BlockSize() * nb
					w := make([]float32, k)
					for i := range w {
						w[i] = float32(r.NormFloat64())
					}
					raw, _ := quantizedRow(t, kern.typ, w)
					if codes == "random" {
						for i := range raw {
							raw[i] = byte(r.UintN(256))
						}
						setUnitScales(kern.typ, raw)
					}
					var q qrows
					q.reset(4, k)
					for i := range 4 {
						x := make([]float32, k)
						for j := range x {
							x[j] = float32(r.NormFloat64())
						}
						quantizeRow(q.row(i), x)
					}
					var got, want [4]float32
					kern.vnni(&raw[0], &q.qs[0], &q.d[0], &q.s[0], k, nb, &got)
					kern.avx2(&raw[0], &q.qs[0], &q.d[0], &q.s[0], k, nb, &want)
					for j := range 4 {
						assert.Equal(t, math.Float32bits(want[j]), math.Float32bits(got[j]), "row %d: %v vs %v", j, got[j], want[j])
					}
				})
			}
		}
	}
}

// BenchmarkQDot4VNNI measures the VNNI four-row kernels against the AVX2
// ones as BenchmarkQDot4 does.
func BenchmarkQDot4VNNI(b *testing.B) {
	const k, rows = 4096, 64
	r := rand.New(rand.NewPCG(1, 2))
	for _, kern := range vnniKernels {
		src := make([]float32, k*rows)
		for i := range src {
			src[i] = float32(r.NormFloat64())
		}
		size, _ := kern.typ.RowSize(int64(len(src)))
		raw := make([]byte, size)
		if err := gguf.Quantize(raw, src, kern.typ); err != nil {
			b.Fatal(err)
		}
		var q qrows
		q.reset(4, k)
		for i := range 4 {
			quantizeRow(q.row(i), src[i*k:(i+1)*k])
		}
		rb := int(size) / rows
		for name, f := range map[string]func(*byte, *int8, *float32, *float32, int, int, *[4]float32){"vnni": kern.vnni, "avx2": kern.avx2} {
			b.Run(fmt.Sprintf("%s/%s", kern.typ, name), func(b *testing.B) {
				if name == "vnni" && !useVNNI {
					b.Skip("no AVX512-VNNI")
				}
				b.SetBytes(int64(size))
				var out [4]float32
				for b.Loop() {
					for i := range rows {
						f(&raw[i*rb], &q.qs[0], &q.d[0], &q.s[0], k, k/kern.typ.BlockSize(), &out)
					}
				}
			})
		}
	}
}
