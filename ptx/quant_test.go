package ptx

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quantCase is a quantized (m, k) matrix and n activation rows.
type quantCase struct{ n, m, k int }

var quantCases = []quantCase{
	{1, 83, 96}, {2, 45, 32}, {3, 129, 1024}, {4, 64, 4096}, {5, 257, 160}, {8, 100, 2048}, {11, 31, 544},
	{16, 300, 4096}, {16, 8, 32},
}

// quantMatrix returns a random (m, k) matrix quantized to t (GGUF blocks),
// its dequantized values and its planes.
func quantMatrix(t *testing.T, r *rand.Rand, qt QuantType, m, k int) (blocks []byte, deq []float32, quants, scales []byte) {
	t.Helper()
	gt := gguf.TypeQ8_0
	if qt == QuantQ4_0 {
		gt = gguf.TypeQ4_0
	}
	w := make([]float32, m*k)
	for i := range w {
		w[i] = 2*r.Float32() - 1
	}
	blocks = make([]byte, m*k/32*(qt.QuantBlockBytes()+2))
	require.NoError(t, gguf.Quantize(blocks, w, gt))
	deq = make([]float32, m*k)
	require.NoError(t, gguf.Dequantize(deq, blocks, gt))
	quants, scales = make([]byte, m*k/32*qt.QuantBlockBytes()), make([]byte, m*k/16)
	require.NoError(t, PackQuant(qt, quants, scales, blocks, m, k))
	return blocks, deq, quants, scales
}

