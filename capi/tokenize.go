package main

/*
#include "capi.h"
*/
import "C"

import (
	"unsafe"
)

//export capiTokenize
func capiTokenize(h C.uintptr_t, text *C.char, addSpecial, parseSpecial C.bool, tokens *C.int32_t, capacity C.size_t, nTokens *C.size_t) (st status) {
	defer recoverPanic(&st)
	m, err := enterModel(h)
	if err != nil {
		return failArg(err)
	}
	defer m.exit()
	switch {
	case text == nil:
		return failArg(argErrorf("text is NULL"))
	case nTokens == nil:
		return failArg(argErrorf("n_tokens is NULL"))
	case tokens == nil && capacity > 0:
		return failArg(argErrorf("tokens is NULL but capacity is %d", uint64(capacity)))
	}
	ids := m.m.Tokenizer.Encode(C.GoString(text), bool(addSpecial), bool(parseSpecial))
	*nTokens = C.size_t(len(ids))
	if uint64(len(ids)) > uint64(capacity) {
		return failArg(errorf(stBufferTooSmall, "tokenize: the text has %d tokens, the buffer holds %d", len(ids), uint64(capacity)))
	}
	if len(ids) > 0 {
		copy(unsafe.Slice((*int32)(unsafe.Pointer(tokens)), len(ids)), ids)
	}
	return stOK
}

//export capiDetokenize
func capiDetokenize(h C.uintptr_t, tokens *C.int32_t, n C.size_t, text *C.char, capacity C.size_t, textLen *C.size_t) (st status) {
	defer recoverPanic(&st)
	m, err := enterModel(h)
	if err != nil {
		return failArg(err)
	}
	defer m.exit()
	switch {
	case tokens == nil && n > 0:
		return failArg(argErrorf("tokens is NULL but n_tokens is %d", uint64(n)))
	case textLen == nil:
		return failArg(argErrorf("text_len is NULL"))
	case text == nil && capacity > 0:
		return failArg(argErrorf("text is NULL but capacity is %d", uint64(capacity)))
	}
	var ids []int32
	if n > 0 {
		ids = unsafe.Slice((*int32)(unsafe.Pointer(tokens)), int(n))
	}
	if err := checkTokens(ids, m.m.Config.VocabSize); err != nil {
		return failArg(err)
	}
	s := m.m.Tokenizer.Decode(ids)
	*textLen = C.size_t(len(s))
	if uint64(len(s)) >= uint64(capacity) {
		return failArg(errorf(stBufferTooSmall, "detokenize: the text has %d bytes plus the NUL, the buffer holds %d", len(s), uint64(capacity)))
	}
	out := unsafe.Slice((*byte)(unsafe.Pointer(text)), len(s)+1)
	copy(out, s)
	out[len(s)] = 0
	return stOK
}

// checkTokens refuses ids outside the vocabulary.
func checkTokens(ids []int32, vocab int) error {
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			return argErrorf("token %d (index %d) is outside the vocabulary of %d", id, i, vocab)
		}
	}
	return nil
}
