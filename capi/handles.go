package main

/*
#include "capi.h"
*/
import "C"

import (
	"runtime/cgo"
	"sync"
)

// newHandle returns the C value of a new handle for v.
func newHandle(v any) C.uintptr_t { return C.uintptr_t(cgo.NewHandle(v)) }

// deleteHandle invalidates h; later lookups fail.
func deleteHandle(h C.uintptr_t) { cgo.Handle(h).Delete() }

// lookup returns the value behind handle h, which must be a T. kind names
// the argument in messages ("model"). A zero handle (a NULL pointer in C) is
// M40LLM_ERR_INVALID_ARGUMENT; a deleted handle, or one for another kind of
// object, is M40LLM_ERR_INVALID_HANDLE.
func lookup[T any](h C.uintptr_t, kind string) (t T, err error) {
	if h == 0 {
		return t, argErrorf("%s is NULL", kind)
	}
	defer func() {
		// cgo.Handle.Value panics on a handle it does not know.
		if recover() != nil {
			err = errorf(stInvalidHandle, "%s %#x is not a live handle (freed already, or never returned by the library)", kind, uintptr(h))
		}
	}()
	v, ok := cgo.Handle(h).Value().(T)
	if !ok {
		return t, errorf(stInvalidHandle, "%s %#x is a handle of another kind (%T)", kind, uintptr(h), cgo.Handle(h).Value())
	}
	return v, nil
}

// guard tracks the calls in flight on an object that another thread may
// try to free, so that freeing never pulls the object out from under a
// call: free (close) is refused while calls are in flight, and calls after
// a free are refused.
type guard struct {
	mu       sync.Mutex
	closed   bool
	inflight int
}

// enter registers a call; the caller must call exit when it is done.
func (g *guard) enter(kind string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errorf(stInvalidHandle, "%s was freed", kind)
	}
	g.inflight++
	return nil
}

// exit ends a call registered by enter.
func (g *guard) exit() {
	g.mu.Lock()
	g.inflight--
	g.mu.Unlock()
}

// close marks the object freed if no call is in flight and idle (called
// with the lock held; may be nil) allows it.
func (g *guard) close(kind string, idle func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errorf(stInvalidHandle, "%s was freed", kind)
	}
	if g.inflight > 0 {
		return errorf(stBusy, "%s is in use by %d call(s) on other threads", kind, g.inflight)
	}
	if idle != nil {
		if err := idle(); err != nil {
			return err
		}
	}
	g.closed = true
	return nil
}

// locked runs fn with the guard's lock held.
func (g *guard) locked(fn func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return fn()
}
