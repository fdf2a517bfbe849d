package main

/*
#include "capi.h"
*/
import "C"

import (
	"math/rand/v2"
	"sync"
)

// Handles are the values C holds as m40llm_model *, m40llm_session *,
// m40llm_context * and m40llm_kvcache *. They are never addresses: each is
// an index into a table of live objects, made hard to forge by accident.
// On a 64-bit system a handle reads, from the top bit down,
//
//	check (24 bits)       1, then 23 bits of tag ^ mix(index)
//	generation (20 bits)  how many times the slot was freed, mod 2^20
//	index (20 bits)       the slot in the table
//
// and on a 32-bit system the fields are 12, 10 and 10 bits wide. The tag is
// drawn at random when the library loads. So:
//
//   - no handle is 0 or a small integer, since the top bit is set; on a
//     64-bit system, that also keeps handles above every address the system
//     gives out to user space (and out of the Go heap, for Go hosts that
//     hold them as pointers);
//   - a random value passes the check with a chance of 2^-23 (2^-11 on
//     32-bit), and must then also name a live slot and its generation;
//   - changing only the index bits of a handle always breaks its check (mix
//     is a bijection on the check's bits, see checkOf), and changing only
//     other bits breaks the check or the generation: a live handle with one
//     bit flipped is never a live handle;
//   - a freed handle stays refused while its slot holds other objects: the
//     slot's generation went up when it was freed. Freed slots wait in a
//     first-in, first-out list, and the oldest is reused only when more
//     than handleQuarantine are waiting (or the table is full), so at least
//     handleQuarantine other frees come between two uses of a slot, and a
//     slot's generation comes back only after 2^20 × handleQuarantine frees
//     (2^10 × handleQuarantine on 32-bit);
//   - a handle of another kind names a live object of another type, which
//     lookup tells apart by the object's Go type.
//
// The table grows to the most objects live at once plus handleQuarantine,
// and never shrinks; it holds at most 2^20 (2^10 on 32-bit) objects, beyond
// which newHandle fails with M40LLM_ERR_OUT_OF_MEMORY.

// handleObject is an object behind a handle.
type handleObject interface {
	// cType names the handle's type in the header: "m40llm_model". It must
	// not use its receiver, which may be nil.
	cType() string
}

func (*loadedModel) cType() string { return "m40llm_model" }
func (*session) cType() string     { return "m40llm_session" }
func (*gpuContext) cType() string  { return "m40llm_context" }
func (*kvCache) cType() string     { return "m40llm_kvcache" }

// The layout of a handle, as in the comment above.
const (
	ptrBits    = 32 << (^uintptr(0) >> 63) // 64 or 32
	indexBits  = ptrBits * 5 / 16          // 20 or 10
	genBits    = ptrBits * 5 / 16          // 20 or 10
	checkShift = indexBits + genBits
	checkBits  = ptrBits - checkShift // 24 or 12

	indexMask = 1<<indexBits - 1
	genMask   = 1<<genBits - 1
	checkTop  = uintptr(1) << (checkBits - 1) // set in every handle's check
	tagMask   = checkTop - 1

	// maxHandles is the most objects the table holds at once.
	maxHandles = 1 << indexBits
	// handleQuarantine is the least number of freed slots that the table
	// keeps before it reuses the oldest.
	handleQuarantine = 256
	// mixFactor is odd, so i -> i*mixFactor mod 2^k is a bijection.
	mixFactor = 0x9e3779b1
)

// checkOf relies on indexBits <= checkBits-1.
var _ [checkBits - 1 - indexBits]struct{}

// handleState is what a value is to a handle table.
type handleState int

const (
	handleLive   handleState = iota // the handle of a live object
	handleFreed                     // a handle whose object was freed
	handleForged                    // a value the table never returned
)

// handleSlot is one entry of a handle table.
type handleSlot struct {
	obj  handleObject // nil while the slot is free
	gen  uintptr      // the generation of the slot's current handle
	next int32        // the next free slot, -1 at the end of the list
}

// handleTable maps handles to live objects. It is safe for concurrent use.
type handleTable struct {
	tag  uintptr // random, in [1, tagMask]
	max  int     // the most live objects: maxHandles, less in tests
	keep int     // free slots kept before reuse: handleQuarantine

	mu         sync.RWMutex
	slots      []handleSlot
	head, tail int32 // the list of free slots, oldest first; -1 if empty
	nfree      int
}

// handles is the table of every handle the library returns.
var handles = newHandleTable(randomTag(), maxHandles, handleQuarantine)

// randomTag returns a random tag in [1, tagMask].
func randomTag() uintptr {
	for {
		if t := uintptr(rand.Uint64()) & tagMask; t != 0 {
			return t
		}
	}
}

