package main

/*
#include "capi.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strings"
	"unsafe"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/m40llm/m40llm/model/tokenizer"
)

// status is m40llm_status.
type status = C.m40llm_status

// The status codes, from the header.
const (
	stOK             status = C.M40LLM_OK
	stInvalidArg     status = C.M40LLM_ERR_INVALID_ARGUMENT
	stInvalidHandle  status = C.M40LLM_ERR_INVALID_HANDLE
	stBufferTooSmall status = C.M40LLM_ERR_BUFFER_TOO_SMALL
	stIO             status = C.M40LLM_ERR_IO
	stFormat         status = C.M40LLM_ERR_FORMAT
	stUnsupported    status = C.M40LLM_ERR_UNSUPPORTED
	stNoDevice       status = C.M40LLM_ERR_NO_DEVICE
	stCUDA           status = C.M40LLM_ERR_CUDA
	stOutOfMemory    status = C.M40LLM_ERR_OUT_OF_MEMORY
	stContextFull    status = C.M40LLM_ERR_CONTEXT_FULL
	stBusy           status = C.M40LLM_ERR_BUSY
	stInternal       status = C.M40LLM_ERR_INTERNAL
)

// apiError is an error whose status is chosen where it is made.
type apiError struct {
	st  status
	msg string
}

func (e *apiError) Error() string { return e.msg }

// errorf returns an *apiError with status st.
func errorf(st status, format string, args ...any) error {
	return &apiError{st: st, msg: fmt.Sprintf(format, args...)}
}

// argErrorf returns an M40LLM_ERR_INVALID_ARGUMENT error.
func argErrorf(format string, args ...any) error { return errorf(stInvalidArg, format, args...) }

// statusOf maps an error from the Go API to a status; errors it does not
// recognise get fallback.
func statusOf(err error, fallback status) status {
	var (
		ae       *apiError
		fe       *gguf.FormatError
		ce       *model.ConfigError
		te       *model.TensorError
		me       *tokenizer.MetadataError
		pe       *fs.PathError
		pme      *sample.ParamError
		le       *cudadrv.LoadError
		old      *cudadrv.DriverTooOldError
		se       *cudadrv.SymbolError
		call     *cudadrv.CallError
		res      cudadrv.Result
		blas     cublas.Status
		blasCall *cublas.CallError
		blasLoad *cublas.LoadError
	)
	switch {
	case errors.As(err, &ae):
		return ae.st
	case errors.Is(err, model.ErrContextFull):
		return stContextFull
	case errors.Is(err, cudadrv.ErrOutOfMemory):
		return stOutOfMemory
	case errors.Is(err, cudadrv.ErrNoDevice), errors.Is(err, cudadrv.ErrStubLibrary),
		errors.Is(err, cudadrv.ErrNotSupported), errors.As(err, &le), errors.As(err, &old), errors.As(err, &se):
		return stNoDevice
	case errors.Is(err, model.ErrUnsupportedArch), errors.Is(err, tokenizer.ErrUnsupported):
		return stUnsupported
	case errors.As(err, &fe), errors.As(err, &ce), errors.As(err, &te), errors.As(err, &me):
		return stFormat
	case errors.As(err, &pe):
		return stIO
	case errors.As(err, &pme):
		return stInvalidArg
	case errors.As(err, &call), errors.As(err, &res), errors.As(err, &blas), errors.As(err, &blasCall),
		errors.As(err, &blasLoad), errors.Is(err, cudadrv.ErrContextClosed):
		return stCUDA
	}
	return fallback
}

// fail records err as the calling thread's last error and returns its
// status (fallback when statusOf does not know it). fail(nil) is M40LLM_OK;
// the C side then clears the last error.
func fail(err error, fallback status) status {
	if err == nil {
		return stOK
	}
	setLastError(err.Error())
	return statusOf(err, fallback)
}

// failArg is fail with fallback M40LLM_ERR_INTERNAL: for errors that a
// checked call should not produce.
func failArg(err error) status { return fail(err, stInternal) }

// setLastError copies msg into the calling thread's last-error buffer
// (capi.c truncates it).
func setLastError(msg string) {
	if msg == "" {
		msg = "unknown error"
	}
	C.capi_set_error((*C.char)(unsafe.Pointer(unsafe.StringData(msg))), C.size_t(len(msg)))
}

// lastError returns the calling thread's last error (for tests).
func lastError() string { return C.GoString(C.capi_last_error()) }

// recoverPanic turns a panic into M40LLM_ERR_INTERNAL with a message that
// names the panic and where it happened. Every capi function defers it
// first.
func recoverPanic(st *status) {
	r := recover()
	if r == nil {
		return
	}
	msg := fmt.Sprintf("internal error: panic: %v", r)
	if where := panicSite(); where != "" {
		msg += " (in " + where + ")"
	}
	setLastError(msg)
	*st = stInternal
}

// panicSite returns the innermost function outside the runtime in the
// panicking goroutine's stack, as "pkg.Func file:line".
func panicSite() string {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if f.Function != "" && !strings.HasPrefix(f.Function, "runtime.") && !strings.HasSuffix(f.Function, ".recoverPanic") {
			file := f.File
			if i := strings.LastIndex(file, "/"); i >= 0 {
				file = file[i+1:]
			}
			return fmt.Sprintf("%s %s:%d", f.Function, file, f.Line)
		}
		if !more {
			return ""
		}
	}
}
