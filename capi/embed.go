package main

/*
#include "capi.h"
*/
import "C"

import (
	"context"
	"unsafe"

	"github.com/m40llm/m40llm/model"
)

// cPooling maps m40llm_pooling to the model's pooling types.
var cPooling = map[C.int32_t]model.Pooling{
	C.M40LLM_POOLING_MODEL: model.PoolingUnset,
	C.M40LLM_POOLING_MEAN:  model.PoolingMean,
	C.M40LLM_POOLING_CLS:   model.PoolingCLS,
	C.M40LLM_POOLING_LAST:  model.PoolingLast,
}

//export capiEmbed
func capiEmbed(h C.uintptr_t, tokens *C.int32_t, n C.size_t, pooling C.int32_t, out *C.float, capacity C.size_t, nOut *C.size_t) (st status) {
	defer recoverPanic(&st)
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	defer s.busy.Store(false)
	m := s.m.m
	dim := m.Config.Dim
	switch {
	case nOut == nil:
		return failArg(argErrorf("n_embd is NULL"))
	case out == nil && capacity > 0:
		return failArg(argErrorf("embedding is NULL but capacity is %d", uint64(capacity)))
	}
	*nOut = C.size_t(dim)
	p, ok := cPooling[pooling]
	switch {
	case !ok:
		return failArg(argErrorf("pooling %d is not an m40llm_pooling", int32(pooling)))
	case n == 0:
		return failArg(argErrorf("n_tokens is 0"))
	case tokens == nil:
		return failArg(argErrorf("tokens is NULL"))
	case uint64(n) > uint64(m.CtxSize()):
		return failArg(errorf(stContextFull, "embed: %d tokens > %d positions of the context", uint64(n), m.CtxSize()))
	case uint64(capacity) < uint64(dim):
		return failArg(errorf(stBufferTooSmall, "embed: %d values, the buffer holds %d", dim, uint64(capacity)))
	}
	if _, err := m.Config.EmbedPooling(p); err != nil {
		return failArg(err)
	}
	ids := make([]int32, n)
	copy(ids, unsafe.Slice((*int32)(unsafe.Pointer(tokens)), int(n)))
	if err := checkTokens(ids, m.Config.VocabSize); err != nil {
		return failArg(err)
	}
	s.logits = false
	v, err := s.s.Embed(context.Background(), ids, model.EmbedOptions{Pooling: p})
	if err != nil {
		return failArg(err)
	}
	copy(unsafe.Slice((*float32)(unsafe.Pointer(out)), dim), v)
	return stOK
}
