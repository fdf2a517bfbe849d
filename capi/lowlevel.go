package main

/*
#include "capi.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/ptx"
)

// gpuContext is the object behind an m40llm_context handle: a CUDA context,
// the embedded kernels loaded into it, and the device memory made through
// it. Every GPU call runs inside ctx.Do, on the context's own thread, one at
// a time.
type gpuContext struct {
	guard
	ctx  *cudadrv.Context
	kern *ptx.Kernels
	sms  int // multiprocessors, for the attention kernels' split

	mu     sync.Mutex
	allocs map[cudadrv.DevicePtr]int // base address → bytes
	kvs    map[*kvCache]C.uintptr_t  // live KV caches → their handles
}

// enterContext looks up handle h and registers a call on it; call c.exit
// when done.
func enterContext(h C.uintptr_t) (*gpuContext, error) {
	c, err := lookup[*gpuContext](h, "ctx")
	if err != nil {
		return nil, err
	}
	if err := c.enter("ctx"); err != nil {
		return nil, err
	}
	return c, nil
}

//export capiCreateContext
func capiCreateContext(device C.int32_t, out *C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	if out == nil {
		return failArg(argErrorf("ctx (the result pointer) is NULL"))
	}
	if err := initDriver(); err != nil {
		return fail(fmt.Errorf("no usable CUDA GPU: %w", err), stNoDevice)
	}
	n, err := cudadrv.DeviceCount()
	if err != nil {
		return fail(err, stNoDevice)
	}
	if device < 0 || int(device) >= n {
		return failArg(argErrorf("device_id %d: there are %d device(s)", int32(device), n))
	}
	dev, err := cudadrv.DeviceGet(int(device))
	if err != nil {
		return fail(err, stCUDA)
	}
	sms, err := dev.Attribute(cudadrv.AttrMultiprocessorCount)
	if err != nil {
		return fail(err, stCUDA)
	}
	ctx, err := cudadrv.NewContext(dev)
	if err != nil {
		return fail(err, stCUDA)
	}
	kern, err := ptx.Load(ctx)
	if err != nil {
		ctx.Close()
		return fail(err, stCUDA)
	}
	h, err := newHandle(&gpuContext{
		ctx: ctx, kern: kern, sms: sms,
		allocs: map[cudadrv.DevicePtr]int{},
		kvs:    map[*kvCache]C.uintptr_t{},
	})
	if err != nil {
		return fail(errors.Join(err, kern.Close(), ctx.Close()), stInternal)
	}
	*out = h
	return stOK
}

//export capiDestroyContext
func capiDestroyContext(h C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	if h == 0 {
		return stOK
	}
	c, err := lookup[*gpuContext](h, "ctx")
	if err != nil {
		return failArg(err)
	}
	if err := c.close("ctx", nil); err != nil {
		return failArg(err)
	}
	deleteHandle(h)
	c.mu.Lock()
	defer c.mu.Unlock()
	for kv, kh := range c.kvs {
		deleteHandle(kh)
		kv.freed = true
	}
	err = c.ctx.Do(func() error {
		var errs []error
		for kv := range c.kvs {
			errs = append(errs, kv.release())
		}
		for p := range c.allocs {
			errs = append(errs, cudadrv.MemFree(p))
		}
		return errors.Join(errs...)
	})
	c.kvs, c.allocs = nil, nil
	err = errors.Join(err, c.kern.Close(), c.ctx.Close())
	return fail(err, stCUDA)
}

//export capiDeviceMalloc
func capiDeviceMalloc(h C.uintptr_t, bytes C.size_t, ptr *C.m40llm_devptr) (st status) {
	defer recoverPanic(&st)
	c, err := enterContext(h)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	switch {
	case ptr == nil:
		return failArg(argErrorf("ptr is NULL"))
	case bytes == 0:
		return failArg(argErrorf("bytes is 0"))
	case uint64(bytes) > math.MaxInt64:
		return failArg(argErrorf("bytes is %d", uint64(bytes)))
	}
	var p cudadrv.DevicePtr
	err = c.ctx.Do(func() error {
		var err error
		p, err = cudadrv.MemAlloc(int(bytes))
		return err
	})
	if err != nil {
		return fail(err, stCUDA)
	}
	c.mu.Lock()
	c.allocs[p] = int(bytes)
	c.mu.Unlock()
	*ptr = C.m40llm_devptr(p)
	return stOK
}

//export capiDeviceFree
func capiDeviceFree(h C.uintptr_t, ptr C.m40llm_devptr) (st status) {
	defer recoverPanic(&st)
	c, err := enterContext(h)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	if ptr == 0 {
		return stOK
	}
	p := cudadrv.DevicePtr(ptr)
	c.mu.Lock()
	_, ok := c.allocs[p]
	delete(c.allocs, p)
	c.mu.Unlock()
	if !ok {
		return failArg(argErrorf("ptr %#x is not an allocation of this context (freed already?)", uint64(ptr)))
	}
	return fail(c.ctx.Do(func() error { return cudadrv.MemFree(p) }), stCUDA)
}

// span is a device buffer argument to check: name, address, bytes.
type span struct {
	name  string
	p     C.m40llm_devptr
	bytes int64
}

// check makes sure every span lies inside one allocation of c.
func (c *gpuContext) check(spans ...span) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range spans {
		if s.p == 0 {
			return argErrorf("%s is 0", s.name)
		}
		if s.bytes < 0 {
			return argErrorf("%s: size overflows", s.name)
		}
		if !c.within(cudadrv.DevicePtr(s.p), s.bytes) {
			return argErrorf("%s: [%#x, +%d bytes) is not inside one allocation of this context", s.name, uint64(s.p), s.bytes)
		}
	}
	return nil
}

// within reports whether [p, p+bytes) lies inside one allocation; c.mu is
// held.
func (c *gpuContext) within(p cudadrv.DevicePtr, bytes int64) bool {
	for base, n := range c.allocs {
		if p >= base && uint64(p-base) <= uint64(n) && uint64(bytes) <= uint64(n)-uint64(p-base) {
			return true
		}
	}
	return false
}

// mulBytes returns a*b*elem as int64, or -1 on overflow.
func mulBytes(elem int64, dims ...int64) int64 {
	n := elem
	for _, d := range dims {
		if d < 0 || (d != 0 && n > math.MaxInt64/d) {
			return -1
		}
		n *= d
	}
	return n
}

//export capiMemcpyH2D
func capiMemcpyH2D(h C.uintptr_t, dst C.m40llm_devptr, src unsafe.Pointer, bytes C.size_t) (st status) {
	defer recoverPanic(&st)
	c, err := enterContext(h)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	if bytes == 0 {
		return stOK
	}
	if src == nil {
		return failArg(argErrorf("src is NULL"))
	}
	if err := c.check(span{"dst", dst, sizeArg(bytes)}); err != nil {
		return failArg(err)
	}
	return fail(c.ctx.Do(func() error {
		return cudadrv.MemcpyHtoD(cudadrv.DevicePtr(dst), src, int(bytes))
	}), stCUDA)
}

//export capiMemcpyD2H
func capiMemcpyD2H(h C.uintptr_t, dst unsafe.Pointer, src C.m40llm_devptr, bytes C.size_t) (st status) {
	defer recoverPanic(&st)
	c, err := enterContext(h)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	if bytes == 0 {
		return stOK
	}
	if dst == nil {
		return failArg(argErrorf("dst is NULL"))
	}
	if err := c.check(span{"src", src, sizeArg(bytes)}); err != nil {
		return failArg(err)
	}
	return fail(c.ctx.Do(func() error {
		return cudadrv.MemcpyDtoH(dst, cudadrv.DevicePtr(src), int(bytes))
	}), stCUDA)
}

// sizeArg converts a size_t to int64, -1 when it does not fit.
func sizeArg(n C.size_t) int64 {
	if uint64(n) > math.MaxInt64 {
		return -1
	}
	return int64(n)
}

//export capiGemm
func capiGemm(h C.uintptr_t, a, b, cOut C.m40llm_devptr, m, n, k C.int32_t) (st status) {
	defer recoverPanic(&st)
	c, err := enterContext(h)
	if err != nil {
		return failArg(err)
	}
	defer c.exit()
	if m <= 0 || n <= 0 || k <= 0 {
		return failArg(argErrorf("gemm: M=%d N=%d K=%d; all must be positive", int32(m), int32(n), int32(k)))
	}
	M, N, K := int64(m), int64(n), int64(k)
	err = c.check(
		span{"A (FP32, M x K)", a, mulBytes(4, M, K)},
		span{"B (FP16, N x K)", b, mulBytes(2, N, K)},
		span{"C (FP32, M x N)", cOut, mulBytes(4, M, N)},
	)
	if err != nil {
		return failArg(err)
	}
	return fail(c.ctx.Do(func() error {
		// ptx's layout: Y[n, m] = X[n, k] · W[m, k]ᵀ with X = A (M rows),
		// W = B (N rows), Y = C.
		if err := c.kern.MatMulF16(0, cudadrv.DevicePtr(cOut), cudadrv.DevicePtr(a), cudadrv.DevicePtr(b), int(m), int(n), int(k)); err != nil {
			return err
		}
		return c.ctx.Synchronize()
	}), stCUDA)
}
