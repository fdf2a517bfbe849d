package main

/*
#include "capi.h"
*/
import "C"

import (
	"context"
	"sync/atomic"
	"unsafe"

	"github.com/m40llm/m40llm/model"
)

// session is the object behind an m40llm_session handle: a model.Session on
// one KV-cache slot of its model, which the session holds until it is freed.
type session struct {
	m      *loadedModel
	s      *model.Session
	slot   int
	busy   atomic.Bool // a call is using the session
	closed atomic.Bool // freed; set while busy, never cleared
	// logits tells whether s.Logits() holds the result of the last
	// m40llm_eval.
	logits bool
}

// useSession looks up handle h and takes the session for one call: it
// fails with M40LLM_ERR_BUSY while another call holds it. Release it with
// s.busy.Store(false).
func useSession(h C.uintptr_t) (*session, error) {
	s, err := lookup[*session](h, "session")
	if err != nil {
		return nil, err
	}
	if !s.busy.CompareAndSwap(false, true) {
		if s.closed.Load() {
			return nil, errorf(stInvalidHandle, "session was freed")
		}
		return nil, errorf(stBusy, "session is in use by another call (one thread at a time, and not from its own callback)")
	}
	return s, nil
}

//export capiSessionNew
func capiSessionNew(h C.uintptr_t, out *C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	m, err := enterModel(h)
	if err != nil {
		return failArg(err)
	}
	defer m.exit()
	if out == nil {
		return failArg(argErrorf("session (the result pointer) is NULL"))
	}
	slot := -1
	m.locked(func() error {
		for i, b := range m.busy {
			if !b {
				slot = i
				m.busy[i] = true
				m.live++
				break
			}
		}
		return nil
	})
	if slot < 0 {
		return failArg(errorf(stBusy, "all %d session slots of the model are taken (raise n_sessions in m40llm_model_params)", len(m.busy)))
	}
	ms, err := m.m.NewSession(slot)
	if err != nil {
		m.releaseSlot(slot)
		return failArg(err)
	}
	sh, err := newHandle(&session{m: m, s: ms, slot: slot})
	if err != nil {
		m.releaseSlot(slot)
		return failArg(err)
	}
	*out = sh
	return stOK
}

// releaseSlot gives a session's slot back to the model.
func (m *loadedModel) releaseSlot(slot int) {
	m.locked(func() error {
		m.busy[slot] = false
		m.live--
		return nil
	})
}

//export capiSessionFree
func capiSessionFree(h C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	if h == 0 {
		return stOK
	}
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	// Keep busy set for good: a racing call then fails instead of running.
	s.closed.Store(true)
	deleteHandle(h)
	s.m.releaseSlot(s.slot)
	return stOK
}

//export capiSessionReset
func capiSessionReset(h C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	defer s.busy.Store(false)
	s.s.Reset()
	s.logits = false
	return stOK
}

//export capiSessionLength
func capiSessionLength(h C.uintptr_t, n *C.size_t) (st status) {
	defer recoverPanic(&st)
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	defer s.busy.Store(false)
	if n == nil {
		return failArg(argErrorf("n_tokens is NULL"))
	}
	*n = C.size_t(s.s.Len())
	return stOK
}

//export capiEval
func capiEval(h C.uintptr_t, tokens *C.int32_t, n C.size_t) (st status) {
	defer recoverPanic(&st)
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	defer s.busy.Store(false)
	switch {
	case n == 0:
		return failArg(argErrorf("n_tokens is 0"))
	case tokens == nil:
		return failArg(argErrorf("tokens is NULL"))
	}
	if room := s.m.m.CtxSize() - s.s.Len(); uint64(n) > uint64(room) {
		return failArg(errorf(stContextFull, "eval: %d cached + %d new tokens > %d positions of the context", s.s.Len(), uint64(n), s.m.m.CtxSize()))
	}
	ids := make([]int32, n)
	copy(ids, unsafe.Slice((*int32)(unsafe.Pointer(tokens)), int(n)))
	if err := checkTokens(ids, s.m.m.Config.VocabSize); err != nil {
		return failArg(err)
	}
	s.logits = false
	if _, err := s.s.Eval(context.Background(), ids); err != nil {
		return failArg(err)
	}
	s.logits = true
	return stOK
}

//export capiGetLogits
func capiGetLogits(h C.uintptr_t, logits *C.float, capacity C.size_t, n *C.size_t) (st status) {
	defer recoverPanic(&st)
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	defer s.busy.Store(false)
	switch {
	case n == nil:
		return failArg(argErrorf("n_logits is NULL"))
	case logits == nil && capacity > 0:
		return failArg(argErrorf("logits is NULL but capacity is %d", uint64(capacity)))
	}
	vocab := s.m.m.Config.VocabSize
	*n = C.size_t(vocab)
	if !s.logits {
		return failArg(argErrorf("the session has no logits: call m40llm_eval first (reset and generate discard them)"))
	}
	if uint64(capacity) < uint64(vocab) {
		return failArg(errorf(stBufferTooSmall, "get_logits: %d logits, the buffer holds %d", vocab, uint64(capacity)))
	}
	copy(unsafe.Slice((*float32)(unsafe.Pointer(logits)), vocab), s.s.Logits())
	return stOK
}