// TestMatVecQ: the quantized products are within FP32 rounding of a
// float64 product of the CPU's dequantized weights (NMSE ≤ 1e-10 for both
// types: each block is scaled once, after its 32 products), every row of a
// batch has the bits of the same row alone, the bias is added, the FP16
// dequantization equals gguf.DequantizeF16 bit for bit, and the embedding
// lookup equals gguf.Dequantize's rows bit for bit.
func TestMatVecQ(t *testing.T) {
	ctx, kern := testKernels(t)
	for _, qt := range []QuantType{QuantQ8_0, QuantQ4_0} {
		for ci, c := range quantCases {
			t.Run(fmt.Sprintf("MUL_MAT(type=%s,n=%d,m=%d,k=%d)", qt, c.n, c.m, c.k), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(ci), uint64(qt)))
				blocks, deq, quants, scales := quantMatrix(t, r, qt, c.m, c.k)
				x := make([]float32, c.n*c.k)
				for i := range x {
					x[i] = 2*r.Float32() - 1
				}
				bias := make([]float32, c.m)
				for i := range bias {
					bias[i] = r.Float32()
				}
				tokens := make([]int32, c.n)
				for i := range tokens {
					tokens[i] = int32(r.IntN(c.m))
				}
				var batch, alone, withBias, emb []float32
				var f16 []uint16
				err := ctx.Do(func() error {
					var ptrs []cudadrv.DevicePtr
					defer func() {
						for _, p := range ptrs {
							cudadrv.MemFree(p)
						}
					}()
					alloc := func(bytes int) (cudadrv.DevicePtr, error) {
						p, err := cudadrv.MemAlloc(bytes)
						if err == nil {
							ptrs = append(ptrs, p)
						}
						return p, err
					}
					var dq, ds, dx, dy, db, dt, de, dh cudadrv.DevicePtr
					for _, a := range []struct {
						p     *cudadrv.DevicePtr
						bytes int
					}{{&dq, len(quants)}, {&ds, len(scales)}, {&dx, 4 * len(x)}, {&dy, 4 * c.n * c.m}, {&db, 4 * c.m},
						{&dt, 4 * c.n}, {&de, 4 * c.n * c.k}, {&dh, 2 * c.m * c.k}} {
						var err error
						if *a.p, err = alloc(a.bytes); err != nil {
							return err
						}
					}
					for _, cp := range []error{cudadrv.CopyToDevice(dq, quants), cudadrv.CopyToDevice(ds, scales),
						cudadrv.CopyToDevice(dx, x), cudadrv.CopyToDevice(db, bias), cudadrv.CopyToDevice(dt, tokens)} {
						if cp != nil {
							return cp
						}
					}
					w := &QuantWeight{Type: qt, Quants: dq, Scales: ds, M: c.m, K: c.k}
					read := func(dst []float32) error {
						if err := cudadrv.Stream(0).Synchronize(); err != nil {
							return err
						}
						return cudadrv.CopyFromDevice(dst, dy)
					}
					if err := kern.MatVecQ(0, dy, dx, w, 0, c.n); err != nil {
						return err
					}
					batch = make([]float32, c.n*c.m)
					if err := read(batch); err != nil {
						return err
					}
					for i := range c.n {
						if err := kern.MatVecQ(0, dy, dx.Offset(4*i*c.k), w, 0, 1); err != nil {
							return err
						}
						row := make([]float32, c.m)
						if err := read(row); err != nil {
							return err
						}
						alone = append(alone, row...)
					}
					if err := kern.MatVecQ(0, dy, dx, w, db, c.n); err != nil {
						return err
					}
					withBias = make([]float32, c.n*c.m)
					if err := read(withBias); err != nil {
						return err
					}
					if err := kern.EmbedQ(0, de, w, dt, c.n); err != nil {
						return err
					}
					if err := kern.DequantF16(0, dh, w); err != nil {
						return err
					}
					if err := cudadrv.Stream(0).Synchronize(); err != nil {
						return err
					}
					emb, f16 = make([]float32, c.n*c.k), make([]uint16, c.m*c.k)
					if err := cudadrv.CopyFromDevice(emb, de); err != nil {
						return err
					}
					return cudadrv.CopyFromDevice(f16, dh)
				})
				require.NoError(t, err)

				var num, den float64
				for i := range c.n {
					for rr := range c.m {
						var ref float64
						for l := range c.k {
							ref += float64(deq[rr*c.k+l]) * float64(x[i*c.k+l])
						}
						d := float64(batch[i*c.m+rr]) - ref
						num, den = num+d*d, den+ref*ref
					}
				}
				e := num / den
				assert.LessOrEqual(t, e, 1e-10, "NMSE")
				t.Logf("NMSE %.2g", e)
				for i := range batch {
					if math.Float32bits(batch[i]) != math.Float32bits(alone[i]) {
						t.Fatalf("row %d of the batch: %v, alone %v", i/c.m, batch[i], alone[i])
					}
					assert.InDelta(t, batch[i]+bias[i%c.m], withBias[i], 1e-5*(1+math.Abs(float64(batch[i]))))
				}
				for i, tok := range tokens {
					assert.Equal(t, deq[int(tok)*c.k:(int(tok)+1)*c.k], emb[i*c.k:(i+1)*c.k], "embedding row %d", tok)
				}
				wantF16 := make([]uint16, c.m*c.k)
				require.NoError(t, gguf.DequantizeF16(wantF16, blocks, map[QuantType]gguf.Type{QuantQ8_0: gguf.TypeQ8_0, QuantQ4_0: gguf.TypeQ4_0}[qt]))
				assert.True(t, slices.Equal(wantF16, f16), "FP16 dequantization differs from gguf.DequantizeF16")
			})
		}
	}
}

// TestPackQuant: the planes hold each block's scale and quants, in block
// order, and wrong sizes are refused.
func TestPackQuant(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, qt := range []QuantType{QuantQ8_0, QuantQ4_0} {
		blocks, _, quants, scales := quantMatrix(t, r, qt, 3, 64)
		bb := qt.QuantBlockBytes() + 2
		for b := range 6 {
			assert.Equal(t, blocks[b*bb:b*bb+2], scales[2*b:2*b+2])
			assert.Equal(t, blocks[b*bb+2:(b+1)*bb], quants[b*qt.QuantBlockBytes():(b+1)*qt.QuantBlockBytes()])
		}
		assert.Error(t, PackQuant(qt, quants, scales, blocks[:len(blocks)-1], 3, 64))
		assert.Error(t, PackQuant(qt, quants, scales, blocks, 3, 48))
	}
}
