package ptx

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
)

// matvecCases are batched decode products: n rows of X against up to three
// weight matrices (m1, m2, m3 rows of k). They cover every instantiation
// (n = 1, 2, 4, 8, 16 and the n between), k a multiple of 8 with and
// without a partial last tile (tiles are 256 or 512 elements), k not a
// multiple of 8 (scalar path), and row counts that leave the last block
// partly empty.
var matvecCases = []struct {
	n, m1, m2, m3, k int
	bias             bool
}{
	{1, 83, 0, 0, 256, false}, {2, 83, 0, 0, 256, true}, {3, 300, 0, 0, 45, false}, {4, 129, 0, 0, 1000, false},
	{5, 64, 0, 0, 64, true}, {7, 100, 0, 0, 4096, false}, {8, 257, 0, 0, 2056, false}, {9, 45, 0, 0, 88, false},
	{12, 33, 0, 0, 1544, false}, {13, 70, 3, 5, 800, true}, {16, 256, 64, 64, 2048, true}, {16, 64, 0, 0, 4104, false},
	{2, 31, 0, 0, 776, false}, {11, 90, 0, 0, 33, false}, {16, 4096, 0, 0, 4096, false},
}

// TestMatVecBatch: every row of a batched MatVec or GateUp has the bits
// that the same row computed alone has (matvec.cu keeps each row's
// accumulation order independent of the batch), and MatVec is within FP32
// rounding of a float64 reference. GateUp's up output equals MatVec's bits
// for the same weights, and its SwiGLU output the host's SwiGLU of them.
func TestMatVecBatch(t *testing.T) {
	ctx, k := testKernels(t)
	for ci, c := range matvecCases {
		name := fmt.Sprintf("MATVEC(n=%d,m=%d+%d+%d,k=%d,bias=%v)", c.n, c.m1, c.m2, c.m3, c.k, c.bias)
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(ci), 7))
			ms := [3]int{c.m1, c.m2, c.m3}
			rows := c.m1 + c.m2 + c.m3
			w := make([]uint16, rows*c.k)
			for i := range w {
				w[i] = gguf.F32ToF16(2*r.Float32() - 1)
			}
			x := make([]float32, c.n*c.k)
			for i := range x {
				x[i] = 2*r.Float32() - 1
			}
			bias := make([]float32, rows)
			for i := range bias {
				bias[i] = 2*r.Float32() - 1
			}
			gm := c.m1 / 2 // gateup: gate rows [0, gm), up rows [gm, 2gm) of W1
			var batch, alone [3][]float32
			var hb, hb2, hbAlone, hb2Alone, up []float32
			err := ctx.Do(func() error {
				var ptrs []cudadrv.DevicePtr
				var allocErr error
				alloc := func(bytes int) cudadrv.DevicePtr { // the error is kept in allocErr
					p, err := cudadrv.MemAlloc(max(bytes, 4))
					if err != nil {
						allocErr = err
						return 0
					}
					ptrs = append(ptrs, p)
					return p
				}
				defer func() {
					for _, p := range ptrs {
						cudadrv.MemFree(p)
					}
				}()
				dw, dx, db := alloc(2*len(w)), alloc(4*len(x)), alloc(4*rows)
				if allocErr != nil {
					return allocErr
				}
				if err := cudadrv.CopyToDevice(dw, w); err != nil {
					return err
				}
				if err := cudadrv.CopyToDevice(dx, x); err != nil {
					return err
				}
				if err := cudadrv.CopyToDevice(db, bias); err != nil {
					return err
				}
				// out runs MatVec for rows [i0, i0+n) of X and returns the
				// three outputs.
				out := func(i0, n int) ([3][]float32, error) {
					var res [3][]float32
					var outs []MatVecOut
					off := 0
					for j, m := range ms {
						if m == 0 {
							continue
						}
						o := MatVecOut{Y: alloc(4 * (n*m + guardLen)), W: dw.Offset(2 * off * c.k), M: m}
						if allocErr != nil {
							return res, allocErr
						}
						if c.bias {
							o.Bias = db.Offset(4 * off)
						}
						if err := poisonOut(o.Y, n*m); err != nil {
							return res, err
						}
						outs = append(outs, o)
						off += ms[j]
					}
					if err := k.MatVec(0, dx.Offset(4*i0*c.k), n, c.k, outs...); err != nil {
						return res, err
					}
					for j, o := range outs {
						var err error
						if res[j], err = readOut(o.Y, n*o.M); err != nil {
							return res, err
						}
					}
					return res, nil
				}
				var err error
				if batch, err = out(0, c.n); err != nil {
					return err
				}
				for i := range c.n {
					one, err := out(i, 1)
					if err != nil {
						return err
					}
					for j := range alone {
						alone[j] = append(alone[j], one[j]...)
					}
				}
				if gm == 0 {
					return nil
				}
				gateup := func(i0, n int) ([]float32, []float32, error) {
					h, h2 := alloc(4*(n*gm+guardLen)), alloc(4*(n*gm+guardLen))
					if allocErr != nil {
						return nil, nil, allocErr
					}
					if err := poisonOut(h, n*gm); err != nil {
						return nil, nil, err
					}
					if err := poisonOut(h2, n*gm); err != nil {
						return nil, nil, err
					}
					if err := k.GateUp(0, h, h2, dx.Offset(4*i0*c.k), dw, dw.Offset(2*gm*c.k), n, gm, c.k); err != nil {
						return nil, nil, err
					}
					a, err := readOut(h, n*gm)
					if err != nil {
						return nil, nil, err
					}
					b, err := readOut(h2, n*gm)
					return a, b, err
				}
				if hb, hb2, err = gateup(0, c.n); err != nil {
					return err
				}
				for i := range c.n {
					a, b, err := gateup(i, 1)
					if err != nil {
						return err
					}
					hbAlone, hb2Alone = append(hbAlone, a...), append(hb2Alone, b...)
				}
				y := alloc(4 * (c.n*2*gm + guardLen))
				if allocErr != nil {
					return allocErr
				}
				if err := poisonOut(y, c.n*2*gm); err != nil {
					return err
				}
				if err := k.MatVec(0, dx, c.n, c.k, MatVecOut{Y: y, W: dw, M: 2 * gm}); err != nil {
					return err
				}
				up, err = readOut(y, c.n*2*gm)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			off := 0
			for j, m := range ms {
				if m == 0 {
					continue
				}
				assertSameBits(t, fmt.Sprintf("output %d, batch vs rows alone", j), batch[j], alone[j], m)
				ref := reference(w[off*c.k:(off+m)*c.k], x, c.n, m, c.k, false)
				if c.bias {
					for i := range ref {
						ref[i] += float64(bias[off+i%m])
					}
				}
				if e := relErr(batch[j], ref); !(e < 1e-5) {
					t.Errorf("output %d: relative error %.3g vs float64, want < 1e-5", j, e)
				}
				off += m
			}
			if gm == 0 {
				return
			}
			assertSameBits(t, "gateup silu(g)*u, batch vs rows alone", hb, hbAlone, gm)
			assertSameBits(t, "gateup u, batch vs rows alone", hb2, hb2Alone, gm)
			var maxErr float64
			for i := range c.n {
				for r := range gm {
					g, u := up[i*2*gm+r], up[i*2*gm+gm+r]
					if math.Float32bits(hb2[i*gm+r]) != math.Float32bits(u) {
						t.Fatalf("gateup u[%d, %d] = %v, MatVec gives %v", i, r, hb2[i*gm+r], u)
					}
					want := float64(g) / (1 + math.Exp(-float64(g))) * float64(u)
					maxErr = max(maxErr, math.Abs(float64(hb[i*gm+r])-want)/(1e-3+math.Abs(want)))
				}
			}
			if maxErr > 1e-5 {
				t.Errorf("gateup silu(g)*u: relative error %.3g vs the host's SwiGLU of MatVec's g and u", maxErr)
			}
		})
	}
}

