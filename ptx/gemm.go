package ptx

import (
	"fmt"
	"math"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
)

// GEMM is a matrix product with FP16 weights and FP32 activations, whatever
// does the work. Implementations: *Kernels (built-in kernels) and *BLAS
// (cuBLAS).
type GEMM interface {
	// MatMulF16 enqueues on stream s
	//
	//	Y[n, m] = X[n, k] · W[m, k]ᵀ,  Y[i, j] = Σ_l X[i, l]·W[j, l]
	//
	// with every matrix row-major and k innermost:
	//   - w: FP16, m rows of k (a ggml weight with ne=[k, m]),
	//   - x: FP32, n rows of k (n tokens of activations),
	//   - y: FP32, n rows of m; overwritten, never accumulated into.
	//
	// Arithmetic is FP32. Call it inside the context's Do; it does not wait
	// for the result.
	MatMulF16(s cudadrv.Stream, y, x, w cudadrv.DevicePtr, n, m, k int) error
}

// Tile sizes of gemm_f16w_f32 (gemm.cu).
const (
	gemmTileN   = 64
	gemmTileM   = 64
	gemmThreads = 256
)

func checkDims(n, m, k int) error {
	if n <= 0 || m <= 0 || k <= 0 || n > math.MaxInt32 || m > math.MaxInt32 || k > math.MaxInt32 {
		return fmt.Errorf("ptx: MatMulF16: bad shape n=%d m=%d k=%d", n, m, k)
	}
	return nil
}

// matVecAligned reports whether x and w meet the alignment that the matvec
// kernels' 16-byte loads need: when k is a multiple of 8 they read W and X
// 8 halves and 8 floats at a time, so both must be 16-byte aligned (every
// MemAlloc address is); otherwise they read element by element.
func matVecAligned(x, w cudadrv.DevicePtr, k int) bool {
	return k%8 != 0 || (x%16 == 0 && w%16 == 0)
}

// MatMulF16 implements GEMM with the built-in kernels. For n ≤ MatVecMaxN
// (decode and small batches) it is MatVec, which reads every weight once
// for all n rows; for larger n, or pointers that MatVec's 16-byte loads
// cannot use, the shared-memory tiled gemm_f16w_f32 (64 × 64 tiles of Y),
// which accepts any alignment. X stays FP32; only W is rounded (it is
// stored as FP16).
//
// It fails, without launching anything, on a shape with a dimension that
// is not positive or does not fit int32, or n beyond the tiled kernel's
// grid (65535·64 rows); errors of the launch itself are returned wrapped,
// and faults on the device surface at the next synchronization.
func (k *Kernels) MatMulF16(s cudadrv.Stream, y, x, w cudadrv.DevicePtr, n, m, kk int) error {
	if err := checkDims(n, m, kk); err != nil {
		return err
	}
	if n <= MatVecMaxN && matVecAligned(x, w, kk) {
		return k.MatVec(s, x, n, kk, MatVecOut{Y: y, W: w, M: m})
	}
	return k.gemmTiled(s, y, x, w, n, m, kk)
}

// gemmTiled launches gemm_f16w_f32 for any n (tests call it directly to
// cover the small-n shapes that MatMulF16 sends to MatVec).
func (k *Kernels) gemmTiled(s cudadrv.Stream, y, x, w cudadrv.DevicePtr, n, m, kk int) error {
	if err := checkDims(n, m, kk); err != nil {
		return err
	}
	gy := (n + gemmTileN - 1) / gemmTileN
	if gy > 65535 {
		return fmt.Errorf("ptx: gemm_f16w_f32: n=%d exceeds the grid", n)
	}
	grid := cudadrv.Dim3{X: uint32((m + gemmTileM - 1) / gemmTileM), Y: uint32(gy), Z: 1}
	return k.launch(kGemm, grid, cudadrv.Dim3{X: gemmThreads, Y: 1, Z: 1}, s, y, x, w, int32(n), int32(m), int32(kk))
}

