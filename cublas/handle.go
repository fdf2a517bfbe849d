package cublas

import (
	"fmt"
	"math"

	"github.com/m40llm/m40llm/cudadrv"
)

// Handle is a cublasHandle_t bound to the CUDA context that was current
// when it was created. Use it only inside that context's Do, from one
// goroutine at a time.
type Handle struct {
	lib *Library
	h   uintptr
}

// NewHandle creates a handle on the current context (call inside
// cudadrv.Context.Do).
func (l *Library) NewHandle() (*Handle, error) {
	var h uintptr
	if err := check("cublasCreate_v2", l.cublasCreate(&h)); err != nil {
		return nil, err
	}
	return &Handle{lib: l, h: h}, nil
}

// Destroy releases the handle.
func (h *Handle) Destroy() error {
	if h.h == 0 {
		return nil
	}
	err := check("cublasDestroy_v2", h.lib.cublasDestroy(h.h))
	h.h = 0
	return err
}

// Library returns the library the handle came from.
func (h *Handle) Library() *Library { return h.lib }

// SetStream makes subsequent calls run on s (0: the default stream).
func (h *Handle) SetStream(s cudadrv.Stream) error {
	return check("cublasSetStream_v2", h.lib.cublasSetStream(h.h, uintptr(s)))
}

// MathMode is a cublasMath_t.
type MathMode int32

// Math modes. DefaultMath keeps FP32 inputs in FP32 (no TF32); FP16 inputs
// may use tensor cores on GPUs that have them, with FP32 accumulation.
const (
	DefaultMath  MathMode = 0
	PedanticMath MathMode = 2
)

// SetMathMode sets the math mode.
func (h *Handle) SetMathMode(m MathMode) error {
	return check("cublasSetMathMode", h.lib.cublasSetMathMode(h.h, int32(m)))
}

// Version returns cublasGetVersion: 10000*major + 100*minor + patch for
// cuBLAS 11 and later.
func (h *Handle) Version() (int, error) {
	var v int32
	err := check("cublasGetVersion_v2", h.lib.cublasGetVersion(h.h, &v))
	return int(v), err
}

// Operation is a cublasOperation_t.
type Operation int32

// Operations.
const (
	OpN Operation = 0 // use the matrix as stored (column-major)
	OpT Operation = 1 // use its transpose
)

// DataType is a cudaDataType_t.
type DataType int32

// Data types.
const (
	R32F DataType = 0 // CUDA_R_32F
	R16F DataType = 2 // CUDA_R_16F
)

// ComputeType is a cublasComputeType_t.
type ComputeType int32

// Compute32F is CUBLAS_COMPUTE_32F: FP32 arithmetic and accumulation.
const Compute32F ComputeType = 68

// GemmAlgo is a cublasGemmAlgo_t.
type GemmAlgo int32

// GemmDefault is CUBLAS_GEMM_DEFAULT: the library chooses.
const GemmDefault GemmAlgo = -1

func dims(fn string, v ...int) error {
	for _, x := range v {
		if x < 0 || x > math.MaxInt32 {
			return fmt.Errorf("%s: dimension %d out of range: %w", fn, x, ErrInvalidValue)
		}
	}
	return nil
}

// Sgemm computes C = alpha·op(A)·op(B) + beta·C in FP32, column-major: op(A)
// is m×k, op(B) k×n, C m×n.
func (h *Handle) Sgemm(ta, tb Operation, m, n, k int, alpha float32, a cudadrv.DevicePtr, lda int,
	b cudadrv.DevicePtr, ldb int, beta float32, c cudadrv.DevicePtr, ldc int) error {
	if err := dims("cublasSgemm_v2", m, n, k, lda, ldb, ldc); err != nil {
		return err
	}
	return check("cublasSgemm_v2", h.lib.cublasSgemm(h.h, int32(ta), int32(tb), int32(m), int32(n), int32(k),
		&alpha, uintptr(a), int32(lda), uintptr(b), int32(ldb), &beta, uintptr(c), int32(ldc)))
}

// GemmEx computes C = alpha·op(A)·op(B) + beta·C, column-major, with the
// given storage types and compute type. alpha and beta are FP32, which is
// their type for Compute32F. Supported combinations with Compute32F include
// A, B R16F with C R16F or R32F, and all R32F; A R16F with B R32F is not one
// of them.
func (h *Handle) GemmEx(ta, tb Operation, m, n, k int, alpha float32,
	a cudadrv.DevicePtr, atype DataType, lda int,
	b cudadrv.DevicePtr, btype DataType, ldb int, beta float32,
	c cudadrv.DevicePtr, ctype DataType, ldc int, compute ComputeType, algo GemmAlgo) error {
	if err := dims("cublasGemmEx", m, n, k, lda, ldb, ldc); err != nil {
		return err
	}
	return check("cublasGemmEx", h.lib.cublasGemmEx(h.h, int32(ta), int32(tb), int32(m), int32(n), int32(k),
		&alpha, uintptr(a), int32(atype), int32(lda), uintptr(b), int32(btype), int32(ldb),
		&beta, uintptr(c), int32(ctype), int32(ldc), int32(compute), int32(algo)))
}

// GemmStridedBatchedEx is GemmEx over batch matrices at fixed element
// strides: C_i = alpha·op(A_i)·op(B_i) + beta·C_i with A_i = A + i·strideA.
func (h *Handle) GemmStridedBatchedEx(ta, tb Operation, m, n, k int, alpha float32,
	a cudadrv.DevicePtr, atype DataType, lda int, strideA int64,
	b cudadrv.DevicePtr, btype DataType, ldb int, strideB int64, beta float32,
	c cudadrv.DevicePtr, ctype DataType, ldc int, strideC int64,
	batch int, compute ComputeType, algo GemmAlgo) error {
	if err := dims("cublasGemmStridedBatchedEx", m, n, k, lda, ldb, ldc, batch); err != nil {
		return err
	}
	return check("cublasGemmStridedBatchedEx", h.lib.cublasGemmStridedBatchedEx(h.h, int32(ta), int32(tb),
		int32(m), int32(n), int32(k), &alpha,
		uintptr(a), int32(atype), int32(lda), strideA,
		uintptr(b), int32(btype), int32(ldb), strideB, &beta,
		uintptr(c), int32(ctype), int32(ldc), strideC,
		int32(batch), int32(compute), int32(algo)))
}
