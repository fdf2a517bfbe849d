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

// SetStream makes subsequent calls run on s (0: the default stream).
func (h *Handle) SetStream(s cudadrv.Stream) error {
	return check("cublasSetStream_v2", h.lib.cublasSetStream(h.h, uintptr(s)))
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

// GemmEx computes C = alpha·op(A)·op(B) + beta·C, column-major, with the
// given storage types and compute type. alpha and beta are FP32, which is
// their type for Compute32F. Supported combinations with Compute32F include
// A, B R16F with C R16F or R32F, and all R32F; A R16F with B R32F is not one
// of them.
//
// A dimension or leading dimension that is negative or does not fit int32
// is refused before cuBLAS is called, with an error wrapping
// ErrInvalidValue; otherwise a failure is the *CallError of cublasGemmEx
// (ErrInvalidValue for a leading dimension too small for its matrix,
// ErrNotSupported for a combination of types cuBLAS lacks).
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
