package ptx

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/gputest"
)

// The layout under test, in row-major (rows, cols) with k innermost:
//
//	W (m, k) FP16, X (n, k) FP32, Y (n, m) FP32,  Y[i, j] = Σ_l X[i, l]·W[j, l]
//
// Shapes are (n, m, k). Square shapes alone would hide transposition bugs,
// so most are not.
var gemmShapes = []struct{ n, m, k int }{
	{1, 1, 1},
	{1, 512, 256},     // matvec
	{1, 1376, 512},    // decode-shaped (1×11008×4096 / 8)
	{1, 11008, 4096},  // decode, LLaMA-7B FFN up
	{1, 4096, 11008},  // decode, LLaMA-7B FFN down
	{2, 300, 77},      // small n, odd k (matvec's scalar path)
	{3, 129, 1000},    // small n, k a multiple of 8 (matvec's 16-byte path)
	{4, 64, 64},       // tile-sized
	{16, 129, 1000},   // largest n MatMulF16 sends to MatVec
	{17, 129, 1000},   // smallest n MatMulF16 sends to the tiled kernel
	{83, 45, 128},     // odd sizes
	{45, 83, 127},     // odd sizes, odd k
	{65, 65, 33},      // one past the tile edges
	{1000, 16, 64},    // tall
	{8, 3000, 96},     // wide
	{257, 129, 1000},  // several tiles, ragged edges
	{128, 256, 512},   // aligned
	{512, 1024, 2048}, // prefill-sized
}

// matmulInputs holds one random problem and its float64 references.
type matmulInputs struct {
	n, m, k int
	w       []uint16  // FP16 bits, (m, k)
	x       []float32 // (n, k)
	ref     []float64 // Y from W and X exactly
	ref16   []float64 // Y from W and X rounded to FP16 (what BLAS computes)
}

func newInputs(n, m, k int, seed uint64, refs bool) *matmulInputs {
	r := rand.New(rand.NewPCG(seed, uint64(n*1000003+m*1009+k)))
	in := &matmulInputs{n: n, m: m, k: k, w: make([]uint16, m*k), x: make([]float32, n*k)}
	for i := range in.w {
		in.w[i] = gguf.F32ToF16(2*r.Float32() - 1)
	}
	for i := range in.x {
		in.x[i] = 2*r.Float32() - 1
	}
	if refs {
		in.ref = reference(in.w, in.x, n, m, k, false)
		in.ref16 = reference(in.w, in.x, n, m, k, true)
	}
	return in
}

// reference computes Y[i, j] = Σ_l X[i, l]·W[j, l] in float64, optionally
// with X rounded to FP16 first.
func reference(w []uint16, x []float32, n, m, k int, roundX bool) []float64 {
	wf := make([]float64, len(w))
	for i, h := range w {
		wf[i] = float64(gguf.F16ToF32(h))
	}
	xf := make([]float64, len(x))
	for i, v := range x {
		if roundX {
			v = gguf.F16ToF32(gguf.F32ToF16(v))
		}
		xf[i] = float64(v)
	}
	y := make([]float64, n*m)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			xr := xf[i*k : (i+1)*k]
			for j := 0; j < m; j++ {
				wr := wf[j*k : (j+1)*k]
				var s float64
				for l, xv := range xr {
					s += xv * wr[l]
				}
				y[i*m+j] = s
			}
		}()
	}
	wg.Wait()
	return y
}

