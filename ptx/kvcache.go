package ptx

import "fmt"

// CacheType is the element type of one half (the keys or the values) of a
// KV cache on the device, in the row layouts of kvcache.cuh (ggml's block
// layouts, the ones model.CacheType documents). The zero value is
// CacheF16.
type CacheType int

// The cache types.
const (
	CacheF16  CacheType = iota // binary16 per element
	CacheF32                   // float32 per element
	CacheQ8_0                  // blocks of 32: binary16 d, 32 int8; x = d·q
	CacheQ4_0                  // blocks of 32: binary16 d, 16 bytes of nibbles; x = d·(q−8)
	numCacheTypes
)

var cacheFormats = [numCacheTypes]struct {
	name         string
	block, bytes int
}{
	CacheF16:  {"f16", 1, 2},
	CacheF32:  {"f32", 1, 4},
	CacheQ8_0: {"q8_0", 32, 34},
	CacheQ4_0: {"q4_0", 32, 18},
}

func (t CacheType) valid() bool { return t >= 0 && t < numCacheTypes }

// String returns llama.cpp's name of t ("q8_0"), or "CacheType(N)".
func (t CacheType) String() string {
	if !t.valid() {
		return fmt.Sprintf("CacheType(%d)", int(t))
	}
	return cacheFormats[t].name
}

// BlockSize is the number of elements of one block of t (1 for f16 and
// f32, 32 for q8_0 and q4_0), or 0 for a value that is not a type.
func (t CacheType) BlockSize() int {
	if !t.valid() {
		return 0
	}
	return cacheFormats[t].block
}

// RowBytes is the size of a cached row of n elements of t (n a multiple
// of the block size), or 0 for a value that is not a type.
func (t CacheType) RowBytes(n int) int64 {
	if !t.valid() {
		return 0
	}
	f := cacheFormats[t]
	return int64(n/f.block) * int64(f.bytes)
}

// The kernels of each pair of cache types, in kernelID order from
// kvKernel: the stores, decode attention and prefill attention per head
// dimension (prefillDims).
const (
	kvkAppend = iota
	kvkRopeAppend
	kvkDecode
	kvkPrefill // + the index of the head dimension in prefillDims
	kvKernels  = kvkPrefill + 5
)

// prefillDims are the head dimensions of the prefill kernels, in kernel
// order.
var prefillDims = [5]int{8, 16, 32, 64, 128}

// prefillRows is the query rows per block of the prefill kernel of each
// head dimension (attention.cu, kvcache.cu).
var prefillRows = [5]int{32, 32, 32, 32, 16}

// kvKernelBase indexes the kernels of kvcache.cu in kernelTable; f16 keys
// with f16 values use the kernels of rope.cu and attention.cu, whose IDs
// kvKernel returns.
const kvKernelBase = kQuant + kernelID(numQuantTypes)*quantKernels

// kvKernel returns the kernel of kind kvk (kvkPrefill+i for prefill of
// head dimension prefillDims[i]) for keys of kt and values of vt, and
// false when there is none (a quantized type with a head dimension below
// its block).
func kvKernel(kt, vt CacheType, kvk int) (kernelID, bool) {
	if !kt.valid() || !vt.valid() || kvk < 0 || kvk >= kvKernels {
		return 0, false
	}
	if kt == CacheF16 && vt == CacheF16 {
		switch kvk {
		case kvkAppend:
			return kKVAppend, true
		case kvkRopeAppend:
			return kRopeAppend, true
		case kvkDecode:
			return kAttnDecode, true
		}
		return kAttnPrefill8 + kernelID(kvk-kvkPrefill), true
	}
	id := kvKernelBase + kernelID((int(kt)*int(numCacheTypes)+int(vt))*kvKernels+kvk)
	return id, kernelTable[id].name != ""
}

func init() {
	for kt := range numCacheTypes {
		for vt := range numCacheTypes {
			if kt == CacheF16 && vt == CacheF16 {
				continue
			}
			pair := kt.String() + "_" + vt.String()
			base := kvKernelBase + kernelID((int(kt)*int(numCacheTypes)+int(vt))*kvKernels)
			kernelTable[base+kvkAppend] = kernelSpec{"kvcache", "kv_append_" + pair, kernelTable[kKVAppend].params}
			kernelTable[base+kvkRopeAppend] = kernelSpec{"kvcache", "rope_append_" + pair, kernelTable[kRopeAppend].params}
			kernelTable[base+kvkDecode] = kernelSpec{"kvcache", "attn_decode_" + pair, kernelTable[kAttnDecode].params}
			block := max(kt.BlockSize(), vt.BlockSize())
			for i, hd := range prefillDims {
				if hd%block == 0 {
					kernelTable[base+kvkPrefill+kernelID(i)] = kernelSpec{"kvcache", fmt.Sprintf("attn_prefill_%s_h%d", pair, hd),
						kernelTable[kAttnPrefill8].params}
				}
			}
		}
	}
}

// checkTypes verifies that c's types are types and that their blocks
// divide the rows and the head dimensions hd (keys) and vd (values).
func (c *KVCache) checkTypes(op string, hd, vd int) error {
	if !c.KType.valid() || !c.VType.valid() {
		return fmt.Errorf("ptx: %s: cache types %s/%s: not a type", op, c.KType, c.VType)
	}
	if kb, vb := c.KType.BlockSize(), c.VType.BlockSize(); hd%kb != 0 || vd%vb != 0 || c.KCols%kb != 0 || c.VCols%vb != 0 {
		return fmt.Errorf("ptx: %s: %s keys of head dim %d (rows of %d) or %s values of %d (rows of %d) are not whole %d-element blocks",
			op, c.KType, hd, c.KCols, c.VType, vd, c.VCols, max(kb, vb))
	}
	return nil
}
