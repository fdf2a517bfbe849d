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

// quantCases are the shapes for the 32-element types; quantCasesK those
// for the K-quants (k a multiple of 256). Row counts are not powers of two.
var (
	quantCases = []quantCase{
		{1, 83, 96}, {2, 45, 32}, {3, 129, 1024}, {4, 64, 4096}, {5, 257, 160}, {8, 100, 2048}, {11, 31, 544},
		{16, 300, 4096}, {16, 8, 32},
	}
	quantCasesK = []quantCase{
		{1, 83, 256}, {2, 45, 512}, {3, 129, 1024}, {4, 64, 4096}, {5, 257, 768}, {8, 100, 2048}, {11, 31, 1280},
		{16, 300, 4096}, {16, 8, 256},
	}
)

// quantHalves lists the byte offsets of the FP16 fields (scales, minimums)
// in each type's GGUF block, from ggml's block layouts.
var quantHalves = [numQuantTypes][]int{
	QuantQ8_0: {0}, QuantQ4_0: {0}, QuantQ4_1: {0, 2}, QuantQ5_0: {0}, QuantQ5_1: {0, 2}, QuantIQ4_NL: {0},
	QuantQ2_K: {80, 82}, QuantQ3_K: {108}, QuantQ4_K: {0, 2}, QuantQ5_K: {0, 2}, QuantQ6_K: {208},
}

// quantMatrix returns a random (m, k) matrix of type qt as GGUF blocks
// (random bytes, with finite random FP16 scales: every quant, sub-block
// scale and high bit pattern occurs), its values as the CPU dequantizes
// them, and its planes.
func quantMatrix(t *testing.T, r *rand.Rand, qt QuantType, m, k int) (blocks []byte, deq []float32, planes [3][]byte) {
	t.Helper()
	gt := qt.GGUF()
	nb := m * k / gt.BlockSize()
	bb := gt.TypeSize()
	blocks = make([]byte, nb*bb)
	for i := range blocks {
		blocks[i] = byte(r.Uint32())
	}
	for b := range nb {
		for _, off := range quantHalves[qt] {
			h := gguf.F32ToF16((2*r.Float32() - 1) / 64)
			blocks[b*bb+off], blocks[b*bb+off+1] = byte(h), byte(h>>8)
		}
	}
	deq = make([]float32, m*k)
	require.NoError(t, gguf.Dequantize(deq, blocks, gt))
	for j, n := range qt.PlaneBytes(int64(m), int64(k)) {
		if n > 0 {
			planes[j] = make([]byte, n)
		}
	}
	require.NoError(t, PackQuant(qt, planes, blocks, m, k))
	return blocks, deq, planes
}

