package cpu

import (
	"fmt"
	"unsafe"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
)

// kvHalf is one half of the KV cache (the keys or the values): one row of
// dim elements per (layer, slot, position), row r at r·rowBytes, stored as
// typ in the layout model.CacheType documents:
//
//	f32:       f32[r*dim : (r+1)*dim]
//	f16:       raw[r*rowBytes:], dim binary16 values
//	q8_0/q4_0: raw[r*rowBytes:], dim/32 blocks, quantized on store with
//	           gguf.Quantize (ggml's reference quantizers, bit for bit)
//
// A head of hd elements at offset off (both multiples of the block size)
// is the blocks off/32 .. (off+hd)/32 of its row.
type kvHalf struct {
	typ      model.CacheType
	dim      int
	rowBytes int
	f32      []float32 // typ f32
	raw      []byte    // every other type
}

func newKVHalf(t model.CacheType, rows int64, dim int) (kvHalf, error) {
	if dim%t.BlockSize() != 0 {
		return kvHalf{}, fmt.Errorf("cpu: a KV row of %d elements is not a whole number of %d-element %s blocks", dim, t.BlockSize(), t)
	}
	h := kvHalf{typ: t, dim: dim, rowBytes: int(t.RowBytes(dim))}
	if t == model.CacheF32 {
		h.f32 = make([]float32, rows*int64(dim))
	} else {
		h.raw = make([]byte, rows*int64(h.rowBytes))
	}
	return h, nil
}

// bytes is the memory the half holds.
func (h *kvHalf) bytes() int64 { return int64(len(h.f32))*4 + int64(len(h.raw)) }

// store writes row r from x (dim values), converting to the cache type.
func (h *kvHalf) store(r int, x []float32) {
	if h.typ == model.CacheF32 {
		copy(h.f32[r*h.dim:(r+1)*h.dim], x)
		return
	}
	dst := h.raw[r*h.rowBytes : (r+1)*h.rowBytes]
	if h.typ == model.CacheF16 {
		for j, v := range x[:h.dim] {
			h := gguf.F32ToF16(v)
			dst[2*j], dst[2*j+1] = byte(h), byte(h>>8)
		}
		return
	}
	if err := gguf.Quantize(dst, x[:h.dim], h.typ.GGUFType()); err != nil {
		panic("cpu: KV store: " + err.Error()) // sizes checked in newKVHalf
	}
}

// rows returns elements [off, off+hd) of the npos rows from row start as
// float32: for f32 the cache itself (row p at p·stride, stride dim), for
// the other types dequantized into scratch (at least npos·hd floats;
// stride hd), one row of the head at a time, so that the attention
// kernels run in FP32 on every type.
func (h *kvHalf) rows(start, npos, off, hd int, scratch []float32) (vals []float32, stride int) {
	if h.typ == model.CacheF32 {
		return h.f32[start*h.dim+off : (start+npos)*h.dim], h.dim
	}
	t := h.typ.GGUFType()
	b0 := int(h.typ.RowBytes(off))
	nb := int(h.typ.RowBytes(hd))
	for p := range npos {
		src := h.raw[(start+p)*h.rowBytes+b0:][:nb]
		dst := scratch[p*hd : (p+1)*hd]
		if h.typ == model.CacheF16 {
			f16Row(dst, src)
			continue
		}
		if err := gguf.Dequantize(dst, src, t); err != nil {
			panic("cpu: KV read: " + err.Error())
		}
	}
	return scratch[:npos*hd], hd
}

// f16Row converts len(dst) binary16 values from src.
func f16Row(dst []float32, src []byte) {
	if rowToF32(gguf.TypeF16, dst, src) {
		return
	}
	s := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(src))), len(src)/2)[:len(dst)]
	for i, v := range s {
		dst[i] = gguf.F16ToF32(v)
	}
}

// copyRows copies n rows from row src to row dst (ranges that do not
// overlap).
func (h *kvHalf) copyRows(dst, src, n int) {
	if h.typ == model.CacheF32 {
		copy(h.f32[dst*h.dim:(dst+n)*h.dim], h.f32[src*h.dim:(src+n)*h.dim])
		return
	}
	copy(h.raw[dst*h.rowBytes:(dst+n)*h.rowBytes], h.raw[src*h.rowBytes:(src+n)*h.rowBytes])
}

var _ model.SlotCopier = (*Backend)(nil)

// CopySlot copies the cached keys and values of positions 0..n-1 of slot
// src over those of slot dst in every layer, at the cache's types (the
// stored bytes, so nothing is quantized again). It fails for slots
// outside the cache, dst == src, n outside 0..Ctx, or no cache.
func (b *Backend) CopySlot(dst, src, n int) error {
	kv := b.kv
	switch {
	case kv.Slots == 0:
		return fmt.Errorf("cpu: CopySlot without a KV cache")
	case dst < 0 || dst >= kv.Slots || src < 0 || src >= kv.Slots || dst == src:
		return fmt.Errorf("cpu: CopySlot from slot %d to slot %d of %d", src, dst, kv.Slots)
	case n < 0 || n > kv.Ctx:
		return fmt.Errorf("cpu: CopySlot of %d positions of %d", n, kv.Ctx)
	}
	for l := range kv.Layers {
		d, s := (l*kv.Slots+dst)*kv.Ctx, (l*kv.Slots+src)*kv.Ctx
		b.kcache.copyRows(d, s, n)
		b.vcache.copyRows(d, s, n)
	}
	return nil
}