// relErr returns ‖got − ref‖ / ‖ref‖, or +Inf if got has a NaN or Inf.
func relErr(got []float32, ref []float64) float64 {
	var num, den float64
	for i, g := range got {
		if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
			return math.Inf(1)
		}
		d := float64(g) - ref[i]
		num += d * d
		den += ref[i] * ref[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

const (
	nanBits   = 0x7fc00000 // poison for outputs
	guardBits = 0x5a5a5a5a // sentinel after the output
	guardLen  = 64
)

// device holds one problem's buffers on the GPU. w and x start off bytes
// into their allocations (0: MemAlloc's 256-byte alignment).
type device struct {
	w, x, y      cudadrv.DevicePtr
	wBase, xBase cudadrv.DevicePtr
}

func upload(in *matmulInputs) (*device, error) { return uploadAt(in, 0, 0) }

// uploadAt is upload with W and X placed wOff and xOff bytes past an
// aligned address (wOff even, xOff a multiple of 4).
func uploadAt(in *matmulInputs, wOff, xOff int) (*device, error) {
	d := &device{}
	var err error
	if d.wBase, err = cudadrv.MemAlloc(2*len(in.w) + wOff); err != nil {
		return nil, err
	}
	if d.xBase, err = cudadrv.MemAlloc(4*len(in.x) + xOff); err != nil {
		d.free()
		return nil, err
	}
	if d.y, err = cudadrv.MemAlloc(4 * (in.n*in.m + guardLen)); err != nil {
		d.free()
		return nil, err
	}
	d.w, d.x = d.wBase.Offset(wOff), d.xBase.Offset(xOff)
	if err := cudadrv.CopyToDevice(d.w, in.w); err != nil {
		d.free()
		return nil, err
	}
	if err := cudadrv.CopyToDevice(d.x, in.x); err != nil {
		d.free()
		return nil, err
	}
	return d, nil
}

func (d *device) free() {
	cudadrv.MemFree(d.wBase)
	cudadrv.MemFree(d.xBase)
	cudadrv.MemFree(d.y)
}

// poison fills Y with NaN and the guard behind it with a sentinel.
func (d *device) poison(in *matmulInputs) error {
	if err := cudadrv.MemsetD32(d.y, nanBits, in.n*in.m); err != nil {
		return err
	}
	return cudadrv.MemsetD32(d.y.Offset(4*in.n*in.m), guardBits, guardLen)
}

// result copies Y back and checks the guard.
func (d *device) result(in *matmulInputs) ([]float32, error) {
	buf := make([]float32, in.n*in.m+guardLen)
	if err := cudadrv.CopyFromDevice(buf, d.y); err != nil {
		return nil, err
	}
	for i, v := range buf[in.n*in.m:] {
		if math.Float32bits(v) != guardBits {
			return nil, fmt.Errorf("write past the end of Y at element %d", in.n*in.m+i)
		}
	}
	return buf[:in.n*in.m], nil
}

var (
	kernOnce sync.Once
	kern     *Kernels
	kernErr  error
)

func testKernels(t testing.TB) (*cudadrv.Context, *Kernels) {
	t.Helper()
	ctx := gputest.Context(t)
	kernOnce.Do(func() { kern, kernErr = Load(ctx) })
	if kernErr != nil {
		t.Fatal(kernErr)
	}
	return ctx, kern
}

func TestLoad(t *testing.T) {
	ctx, k := testKernels(t)
	major, minor, err := ctx.Device().ComputeCapability()
	if err != nil {
		t.Fatal(err)
	}
	mode := k.Mode()
	t.Logf("compute %d.%d: %v (kernels built by %s)", major, minor, mode, NVCCVersion)
	if mode.PTXVersion != 52 {
		t.Errorf("PTX version %d, want 52", mode.PTXVersion)
	}
	want := 10*major + minor
	if mode.Native {
		want = 52
	}
	if mode.BinaryVersion != want {
		t.Errorf("binary version %d, want %d", mode.BinaryVersion, want)
	}
}

// matmul is the signature of MatMulF16.
type matmul func(s cudadrv.Stream, y, x, w cudadrv.DevicePtr, n, m, k int) error

// runCase uploads, poisons, runs and checks one shape with one
// implementation, and returns Y.
func runCase(t *testing.T, ctx *cudadrv.Context, in *matmulInputs, ref []float64, tol float64, mm matmul) []float32 {
	t.Helper()
	return runCaseAt(t, ctx, in, 0, 0, ref, tol, mm)
}

// runCaseAt is runCase with W and X wOff and xOff bytes off alignment.
func runCaseAt(t *testing.T, ctx *cudadrv.Context, in *matmulInputs, wOff, xOff int, ref []float64, tol float64,
	mm matmul) []float32 {
	t.Helper()
	var got []float32
	err := ctx.Do(func() error {
		d, err := uploadAt(in, wOff, xOff)
		if err != nil {
			return err
		}
		defer d.free()
		for rep := 0; rep < 2; rep++ { // twice: the second run sees fresh poison too
			if err := d.poison(in); err != nil {
				return err
			}
			if err := mm(0, d.y, d.x, d.w, in.n, in.m, in.k); err != nil {
				return err
			}
			if got, err = d.result(in); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e := relErr(got, ref)
	if !(e < tol) { // NaN fails too
		t.Fatalf("relative error %.3g, want < %.0g (Y[0]=%v, ref %v)", e, tol, got[0], ref[0])
	}
	t.Logf("relative error %.2g", e)
	return got
}

func shapeName(n, m, k int) string { return fmt.Sprintf("MUL_MAT(type=f16,n=%d,m=%d,k=%d)", n, m, k) }

// The built-in kernels keep X in FP32: the only rounding left is FP32
// accumulation, far below 1e-3. Every shape runs through the tiled kernel
// and through MatMulF16, whose result must have the bits of the kernel it
// chose: for n ≤ MatVecMaxN those of a direct MatVec call (which sums in
// another order than the tiled kernel, so a wrong choice shows), and with
// W and X off the 16-byte alignment that MatVec's vector loads need, those
// of the tiled kernel.
func TestMatMulF16Kernels(t *testing.T) {
	ctx, k := testKernels(t)
	const tol = 1e-5
	matVec := func(s cudadrv.Stream, y, x, w cudadrv.DevicePtr, n, m, kk int) error {
		return k.MatVec(s, x, n, kk, MatVecOut{Y: y, W: w, M: m})
	}
	for i, sh := range gemmShapes {
		in := newInputs(sh.n, sh.m, sh.k, uint64(i), true)
		t.Run(shapeName(sh.n, sh.m, sh.k), func(t *testing.T) {
			var tiled []float32
			tiledBits := func(t *testing.T) []float32 { // run once, whichever subtest needs it first
				t.Helper()
				if tiled == nil {
					tiled = runCase(t, ctx, in, in.ref, tol, k.gemmTiled)
				}
				return tiled
			}
			t.Run("tiled", func(t *testing.T) { tiledBits(t) })
			if sh.n > MatVecMaxN {
				t.Run("MatMulF16=tiled", func(t *testing.T) {
					got := runCase(t, ctx, in, in.ref, tol, k.MatMulF16)
					assertSameBits(t, "MatMulF16 vs the tiled kernel", got, tiledBits(t), sh.m)
				})
				return
			}
			t.Run("MatMulF16=matvec", func(t *testing.T) {
				got := runCase(t, ctx, in, in.ref, tol, k.MatMulF16)
				want := runCase(t, ctx, in, in.ref, tol, matVec)
				assertSameBits(t, "MatMulF16 vs MatVec", got, want, sh.m)
			})
			if sh.k%8 == 0 {
				t.Run("MatMulF16=tiled,unaligned", func(t *testing.T) {
					got := runCaseAt(t, ctx, in, 2, 4, in.ref, tol, k.MatMulF16)
					assertSameBits(t, "unaligned MatMulF16 vs the tiled kernel", got, tiledBits(t), sh.m)
				})
			}
		})
	}
}

// MatMulF16 sends a product to MatVec only where MatVec's 16-byte loads
// can read W and X.
func TestMatVecAligned(t *testing.T) {
	for _, c := range []struct {
		x, w cudadrv.DevicePtr
		k    int
		want bool
	}{
		{0x1000, 0x2000, 4096, true},
		{0x1010, 0x2030, 4096, true},
		{0x1004, 0x2000, 4096, false}, // X 4 bytes off
		{0x1000, 0x2002, 4096, false}, // W 2 bytes off
		{0x1000, 0x2008, 8, false},    // W 8 bytes off
		{0x1004, 0x2002, 77, true},    // odd k: element loads only
		{0x1004, 0x2002, 1004, true},  // k not a multiple of 8
	} {
		if got := matVecAligned(c.x, c.w, c.k); got != c.want {
			t.Errorf("matVecAligned(x=%#x, w=%#x, k=%d) = %v, want %v", c.x, c.w, c.k, got, c.want)
		}
	}
}

// cuBLAS computes with X rounded to FP16: it must match that reference to
// FP32 accuracy, and the exact one within the documented FP16 rounding.
func TestMatMulF16BLAS(t *testing.T) {
	ctx, k := testKernels(t)
	lib := gputest.BLAS(t, ctx)
	major, minor, patch := lib.Version()
	t.Logf("cuBLAS %d.%d.%d from %s", major, minor, patch, lib.Path())
	var blas *BLAS
	if err := ctx.Do(func() error {
		h, err := lib.NewHandle()
		if err != nil {
			return err
		}
		blas = NewBLAS(k, h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer ctx.Do(func() error {
		blas.Close()
		return blas.h.Destroy()
	})
	for i, sh := range gemmShapes {
		in := newInputs(sh.n, sh.m, sh.k, uint64(i), true)
		t.Run(shapeName(sh.n, sh.m, sh.k), func(t *testing.T) {
			t.Run("vs_fp16_x", func(t *testing.T) { runCase(t, ctx, in, in.ref16, 1e-4, blas.MatMulF16) })
			t.Run("vs_exact", func(t *testing.T) { runCase(t, ctx, in, in.ref, 1e-3, blas.MatMulF16) })
		})
	}
}

// A graph captured once replays with whatever the buffers hold at launch.
func TestMatMulF16Graph(t *testing.T) {
	ctx, k := testKernels(t)
	for _, name := range []string{"kernels", "cublas"} {
		var impl GEMM = k
		if name == "cublas" {
			impl = nil
		}
		for _, n := range []int{1, 70} {
			const m, kk = 300, 520
			t.Run(fmt.Sprintf("%s/n=%d", name, n), func(t *testing.T) {
				tol := 1e-5
				if name == "cublas" {
					tol = 1e-4
					lib := gputest.BLAS(t, ctx)
					if err := ctx.Do(func() error {
						h, err := lib.NewHandle()
						if err != nil {
							return err
						}
						blas := NewBLAS(k, h)
						impl = blas
						t.Cleanup(func() {
							ctx.Do(func() error {
								blas.Close()
								return h.Destroy()
							})
						})
						// No allocation may happen during capture.
						return blas.Reserve(n * kk)
					}); err != nil {
						t.Fatal(err)
					}
				}
				err := ctx.Do(func() error {
					in := newInputs(n, m, kk, 99, false)
					d, err := upload(in)
					if err != nil {
						return err
					}
					defer d.free()
					s, err := cudadrv.NewStream()
					if err != nil {
						return err
					}
					defer s.Destroy()
					// Each replay poisons Y before the product overwrites it.
					exec, err := s.Capture(func() error {
						if err := cudadrv.MemsetD32Async(d.y, nanBits, n*m, s); err != nil {
							return err
						}
						return impl.MatMulF16(s, d.y, d.x, d.w, n, m, kk)
					})
					if err != nil {
						return err
					}
					defer exec.Destroy()
					if err := cudadrv.MemsetD32(d.y.Offset(4*n*m), guardBits, guardLen); err != nil {
						return err
					}
					for rep := uint64(0); rep < 3; rep++ {
						fresh := newInputs(n, m, kk, 100+rep, false)
						if err := cudadrv.CopyToDevice(d.x, fresh.x); err != nil {
							return err
						}
						if err := cudadrv.CopyToDevice(d.w, fresh.w); err != nil {
							return err
						}
						if err := exec.Launch(s); err != nil {
							return err
						}
						if err := s.Synchronize(); err != nil {
							return err
						}
						got, err := d.result(in)
						if err != nil {
							return err
						}
						ref := reference(fresh.w, fresh.x, n, m, kk, name == "cublas")
						if e := relErr(got, ref); !(e < tol) {
							return fmt.Errorf("replay %d: relative error %.3g", rep, e)
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// Goroutines share the kernels and the context through Do.
func TestMatMulF16Concurrent(t *testing.T) {
	ctx, k := testKernels(t)
	const goroutines = 16
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, m, kk := 1+g%5, 200+g, 300+3*g
			in := newInputs(n, m, kk, uint64(1000+g), true)
			for it := 0; it < 10; it++ {
				var got []float32
				err := ctx.Do(func() error {
					d, err := upload(in)
					if err != nil {
						return err
					}
					defer d.free()
					if err := d.poison(in); err != nil {
						return err
					}
					if err := k.MatMulF16(0, d.y, d.x, d.w, n, m, kk); err != nil {
						return err
					}
					got, err = d.result(in)
					return err
				})
				if err == nil {
					if e := relErr(got, in.ref); !(e < 1e-5) {
						err = fmt.Errorf("goroutine %d: relative error %.3g", g, e)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMatMulF16BadShape(t *testing.T) {
	k := &Kernels{}
	for _, sh := range [][3]int{{0, 1, 1}, {1, -1, 1}, {1, 1, 0}} {
		if err := k.MatMulF16(0, 0, 0, 0, sh[0], sh[1], sh[2]); err == nil {
			t.Errorf("shape %v accepted", sh)
		}
	}
}
