package main

/*
#include "capi.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/m40llm/m40llm/internal/errclass"
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

// statusOf maps an error from the Go API to a status by its class
// (errclass.Of); errors of no class get fallback.
func statusOf(err error, fallback status) status {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.st
	}
	switch errclass.Of(err) {
	case errclass.Invalid:
		return stInvalidArg
	case errclass.ContextFull:
		return stContextFull
	case errclass.OutOfMemory:
		return stOutOfMemory
	case errclass.NoDevice:
		return stNoDevice
	case errclass.Unsupported:
		return stUnsupported
	case errclass.Format:
		return stFormat
	case errclass.IO:
		return stIO
	case errclass.Device:
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