// poisonOut fills count floats at p with NaN and a guard behind them.
func poisonOut(p cudadrv.DevicePtr, count int) error {
	if err := cudadrv.MemsetD32(p, nanBits, count); err != nil {
		return err
	}
	return cudadrv.MemsetD32(p.Offset(4*count), guardBits, guardLen)
}

// readOut copies count floats back from p and checks the guard.
func readOut(p cudadrv.DevicePtr, count int) ([]float32, error) {
	buf := make([]float32, count+guardLen)
	if err := cudadrv.CopyFromDevice(buf, p); err != nil {
		return nil, err
	}
	for i, v := range buf[count:] {
		if math.Float32bits(v) != guardBits {
			return nil, fmt.Errorf("write past the end of the output at element %d", count+i)
		}
	}
	return buf[:count], nil
}

// assertSameBits fails unless got and want ((n, m) row-major) are bitwise
// equal.
func assertSameBits(t *testing.T, what string, got, want []float32, m int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	diff := 0
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			if diff == 0 {
				t.Errorf("%s: [%d, %d] = %v (%#08x), want %v (%#08x)", what, i/m, i%m, got[i],
					math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
			diff++
		}
	}
	if diff > 0 {
		t.Errorf("%s: %d of %d values differ", what, diff, len(got))
	}
}