// ConvertF32F16 enqueues dst[i] = FP16(src[i]) for count elements (round to
// nearest even; |x| > 65504 becomes ±Inf).
func (k *Kernels) ConvertF32F16(s cudadrv.Stream, dst, src cudadrv.DevicePtr, count int) error {
	if count <= 0 || count > math.MaxInt32 {
		return fmt.Errorf("ptx: ConvertF32F16: bad count %d", count)
	}
	blocks := min((count+255)/256, 4096)
	return k.launch(kConvertF32F16, cudadrv.Dim3{X: uint32(blocks), Y: 1, Z: 1}, cudadrv.Dim3{X: 256, Y: 1, Z: 1}, s,
		dst, src, int32(count))
}

// BLAS implements GEMM with cuBLAS GemmEx.
//
// cuBLAS has no GemmEx combination with FP16 A and FP32 B (with
// CUBLAS_COMPUTE_32F, A and B share one type: both R16F, with C R16F or R32F,
// or both R32F). BLAS therefore converts X to FP16 into a scratch buffer
// first, then runs GemmEx with A = W (R16F), B = X (R16F), C = Y (R32F) and
// CUBLAS_COMPUTE_32F: products and sums stay FP32, but each activation is
// rounded to 11 significant bits (relative error up to 2⁻¹¹ per element,
// typically a few 1e-4 relative on the result) and activations beyond
// ±65504 overflow to Inf. The built-in kernels keep X in FP32; use them
// where that matters. Converting W to FP32 instead would read and write 3×
// the weight bytes per call, which a bandwidth-bound decode cannot afford.
//
// A BLAS is used from one context's Do, one call at a time.
type BLAS struct {
	k       *Kernels
	h       *cublas.Handle
	scratch cudadrv.DevicePtr // FP16 copy of X
	cap     int               // scratch capacity in elements
}

// NewBLAS returns a GEMM that runs on h (created in k's context) and uses
// k's conversion kernel.
func NewBLAS(k *Kernels, h *cublas.Handle) *BLAS { return &BLAS{k: k, h: h} }

// Reserve makes sure the scratch buffer holds elems (n·k) FP16 values, so
// that MatMulF16 does not allocate; call it before capturing a graph. Call
// inside Do.
func (b *BLAS) Reserve(elems int) error {
	if elems <= b.cap {
		return nil
	}
	if err := cudadrv.MemFree(b.scratch); err != nil {
		return err
	}
	b.scratch, b.cap = 0, 0
	p, err := cudadrv.MemAlloc(2 * elems)
	if err != nil {
		return fmt.Errorf("ptx: BLAS scratch: %w", err)
	}
	b.scratch, b.cap = p, elems
	return nil
}

// Close frees the scratch buffer (inside Do). The handle is the caller's.
func (b *BLAS) Close() error {
	err := cudadrv.MemFree(b.scratch)
	b.scratch, b.cap = 0, 0
	return err
}

// MatMulF16 implements GEMM through cublasGemmEx after rounding X to FP16.
func (b *BLAS) MatMulF16(s cudadrv.Stream, y, x, w cudadrv.DevicePtr, n, m, k int) error {
	if err := checkDims(n, m, k); err != nil {
		return err
	}
	if err := b.Reserve(n * k); err != nil {
		return err
	}
	if err := b.k.ConvertF32F16(s, b.scratch, x, n*k); err != nil {
		return err
	}
	if err := b.h.SetStream(s); err != nil {
		return err
	}
	// Column-major reading of the row-major buffers:
	//   W (m, k) row-major = Wc (k × m) column-major, lda = k
	//   X (n, k) row-major = Xc (k × n) column-major, ldb = k
	//   Y (n, m) row-major = Yc (m × n) column-major, ldc = m
	// Yc = Wcᵀ · Xc, i.e. Y = X · Wᵀ: transa = T, transb = N,
	// m = m (rows of Yc), n = n (columns of Yc), k = k.
	err := b.h.GemmEx(cublas.OpT, cublas.OpN, m, n, k,
		1, w, cublas.R16F, k,
		b.scratch, cublas.R16F, k,
		0, y, cublas.R32F, m,
		cublas.Compute32F, cublas.GemmDefault)
	if err != nil {
		return fmt.Errorf("ptx: MatMulF16 n=%d m=%d k=%d: %w", n, m, k, err)
	}
	return nil
}