// TestMatVecQ: for every type, the quantized products are within FP32
// rounding of a float64 product of the CPU's dequantized weights (NMSE ≤
// 1e-10: each run of a unit is scaled once, after its products), every
// row of a batch has the bits of the same row alone, the bias is added,
// the FP16 dequantization equals gguf.DequantizeF16 bit for bit, the
// embedding lookup equals gguf.Dequantize's rows bit for bit, three
// products fused in one launch (of two heights, one with a bias) have the
// bits of each alone, and the fused gate/up equals the two products and
// swiglu_f32 bit for bit.
func TestMatVecQ(t *testing.T) {
	ctx, kern := testKernels(t)
	for qt := range numQuantTypes {
		cases := quantCases
		if qt.BlockSize() == 256 {
			cases = quantCasesK
		}
		for ci, c := range cases {
			t.Run(fmt.Sprintf("MUL_MAT(type=%s,n=%d,m=%d,k=%d)", qt, c.n, c.m, c.k), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(ci), uint64(qt)))
				blocks, deq, planes := quantMatrix(t, r, qt, c.m, c.k)
				m2 := c.m/2 + 1
				_, _, planes2 := quantMatrix(t, r, qt, m2, c.k)   // a second product of another height
				_, _, planesUp := quantMatrix(t, r, qt, c.m, c.k) // the up matrix of a gate/up pair
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
				var fused [3][]float32
				var hb, hb2, wantHB, wantHB2, alone2 []float32
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
					upload := func(planes [3][]byte, m int) (*QuantWeight, error) {
						w := &QuantWeight{Type: qt, M: m, K: c.k}
						for j, plane := range planes {
							if plane == nil {
								continue
							}
							var err error
							if w.Planes[j], err = alloc(len(plane)); err != nil {
								return nil, err
							}
							if err := cudadrv.CopyToDevice(w.Planes[j], plane); err != nil {
								return nil, err
							}
						}
						return w, nil
					}
					w, err := upload(planes, c.m)
					if err != nil {
						return err
					}
					w2, err := upload(planes2, m2)
					if err != nil {
						return err
					}
					wu, err := upload(planesUp, c.m)
					if err != nil {
						return err
					}
					var dx, dy, db, dt, de, dh cudadrv.DevicePtr
					for _, a := range []struct {
						p     *cudadrv.DevicePtr
						bytes int
					}{{&dx, 4 * len(x)}, {&dy, 4 * c.n * c.m}, {&db, 4 * c.m},
						{&dt, 4 * c.n}, {&de, 4 * c.n * c.k}, {&dh, 2 * c.m * c.k}} {
						var err error
						if *a.p, err = alloc(a.bytes); err != nil {
							return err
						}
					}
					for _, cp := range []error{cudadrv.CopyToDevice(dx, x), cudadrv.CopyToDevice(db, bias), cudadrv.CopyToDevice(dt, tokens)} {
						if cp != nil {
							return cp
						}
					}
					read := func(dst []float32) error {
						if err := cudadrv.Stream(0).Synchronize(); err != nil {
							return err
						}
						return cudadrv.CopyFromDevice(dst, dy)
					}
					if err := kern.MatVecQ(0, dx, c.n, c.k, QuantOut{Y: dy, W: *w}); err != nil {
						return err
					}
					batch = make([]float32, c.n*c.m)
					if err := read(batch); err != nil {
						return err
					}
					for i := range c.n {
						if err := kern.MatVecQ(0, dx.Offset(4*i*c.k), 1, c.k, QuantOut{Y: dy, W: *w}); err != nil {
							return err
						}
						row := make([]float32, c.m)
						if err := read(row); err != nil {
							return err
						}
						alone = append(alone, row...)
					}
					if err := kern.MatVecQ(0, dx, c.n, c.k, QuantOut{Y: dy, W: *w, Bias: db}); err != nil {
						return err
					}
					withBias = make([]float32, c.n*c.m)
					if err := read(withBias); err != nil {
						return err
					}
					// Three products in one launch: W, W2 with a bias, W.
					var ys [3]cudadrv.DevicePtr
					for j, m := range []int{c.m, m2, c.m} {
						if ys[j], err = alloc(4 * c.n * m); err != nil {
							return err
						}
					}
					err = kern.MatVecQ(0, dx, c.n, c.k, QuantOut{Y: ys[0], W: *w}, QuantOut{Y: ys[1], W: *w2, Bias: db},
						QuantOut{Y: ys[2], W: *w})
					if err != nil {
						return err
					}
					if err := cudadrv.Stream(0).Synchronize(); err != nil {
						return err
					}
					for j, m := range []int{c.m, m2, c.m} {
						fused[j] = make([]float32, c.n*m)
						if err := cudadrv.CopyFromDevice(fused[j], ys[j]); err != nil {
							return err
						}
					}
					// W2 alone, into ys[1], to compare with the fused one.
					if err := kern.MatVecQ(0, dx, c.n, c.k, QuantOut{Y: ys[1], W: *w2, Bias: db}); err != nil {
						return err
					}
					// Gate/up: fused, then the products and swiglu_f32.
					dhb, err := alloc(4 * c.n * c.m)
					if err != nil {
						return err
					}
					dhb2, err := alloc(4 * c.n * c.m)
					if err != nil {
						return err
					}
					if err := kern.GateUpQ(0, dhb, dhb2, dx, w, wu, c.n); err != nil {
						return err
					}
					if err := cudadrv.Stream(0).Synchronize(); err != nil {
						return err
					}
					hb, hb2 = make([]float32, c.n*c.m), make([]float32, c.n*c.m)
					if err := cudadrv.CopyFromDevice(hb, dhb); err != nil {
						return err
					}
					if err := cudadrv.CopyFromDevice(hb2, dhb2); err != nil {
						return err
					}
					if err := kern.MatVecQ(0, dx, c.n, c.k, QuantOut{Y: dhb2, W: *wu}); err != nil {
						return err
					}
					if err := kern.MatVecQ(0, dx, c.n, c.k, QuantOut{Y: dhb, W: *w}); err != nil {
						return err
					}
					if err := kern.SwiGLU(0, dhb, dhb, dhb2, c.n*c.m); err != nil {
						return err
					}
					if err := cudadrv.Stream(0).Synchronize(); err != nil {
						return err
					}
					wantHB, wantHB2 = make([]float32, c.n*c.m), make([]float32, c.n*c.m)
					if err := cudadrv.CopyFromDevice(wantHB, dhb); err != nil {
						return err
					}
					if err := cudadrv.CopyFromDevice(wantHB2, dhb2); err != nil {
						return err
					}
					alone2 = make([]float32, c.n*m2)
					if err := cudadrv.CopyFromDevice(alone2, ys[1]); err != nil {
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
				same := func(a, b []float32) bool {
					return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
				}
				assert.True(t, same(batch, fused[0]), "first of three fused products")
				assert.True(t, same(batch, fused[2]), "third of three fused products")
				assert.True(t, same(alone2, fused[1]), "second fused product (W2 + bias) alone")
				assert.True(t, same(wantHB2, hb2), "gate/up: up product")
				assert.True(t, same(wantHB, hb), "gate/up: silu(gate)·up")
				for i, tok := range tokens {
					assert.Equal(t, deq[int(tok)*c.k:(int(tok)+1)*c.k], emb[i*c.k:(i+1)*c.k], "embedding row %d", tok)
				}
				wantF16 := make([]uint16, c.m*c.k)
				require.NoError(t, gguf.DequantizeF16(wantF16, blocks, qt.GGUF()))
				assert.True(t, slices.Equal(wantF16, f16), "FP16 dequantization differs from gguf.DequantizeF16")
			})
		}
	}
}