// newHandleTable returns an empty table of at most limit objects, which
// keeps keep freed slots before it reuses one.
func newHandleTable(tag uintptr, limit, keep int) *handleTable {
	return &handleTable{tag: tag & tagMask, max: limit, keep: keep, head: -1, tail: -1}
}

// checkOf returns the check field of the handles of slot i. Since
// mixFactor is odd and indexBits <= checkBits-1, distinct indexes give
// distinct checks.
func (t *handleTable) checkOf(i int) uintptr {
	return checkTop | (t.tag^uintptr(i)*mixFactor)&tagMask
}

// encode returns the handle of slot i at generation gen.
func (t *handleTable) encode(i int, gen uintptr) uintptr {
	return t.checkOf(i)<<checkShift | gen<<indexBits | uintptr(i)
}

// add stores obj in a slot and returns its handle; it fails with
// M40LLM_ERR_OUT_OF_MEMORY when max objects are live.
func (t *handleTable) add(obj handleObject) (uintptr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var i int
	switch {
	case t.nfree > 0 && (t.nfree > t.keep || len(t.slots) >= t.max):
		i = int(t.head)
		t.head = t.slots[i].next
		if t.head < 0 {
			t.tail = -1
		}
		t.nfree--
	case len(t.slots) < t.max:
		i = len(t.slots)
		t.slots = append(t.slots, handleSlot{})
	default:
		return 0, errorf(stOutOfMemory, "%d objects (models, sessions, contexts, KV caches) are live, the most the library can hold; free some first", t.max)
	}
	s := &t.slots[i]
	s.obj, s.next = obj, -1
	return t.encode(i, s.gen), nil
}

// find returns the slot index of h and its state, with t.mu held.
func (t *handleTable) find(h uintptr) (int, handleState) {
	i := int(h & indexMask)
	if h>>checkShift != t.checkOf(i) || i >= len(t.slots) {
		return i, handleForged
	}
	if s := &t.slots[i]; s.obj == nil || s.gen != h>>indexBits&genMask {
		return i, handleFreed
	}
	return i, handleLive
}

// get returns the object of h and h's state; the object is nil unless the
// state is handleLive.
func (t *handleTable) get(h uintptr) (handleObject, handleState) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	i, st := t.find(h)
	if st != handleLive {
		return nil, st
	}
	return t.slots[i].obj, st
}

// remove frees the slot of h, a live handle, for later reuse under a new
// generation, and reports whether h was live.
func (t *handleTable) remove(h uintptr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, st := t.find(h)
	if st != handleLive {
		return false
	}
	s := &t.slots[i]
	s.obj, s.gen, s.next = nil, (s.gen+1)&genMask, -1
	if t.tail < 0 {
		t.head = int32(i)
	} else {
		t.slots[t.tail].next = int32(i)
	}
	t.tail = int32(i)
	t.nfree++
	return true
}

// live returns the number of live objects (for tests).
func (t *handleTable) live() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.slots) - t.nfree
}

// newHandle returns the C value of a new handle for obj; it fails with
// M40LLM_ERR_OUT_OF_MEMORY when maxHandles objects are live.
func newHandle(obj handleObject) (C.uintptr_t, error) {
	h, err := handles.add(obj)
	return C.uintptr_t(h), err
}

// deleteHandle invalidates h; later lookups of it fail. h must be live.
func deleteHandle(h C.uintptr_t) { handles.remove(uintptr(h)) }

// lookup returns the object behind handle h, which must be a T. arg names
// the argument in messages ("model"). A zero handle (a NULL pointer in C)
// is M40LLM_ERR_INVALID_ARGUMENT; a value the library never returned, a
// freed handle and a handle of another kind of object are
// M40LLM_ERR_INVALID_HANDLE, with a message naming the type expected.
func lookup[T handleObject](h C.uintptr_t, arg string) (T, error) {
	return lookupIn[T](handles, uintptr(h), arg)
}

// lookupIn is lookup in table tab.
func lookupIn[T handleObject](tab *handleTable, h uintptr, arg string) (T, error) {
	var want T
	if h == 0 {
		return want, argErrorf("%s is NULL", arg)
	}
	obj, st := tab.get(h)
	switch st {
	case handleForged:
		return want, errorf(stInvalidHandle, "%s %#x is not an %s handle: the library never returned this value", arg, h, want.cType())
	case handleFreed:
		return want, errorf(stInvalidHandle, "%s %#x is not a live %s handle: the object it named was freed", arg, h, want.cType())
	}
	v, ok := obj.(T)
	if !ok {
		return want, errorf(stInvalidHandle, "%s %#x is an %s handle, not an %s", arg, h, obj.cType(), want.cType())
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
