package cudadrv

import (
	"errors"
	"fmt"

	"github.com/m40llm/m40llm/internal/dl"
)

// Result is a CUresult, the status every driver call returns. The common
// codes are exported as constants so that errors.Is works on any error that
// wraps one:
//
//	if errors.Is(err, cudadrv.ErrOutOfMemory) { ... }
type Result int32

// Results callers commonly test for.
const (
	// Success is CUDA_SUCCESS; it is never returned as an error.
	Success Result = 0
	// ErrInvalidValue is CUDA_ERROR_INVALID_VALUE.
	ErrInvalidValue Result = 1
	// ErrOutOfMemory is CUDA_ERROR_OUT_OF_MEMORY.
	ErrOutOfMemory Result = 2
	// ErrNotInitialized is CUDA_ERROR_NOT_INITIALIZED; this package also
	// returns it when Init has not succeeded.
	ErrNotInitialized Result = 3
	// ErrStubLibrary is CUDA_ERROR_STUB_LIBRARY: the toolkit's stubs/libcuda.so
	// was loaded instead of the driver's libcuda.so.1.
	ErrStubLibrary Result = 34
	// ErrNoDevice is CUDA_ERROR_NO_DEVICE: the driver library loaded but
	// found no usable GPU.
	ErrNoDevice Result = 100
	// ErrInvalidDevice is CUDA_ERROR_INVALID_DEVICE.
	ErrInvalidDevice Result = 101
	// ErrInvalidImage is CUDA_ERROR_INVALID_IMAGE.
	ErrInvalidImage Result = 200
	// ErrInvalidContext is CUDA_ERROR_INVALID_CONTEXT, typically a call made
	// outside Context.Do.
	ErrInvalidContext Result = 201
	// ErrNoBinaryForGPU is CUDA_ERROR_NO_BINARY_FOR_GPU.
	ErrNoBinaryForGPU Result = 209
	// ErrInvalidPTX is CUDA_ERROR_INVALID_PTX.
	ErrInvalidPTX Result = 218
	// ErrUnsupportedPTXVersion is CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the
	// driver is older than the nvcc that produced the PTX.
	ErrUnsupportedPTXVersion Result = 222
	// ErrNotFound is CUDA_ERROR_NOT_FOUND (for example a missing kernel name).
	ErrNotFound Result = 500
	// ErrNotReady is CUDA_ERROR_NOT_READY.
	ErrNotReady Result = 600
	// ErrIllegalAddress is CUDA_ERROR_ILLEGAL_ADDRESS.
	ErrIllegalAddress Result = 700
	// ErrLaunchOutOfResources is CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES.
	ErrLaunchOutOfResources Result = 701
	// ErrLaunchFailed is CUDA_ERROR_LAUNCH_FAILED.
	ErrLaunchFailed Result = 719
	// ErrStreamCaptureUnsupported is CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED.
	ErrStreamCaptureUnsupported Result = 900
)

// resultNames backs Result.Error when the driver's cuGetErrorName is not
// available (library not loaded, or an old driver).
var resultNames = map[Result]string{
	0:   "CUDA_SUCCESS",
	1:   "CUDA_ERROR_INVALID_VALUE",
	2:   "CUDA_ERROR_OUT_OF_MEMORY",
	3:   "CUDA_ERROR_NOT_INITIALIZED",
	4:   "CUDA_ERROR_DEINITIALIZED",
	34:  "CUDA_ERROR_STUB_LIBRARY",
	46:  "CUDA_ERROR_DEVICE_UNAVAILABLE",
	100: "CUDA_ERROR_NO_DEVICE",
	101: "CUDA_ERROR_INVALID_DEVICE",
	102: "CUDA_ERROR_DEVICE_NOT_LICENSED",
	200: "CUDA_ERROR_INVALID_IMAGE",
	201: "CUDA_ERROR_INVALID_CONTEXT",
	209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
	218: "CUDA_ERROR_INVALID_PTX",
	221: "CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
	222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
	300: "CUDA_ERROR_INVALID_SOURCE",
	301: "CUDA_ERROR_FILE_NOT_FOUND",
	304: "CUDA_ERROR_OPERATING_SYSTEM",
	400: "CUDA_ERROR_INVALID_HANDLE",
	500: "CUDA_ERROR_NOT_FOUND",
	600: "CUDA_ERROR_NOT_READY",
	700: "CUDA_ERROR_ILLEGAL_ADDRESS",
	701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
	702: "CUDA_ERROR_LAUNCH_TIMEOUT",
	709: "CUDA_ERROR_CONTEXT_IS_DESTROYED",
	715: "CUDA_ERROR_ILLEGAL_INSTRUCTION",
	716: "CUDA_ERROR_MISALIGNED_ADDRESS",
	719: "CUDA_ERROR_LAUNCH_FAILED",
	800: "CUDA_ERROR_NOT_PERMITTED",
	801: "CUDA_ERROR_NOT_SUPPORTED",
	803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
	804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
	900: "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
	901: "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
	908: "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
	999: "CUDA_ERROR_UNKNOWN",
}

// Name returns the CUDA_ERROR_* name of r, from the driver when it is loaded.
func (r Result) Name() string { return drv.Load().name(r) }

// Description returns the driver's cuGetErrorString text for r, or "" when
// the driver is not loaded or does not know r.
func (r Result) Description() string { return drv.Load().description(r) }

// name asks d (which may be nil) for r's name, then the built-in table.
func (d *driver) name(r Result) string {
	if d != nil && d.cuGetErrorName != nil {
		var p *byte
		if d.cuGetErrorName(r, &p) == Success && p != nil {
			return goString(p)
		}
	}
	if s, ok := resultNames[r]; ok {
		return s
	}
	return fmt.Sprintf("CUresult(%d)", int32(r))
}

func (d *driver) description(r Result) string {
	if d != nil && d.cuGetErrorString != nil {
		var p *byte
		if d.cuGetErrorString(r, &p) == Success && p != nil {
			return goString(p)
		}
	}
	return ""
}

// Error implements error: "CUDA_ERROR_OUT_OF_MEMORY (2): out of memory".
func (r Result) Error() string {
	s := fmt.Sprintf("%s (%d)", r.Name(), int32(r))
	if d := r.Description(); d != "" {
		s += ": " + d
	}
	return s
}

// CallError is a failed driver call: the function and its Result.
type CallError struct {
	Func   string // driver entry point, e.g. "cuMemAlloc_v2"
	Result Result
}

// Error implements error.
func (e *CallError) Error() string { return e.Func + ": " + e.Result.Error() }

// Unwrap returns the Result, so errors.Is(err, cudadrv.ErrNoDevice) works.
func (e *CallError) Unwrap() error { return e.Result }

// check turns a driver status into an error naming fn.
func check(fn string, r Result) error {
	if r == Success {
		return nil
	}
	return &CallError{Func: fn, Result: r}
}

// ErrNotSupported is returned by Init on platforms without a CUDA driver
// binding (everything but linux).
var ErrNotSupported = dl.ErrNotSupported

// ErrContextClosed is returned by Context.Do after Close.
var ErrContextClosed = errors.New("cudadrv: context is closed")
