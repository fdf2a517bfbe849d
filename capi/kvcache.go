package main

/*
#include "capi.h"
*/
import "C"

import (
	"errors"
	"math"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/ptx"
)

// kvCache is the object behind an m40llm_kvcache handle: FP16 keys and
// values in device memory, laid out (layers, seqs, seqLen, cols) with cols =
// kvHeads·headDim, so that the row of (layer, seq, pos) starts at element
// ((layer·seqs + seq)·seqLen + pos)·cols: each layer is a ptx.KVCache of
// seqs slots. lens counts the positions stored per (layer, seq). Everything
// but the constants is used inside the context's Do, which serializes it.
type kvCache struct {
	ctx                                    *gpuContext
	layers, kvHeads, headDim, seqs, seqLen int
	k, v                                   cudadrv.DevicePtr
	lens                                   []int // (layers, seqs)
	freed                                  bool  // under ctx.mu

	idx     cudadrv.DevicePtr // int32 (seq, pos) of the token a kernel takes
	part    cudadrv.DevicePtr // attn_decode's partial results
	partCap int               // floats at part
	cnt     cudadrv.DevicePtr // attn_decode's arrival counters, kept zero
	cntCap  int               // int32s at cnt
}

// cols is the number of elements of one key or value row.
func (kv *kvCache) cols() int { return kv.kvHeads * kv.headDim }

// layer returns layer l as the kernels address it.
func (kv *kvCache) layer(l int) ptx.KVCache {
	off := l * kv.seqs * kv.seqLen * kv.cols() * 2
	return ptx.KVCache{K: kv.k.Offset(off), V: kv.v.Offset(off), Ctx: kv.seqLen, KCols: kv.cols(), VCols: kv.cols()}
}

// setIndex makes (seq, pos) the token the next kernel takes (inside Do).
func (kv *kvCache) setIndex(seq, pos int) error {
	return cudadrv.CopyToDevice(kv.idx, []int32{int32(seq), int32(pos)})
}

// release frees the device memory (inside Do).
func (kv *kvCache) release() error {
	err := errors.Join(cudadrv.MemFree(kv.k), cudadrv.MemFree(kv.v), cudadrv.MemFree(kv.idx),
		cudadrv.MemFree(kv.part), cudadrv.MemFree(kv.cnt))
	kv.k, kv.v, kv.idx, kv.part, kv.partCap, kv.cnt, kv.cntCap = 0, 0, 0, 0, 0, 0, 0
	return err
}

// enterKV looks up both handles, registers a call on the context and checks
// that kv belongs to it; call c.exit when done.
func enterKV(ctxh, kvh C.uintptr_t) (*gpuContext, *kvCache, error) {
	c, err := enterContext(ctxh)
	if err != nil {
		return nil, nil, err
	}
	kv, err := lookup[*kvCache](kvh, "kv")
	if err == nil {
		c.mu.Lock()
		switch {
		case kv.freed:
			err = errorf(stInvalidHandle, "kv was freed")
		case kv.ctx != c:
			err = errorf(stInvalidHandle, "kv belongs to another context")
		}
		c.mu.Unlock()
	}
	if err != nil {
		c.exit()
		return nil, nil, err
	}
	return c, kv, nil
}