// TestPackQuant: each type's planes take every byte of its GGUF block
// exactly once (so nothing is lost or expanded), the planes hold the
// blocks in order, and wrong sizes are refused.
func TestPackQuant(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for qt := range numQuantTypes {
		t.Run(qt.String(), func(t *testing.T) {
			f := quantFormats[qt]
			bb := qt.GGUF().TypeSize()
			seen := make([]int, bb)
			for _, s := range f.planes {
				for i := s.off; i < s.off+s.n; i++ {
					seen[i]++
				}
			}
			for i, n := range seen {
				assert.Equal(t, 1, n, "byte %d of a %s block is in %d planes", i, qt, n)
			}
			k := 2 * qt.BlockSize()
			blocks, _, planes := quantMatrix(t, r, qt, 3, k)
			var total int
			for j, s := range f.planes {
				total += len(planes[j])
				for b := range 6 {
					assert.Equal(t, blocks[b*bb+s.off:b*bb+s.off+s.n], planes[j][b*s.n:(b+1)*s.n], "plane %d block %d", j, b)
				}
			}
			assert.Equal(t, len(blocks), total, "plane bytes")
			assert.Error(t, PackQuant(qt, planes, blocks[:len(blocks)-1], 3, k))
			assert.Error(t, PackQuant(qt, planes, blocks, 3, k-32))
			short := planes
			short[0] = short[0][:len(short[0])-1]
			assert.Error(t, PackQuant(qt, short, blocks, 3, k))
		})
	}
}
