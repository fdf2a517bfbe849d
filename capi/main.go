// Command capi is m40llm's C API: built with
//
//	go build -buildmode=c-shared -o libm40llm.so
//
// it is the shared library libm40llm.so, whose interface is the hand-written
// header include/m40llm.h (cgo's generated libm40llm.h is not the interface).
// It is the only cgo code of the project, and it lives in its own module so
// that the rest stays CGO_ENABLED=0.
//
// # Layers
//
// Every public function m40llm_NAME is a C function in capi.c, declared in
// include/m40llm.h. It converts handles to integers and calls the Go
// function capiNAME (//export), which does the work through the Go API
// (packages model, cudadrv, ptx). The C functions are the only symbols the
// library exports under m40llm_*: capi.c is compiled with
// -fvisibility=hidden and marks them default, so the capi* C stubs of cgo
// stay internal. The C compiler checks every m40llm_* definition against
// the header, and every call to a capi* function against cgo's prototype.
//
// # Handles
//
// Models, sessions, contexts and KV caches are handles (handles.go):
// integers that C holds as opaque pointers and that Go never treats as
// pointers. Each combines the index of a slot in a table of live objects,
// the slot's generation and a check made from a random per-process tag, so
// that a freed handle, one of another kind, a small integer or random bits
// are an error, not a crash and not another live object. (Not
// runtime/cgo.Handle: its handles are small sequential integers, so that
// (void *)0x1 is usually a live one.)
//
// # Errors
//
// Every capi function starts with defer recoverPanic(&st), so a panic
// becomes M40LLM_ERR_INTERNAL. Errors become one status code (statusOf) and
// a message in the calling thread's last-error buffer, which capi.c keeps
// per thread in a pthread key. A C thread that calls into Go runs the Go
// code on that same OS thread (cgo locks the callback goroutine to it), so
// the buffer written from Go is the calling thread's. A Go map keyed by
// thread id would work too, but would grow with every thread that ever
// called and never shrink; the pthread key's destructor frees the buffer
// when its thread exits. (Why not a _Thread_local array: see capi.c.)
package main

/*
#cgo CFLAGS: -I${SRCDIR}/include -fvisibility=hidden
#include "capi.h"
*/
import "C"

// main is required by -buildmode=c-shared and never runs.
func main() {}