//export capiAllocKVCache
func capiAllocKVCache(h C.uintptr_t, layers, kvHeads, headDim, seqs, seqLen C.int32_t, out *C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	c, err := enterContext(h)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	if out == nil {
		return failArg(argErrorf("kv (the result pointer) is NULL"))
	}
	if layers <= 0 || kvHeads <= 0 || headDim <= 0 || seqs <= 0 || seqLen <= 0 {
		return failArg(argErrorf("alloc_kvcache: n_layers=%d n_kv_heads=%d head_dim=%d max_seqs=%d max_seq_len=%d; all must be positive",
			int32(layers), int32(kvHeads), int32(headDim), int32(seqs), int32(seqLen)))
	}
	bytes := mulBytes(2, int64(layers), int64(seqs), int64(seqLen), int64(kvHeads), int64(headDim))
	if bytes < 0 || bytes > math.MaxInt32*int64(1<<16) {
		return failArg(errorf(stOutOfMemory, "alloc_kvcache: the cache would need more than 2^47 bytes"))
	}
	kv := &kvCache{
		ctx: c, layers: int(layers), kvHeads: int(kvHeads), headDim: int(headDim), seqs: int(seqs), seqLen: int(seqLen),
		lens: make([]int, int(layers)*int(seqs)),
	}
	err = c.ctx.Do(func() error {
		var err error
		for _, a := range []struct {
			p     *cudadrv.DevicePtr
			bytes int
		}{{&kv.k, int(bytes)}, {&kv.v, int(bytes)}, {&kv.idx, 8}} {
			if *a.p, err = cudadrv.MemAlloc(a.bytes); err != nil {
				kv.release()
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fail(err, stCUDA)
	}
	kh, err := newHandle(kv)
	if err != nil {
		return fail(errors.Join(err, c.ctx.Do(kv.release)), stInternal)
	}
	c.mu.Lock()
	c.kvs[kv] = kh
	c.mu.Unlock()
	*out = kh
	return stOK
}

//export capiFreeKVCache
func capiFreeKVCache(ctxh, kvh C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	if kvh == 0 {
		return stOK
	}
	c, kv, err := enterKV(ctxh, kvh)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	c.mu.Lock()
	if kv.freed {
		c.mu.Unlock()
		return failArg(errorf(stInvalidHandle, "kv was freed"))
	}
	kv.freed = true
	delete(c.kvs, kv)
	c.mu.Unlock()
	deleteHandle(kvh)
	return fail(c.ctx.Do(kv.release), stCUDA)
}

// checkSlot checks layer and seq against kv.
func (kv *kvCache) checkSlot(layer, seq C.int32_t) error {
	if layer < 0 || int(layer) >= kv.layers {
		return argErrorf("layer %d: the cache has %d layers", int32(layer), kv.layers)
	}
	if seq < 0 || int(seq) >= kv.seqs {
		return argErrorf("seq %d: the cache has %d sequences", int32(seq), kv.seqs)
	}
	return nil
}

//export capiKVAppendToken
func capiKVAppendToken(ctxh, kvh C.uintptr_t, layer, seq C.int32_t, kNew, vNew C.m40llm_devptr) (st status) {
	defer recoverPanic(&st)
	c, kv, err := enterKV(ctxh, kvh)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	if err := kv.checkSlot(layer, seq); err != nil {
		return failArg(err)
	}
	rowBytes := int64(kv.cols()) * 4
	if err := c.check(span{"k_new", kNew, rowBytes}, span{"v_new", vNew, rowBytes}); err != nil {
		return failArg(err)
	}
	return fail(c.ctx.Do(func() error {
		i := int(layer)*kv.seqs + int(seq)
		pos := kv.lens[i]
		if pos >= kv.seqLen {
			return errorf(stContextFull, "kv_append_token: layer %d, seq %d already holds max_seq_len=%d positions", int32(layer), int32(seq), kv.seqLen)
		}
		if err := kv.appendRows(int(layer), int(seq), pos, cudadrv.DevicePtr(kNew), cudadrv.DevicePtr(vNew)); err != nil {
			return err
		}
		kv.lens[i] = pos + 1
		return nil
	}), stCUDA)
}

// appendRows stores the FP32 rows at kNew and vNew, rounded to FP16, at
// (layer, seq, pos) with the KV-append kernel, inside Do.
func (kv *kvCache) appendRows(layer, seq, pos int, kNew, vNew cudadrv.DevicePtr) error {
	if err := kv.setIndex(seq, pos); err != nil {
		return err
	}
	if err := kv.ctx.kern.KVAppend(0, kv.layer(layer), kNew, vNew, kv.idx, kv.idx.Offset(4), 1); err != nil {
		return err
	}
	return kv.ctx.ctx.Synchronize()
}

//export capiAttentionLastToken
func capiAttentionLastToken(ctxh, kvh C.uintptr_t, layer, seq, heads C.int32_t, q, out C.m40llm_devptr) (st status) {
	defer recoverPanic(&st)
	c, kv, err := enterKV(ctxh, kvh)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	if err := kv.checkSlot(layer, seq); err != nil {
		return failArg(err)
	}
	if heads <= 0 || int(heads)%kv.kvHeads != 0 {
		return failArg(argErrorf("attention_last_token: n_heads=%d must be a positive multiple of the cache's n_kv_heads=%d", int32(heads), kv.kvHeads))
	}
	qBytes := int64(heads) * int64(kv.headDim) * 4
	if err := c.check(span{"q", q, qBytes}, span{"out", out, qBytes}); err != nil {
		return failArg(err)
	}
	return fail(c.ctx.Do(func() error {
		n := kv.lens[int(layer)*kv.seqs+int(seq)]
		if n == 0 {
			return argErrorf("attention_last_token: layer %d, seq %d holds no positions; append the token first", int32(layer), int32(seq))
		}
		return kv.attend(int(layer), int(seq), n, int(heads), cudadrv.DevicePtr(q), cudadrv.DevicePtr(out))
	}), stCUDA)
}

// attend runs the decode-attention kernel (attn_decode, split over the KV
// axis) for one query at position n-1 of (layer, seq), inside Do.
func (kv *kvCache) attend(layer, seq, n, heads int, q, out cudadrv.DevicePtr) error {
	a := &ptx.Attention{
		Cache: kv.layer(layer),
		Heads: heads, KVHeads: kv.kvHeads, HeadDim: kv.headDim, ValueDim: kv.headDim,
		Scale: float32(1 / math.Sqrt(float64(kv.headDim))),
	}
	plan := a.PlanDecode(1, kv.ctx.sms)
	if err := grow(&kv.part, &kv.partCap, a.PartialElems(1, plan)); err != nil {
		return err
	}
	if need := a.Counters(1, plan); need > kv.cntCap {
		if err := grow(&kv.cnt, &kv.cntCap, need); err != nil {
			return err
		}
		// The kernel leaves the counters zero for the next launch.
		if err := cudadrv.MemsetD32(kv.cnt, 0, need); err != nil {
			return err
		}
	}
	if err := kv.setIndex(seq, n-1); err != nil {
		return err
	}
	if err := kv.ctx.kern.AttnDecode(0, a, plan, out, kv.part, kv.cnt, q, kv.idx, kv.idx.Offset(4), 1); err != nil {
		return err
	}
	return kv.ctx.ctx.Synchronize()
}

// grow makes *p hold at least n 4-byte elements (*capacity counts them),
// reallocating when it is smaller; the contents are then undefined. Inside
// Do.
func grow(p *cudadrv.DevicePtr, capacity *int, n int) error {
	if n <= *capacity {
		return nil
	}
	if err := cudadrv.MemFree(*p); err != nil {
		return err
	}
	*p, *capacity = 0, 0
	q, err := cudadrv.MemAlloc(4 * n)
	if err != nil {
		return err
	}
	*p, *capacity = q, n
	return nil
}
