package cublas

import "fmt"

// Status is a cublasStatus_t. Non-zero values are errors.
type Status int32

// Status values (cublas_api.h).
const (
	StatusSuccess      Status = 0
	ErrNotInitialized  Status = 1
	ErrAllocFailed     Status = 3
	ErrInvalidValue    Status = 7
	ErrArchMismatch    Status = 8
	ErrMappingError    Status = 11
	ErrExecutionFailed Status = 13
	ErrInternalError   Status = 14
	ErrNotSupported    Status = 15
	ErrLicenseError    Status = 16
)

var statusNames = map[Status]string{
	0:  "CUBLAS_STATUS_SUCCESS",
	1:  "CUBLAS_STATUS_NOT_INITIALIZED",
	3:  "CUBLAS_STATUS_ALLOC_FAILED",
	7:  "CUBLAS_STATUS_INVALID_VALUE",
	8:  "CUBLAS_STATUS_ARCH_MISMATCH",
	11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR",
	15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

var statusText = map[Status]string{
	1:  "the library was not initialized",
	3:  "resource allocation failed",
	7:  "an unsupported value or parameter was passed to the function",
	8:  "the requested feature is not supported by the GPU architecture",
	11: "access to GPU memory space failed",
	13: "the GPU program failed to execute",
	14: "an internal operation failed",
	15: "the functionality requested is not supported",
	16: "the functionality requested requires some license",
}

// Error implements error: "CUBLAS_STATUS_NOT_SUPPORTED (15): the functionality requested is not supported".
func (s Status) Error() string {
	name, ok := statusNames[s]
	if !ok {
		name = fmt.Sprintf("cublasStatus(%d)", int32(s))
	}
	if t := statusText[s]; t != "" {
		return fmt.Sprintf("%s (%d): %s", name, int32(s), t)
	}
	return fmt.Sprintf("%s (%d)", name, int32(s))
}

// CallError is a failed cuBLAS call.
type CallError struct {
	Func   string
	Status Status
}

// Error implements error.
func (e *CallError) Error() string { return e.Func + ": " + e.Status.Error() }

// Unwrap returns the Status.
func (e *CallError) Unwrap() error { return e.Status }

func check(fn string, s Status) error {
	if s == StatusSuccess {
		return nil
	}
	return &CallError{Func: fn, Status: s}
}
