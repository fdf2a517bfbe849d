package ptx

import (
	"fmt"
	"math"

	"github.com/m40llm/m40llm/cudadrv"
)

// The launchers below enqueue the forward pass's kernels on a stream. Each
// documents its layout; matrices are row-major (rows, cols). Counts are ints
// that must fit int32; pointers are device addresses (0 where a launcher
// says optional). Call them inside the context's Do. They do not wait for
// the kernels; failures on the device surface at the next synchronization.

// MatVecMaxN is the largest number of activation rows MatVec and GateUp
// take at once.
const MatVecMaxN = 16

// TopKMax is the largest k TopK selects.
const TopKMax = topKChunk / 2

const (
	topKChunk   = 2048 // candidates per block of topk_pass (topk.cu)
	decodeSub   = 64   // keys per step of attn_decode (attention.cu)
	maxSharedKB = 48   // shared memory per block on every supported GPU
)

func dim1(x int) cudadrv.Dim3    { return cudadrv.Dim3{X: uint32(x), Y: 1, Z: 1} }
func dim2(x, y int) cudadrv.Dim3 { return cudadrv.Dim3{X: uint32(x), Y: uint32(y), Z: 1} }

// rowThreads is the block size of kernels that give each of n rows one
// block: 256 threads when there are enough rows to fill the GPU, more (up
// to 1024, about one per 4 elements) for decode, where one block per row
// would leave a long serial loop.
func rowThreads(n, cols int) int {
	if n >= 32 {
		return 256
	}
	return max(256, min(1024, (cols/4+31)&^31))
}

// blocks returns the blocks of threads needed to cover count elements once,
// capped so that the grid-stride loops of the kernels take the rest.
func blocks(count, threads int) int { return max(1, min((count+threads-1)/threads, 8192)) }

func checkCounts(op string, v ...int) error {
	for _, x := range v {
		if x <= 0 || x > math.MaxInt32 {
			return fmt.Errorf("ptx: %s: bad size %v", op, v)
		}
	}
	return nil
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// Embed enqueues dst[i, :] = float(table[tokens[i], :]) for i < n:
// table FP16 (vocab, dim), tokens int32 (n), dst FP32 (n, dim).
func (k *Kernels) Embed(s cudadrv.Stream, dst, table, tokens cudadrv.DevicePtr, n, dim int) error {
	if err := checkCounts("Embed", n, dim); err != nil {
		return err
	}
	return k.launch(kEmbed, dim2(blocks(dim, 256), n), dim1(256), s, dst, table, tokens, int32(n), int32(dim))
}

// SwiGLU enqueues dst[j] = gate[j] / (1 + exp(-gate[j])) * up[j] for j <
// count (FP32; dst may alias gate or up).
func (k *Kernels) SwiGLU(s cudadrv.Stream, dst, gate, up cudadrv.DevicePtr, count int) error {
	if err := checkCounts("SwiGLU", count); err != nil {
		return err
	}
	return k.launch(kSwiGLU, dim1(blocks(count, 256)), dim1(256), s, dst, gate, up, int32(count))
}

// Add enqueues dst[j] += x[j] for j < count (FP32).
func (k *Kernels) Add(s cudadrv.Stream, dst, x cudadrv.DevicePtr, count int) error {
	if err := checkCounts("Add", count); err != nil {
		return err
	}
	return k.launch(kAdd, dim1(blocks(count, 256)), dim1(256), s, dst, x, int32(count))
}

// AddBias enqueues y[i, j] += b[j]: y FP32 (n, m), b FP32 (1, m).
func (k *Kernels) AddBias(s cudadrv.Stream, y, b cudadrv.DevicePtr, n, m int) error {
	if err := checkCounts("AddBias", n, m, n*m); err != nil {
		return err
	}
	return k.launch(kAddBias, dim1(blocks(n*m, 256)), dim1(256), s, y, b, int32(n), int32(m))
}

// GatherRows enqueues dst[j, :] = src[rows[j], :] for j < nrows: dst and src
// FP32 (·, cols), rows int32 (nrows) in device memory.
func (k *Kernels) GatherRows(s cudadrv.Stream, dst, src, rows cudadrv.DevicePtr, nrows, cols int) error {
	if err := checkCounts("GatherRows", nrows, cols); err != nil {
		return err
	}
	return k.launch(kGatherRows, dim2(blocks(cols, 256), nrows), dim1(256), s, dst, src, rows, int32(nrows), int32(cols))
}

// RMSNorm enqueues dst[i] = x[i] / sqrt(mean(x[i]²) + eps) * w for i < n:
// x and dst FP32 (n, cols) (dst may be x), w FP32 (1, cols).
func (k *Kernels) RMSNorm(s cudadrv.Stream, dst, x, w cudadrv.DevicePtr, n, cols int, eps float32) error {
	if err := checkCounts("RMSNorm", n, cols); err != nil {
		return err
	}
	return k.launch(kRMSNorm, dim1(n), dim1(rowThreads(n, cols)), s, dst, x, w, int32(cols), eps)
}

// AddRMSNorm enqueues x[i] += d[i]; dst[i] = rmsnorm(x[i]) * w for i < n,
// the fused Add followed by RMSNorm(dst, x). x, d, dst FP32 (n, cols); dst
// may alias d.
func (k *Kernels) AddRMSNorm(s cudadrv.Stream, x, d, dst, w cudadrv.DevicePtr, n, cols int, eps float32) error {
	if err := checkCounts("AddRMSNorm", n, cols); err != nil {
		return err
	}
	return k.launch(kAddRMSNorm, dim1(n), dim1(rowThreads(n, cols)), s, x, d, dst, w, int32(cols), eps)
}

// HeadRMSNorm enqueues, in place, RMSNorm of every head (headDim
// consecutive values) of the first n rows of x (n, cols) with the shared
// weight w (1, headDim).
func (k *Kernels) HeadRMSNorm(s cudadrv.Stream, x, w cudadrv.DevicePtr, n, cols, headDim int, eps float32) error {
	if err := checkCounts("HeadRMSNorm", n, cols, headDim); err != nil {
		return err
	}
	heads := cols / headDim
	return k.launch(kHeadRMSNorm, dim2((heads+7)/8, n), dim1(256), s, x, w, int32(n), int32(cols), int32(headDim), eps)
}

// RopeTable enqueues cs[i, j] = (cos θ, sin θ) with θ = (pos[i]·freqScale)
// · invFreq[j] computed in FP64: cs float2 (n, half), pos int32 (n),
// invFreq float64 (half).
func (k *Kernels) RopeTable(s cudadrv.Stream, cs, pos, invFreq cudadrv.DevicePtr, n, half int, freqScale float32) error {
	if err := checkCounts("RopeTable", n, half, n*half); err != nil {
		return err
	}
	return k.launch(kRopeTable, dim1(blocks(n*half, 256)), dim1(256), s, cs, pos, invFreq, int32(n), int32(half), freqScale)
}

// Rope enqueues the in-place rotation of every head of the first n rows of
// x (n, cols) by the angles in cs (n, ropeDim/2): pairs (2j, 2j+1), or (j,
// j+ropeDim/2) when neox.
func (k *Kernels) Rope(s cudadrv.Stream, x, cs cudadrv.DevicePtr, n, cols, headDim, ropeDim int, neox bool) error {
	if err := checkCounts("Rope", n, cols, headDim, ropeDim); err != nil {
		return err
	}
	pairs := n * (cols / headDim) * (ropeDim / 2)
	return k.launch(kRope, dim1(blocks(pairs, 256)), dim1(256), s, x, cs, int32(n), int32(cols), int32(headDim), int32(ropeDim), b2i(neox))
}

// KVCache addresses one layer of a KV cache laid out (slots, ctx, row):
// the key row of (slot, position) starts at byte (slot*Ctx +
// position)·KType.RowBytes(KCols), the value row at (slot*Ctx +
// position)·VType.RowBytes(VCols), each in its type's layout (CacheType;
// the zero values are FP16). KV head h of a key row starts at byte
// KType.RowBytes(h·HeadDim) of it. With a quantized type, the head
// dimension of that half must be a multiple of 32.
type KVCache struct {
	K, V         cudadrv.DevicePtr // the layer's key and value caches
	Ctx          int               // positions per slot
	KCols, VCols int               // KVHeads·HeadDim and KVHeads·ValueDim
	KType, VType CacheType         // the element types of keys and values
}

// KVAppend enqueues the store of row i of k (n, KCols) and v (n, VCols),
// converted to the cache's types (rounded to FP16; quantized as gguf's
// reference quantizers do, byte for byte), at (seq[i], pos[i]) of the
// cache, for i < n. It fails without launching on a bad count, a value
// that is not a cache type, or rows that are not whole blocks.
func (k *Kernels) KVAppend(s cudadrv.Stream, c KVCache, kk, v, seq, pos cudadrv.DevicePtr, n int) error {
	if err := checkCounts("KVAppend", n, c.Ctx, c.KCols, c.VCols); err != nil {
		return err
	}
	if err := c.checkTypes("KVAppend", c.KType.BlockSize(), c.VType.BlockSize()); err != nil {
		return err
	}
	id, _ := kvKernel(c.KType, c.VType, kvkAppend)
	return k.launch(id, dim1(n), dim1(rowThreads(n, c.KCols)), s, c.K, c.V, kk, v, seq, pos, int32(n), int32(c.Ctx), int32(c.KCols), int32(c.VCols))
}

// RopeAppend enqueues the fused Rope(q), Rope(kk), KVAppend(kk, v): q is
// (n, qcols) and kk (n, KCols), both rotated in place, and the rotated key
// rows and the value rows are stored in the cache. It fails as KVAppend
// does, and when headDim is not a multiple of the key type's block.
func (k *Kernels) RopeAppend(s cudadrv.Stream, c KVCache, q, kk, v, cs, seq, pos cudadrv.DevicePtr, n, qcols, headDim, ropeDim int, neox bool) error {
	if err := checkCounts("RopeAppend", n, qcols, headDim, ropeDim, c.Ctx, c.KCols, c.VCols); err != nil {
		return err
	}
	if err := c.checkTypes("RopeAppend", headDim, c.VType.BlockSize()); err != nil {
		return err
	}
	id, _ := kvKernel(c.KType, c.VType, kvkRopeAppend)
	return k.launch(id, dim1(n), dim1(rowThreads(n, qcols/2)), s, q, kk, v, c.K, c.V, cs, seq, pos,
		int32(n), int32(qcols), int32(c.KCols), int32(c.VCols), int32(headDim), int32(ropeDim), b2i(neox), int32(c.Ctx))
}

// Attention describes grouped-query attention of n query rows over a KV
// cache layer: q (n, Heads·HeadDim), output (n, Heads·ValueDim), query head
// h reading KV head h/(Heads/KVHeads), seq and pos int32 (n).
type Attention struct {
	Cache                             KVCache
	Heads, KVHeads, HeadDim, ValueDim int
	Scale                             float32
}

func (a *Attention) check(n int) error {
	if err := checkCounts("Attention", n, a.Heads, a.KVHeads, a.HeadDim, a.ValueDim, a.Cache.Ctx); err != nil {
		return err
	}
	if a.Heads%a.KVHeads != 0 || a.Cache.KCols != a.KVHeads*a.HeadDim || a.Cache.VCols != a.KVHeads*a.ValueDim {
		return fmt.Errorf("ptx: Attention: %d heads, %d KV heads, head dims %d/%d do not match cache rows %d/%d",
			a.Heads, a.KVHeads, a.HeadDim, a.ValueDim, a.Cache.KCols, a.Cache.VCols)
	}
	return a.Cache.checkTypes("Attention", a.HeadDim, a.ValueDim)
}

// DecodePlan is the split of the KV axis that AttnDecode uses: Splits
// blocks per (query row, head group), each covering Chunk positions, and
// HeadsPerBlock query heads of a group per block.
type DecodePlan struct {
	Splits, Chunk, HeadsPerBlock int
}

// PlanDecode chooses the split for n query rows over contexts of up to
// a.Cache.Ctx positions on a GPU with sms multiprocessors. Query heads that share a KV
// head are spread over blocks until the blocks of one split cover the
// multiprocessors (at short contexts parallelism matters more than reading
// each key once per group; the re-reads hit the L2 cache), then the KV axis
// is split until several blocks per multiprocessor have work at a full
// context. Blocks are latency-bound (a few hundred positions each take
// several dependent memory round trips), so the split aims at eight
// blocks per multiprocessor.
func (a *Attention) PlanDecode(n, sms int) DecodePlan {
	group := a.Heads / a.KVHeads
	sms = max(sms, 1)
	hpb := group
	for hpb > 1 && (decodeShared(hpb, a.HeadDim, a.ValueDim) > maxSharedKB<<10 ||
		n*a.KVHeads*((group+hpb-1)/hpb) < sms) {
		hpb = (hpb + 1) / 2
	}
	blocksPerSplit := n * a.KVHeads * ((group + hpb - 1) / hpb)
	maxSplits := (a.Cache.Ctx + decodeSub - 1) / decodeSub
	splits := max(1, min(maxSplits, (8*sms+blocksPerSplit-1)/blocksPerSplit))
	chunk := (a.Cache.Ctx + splits - 1) / splits
	chunk = (chunk + decodeSub - 1) / decodeSub * decodeSub
	splits = (a.Cache.Ctx + chunk - 1) / chunk
	return DecodePlan{Splits: splits, Chunk: chunk, HeadsPerBlock: hpb}
}

// Counters is the number of int32 arrival counters AttnDecode needs for n
// rows, which must be zero before the first launch (the kernel leaves them
// zero).
func (a *Attention) Counters(n int, p DecodePlan) int {
	group := a.Heads / a.KVHeads
	return n * a.KVHeads * ((group + p.HeadsPerBlock - 1) / p.HeadsPerBlock)
}

// decodeShared is attn_decode's dynamic shared memory in bytes for hpb
// query heads per block: their queries, scores, outputs, the four warps'
// partial outputs and three scalars each.
func decodeShared(hpb, hd, vd int) int { return 4 * hpb * (hd + decodeSub + 5*vd + 3) }

// PartialElems is the size in floats of the partial results AttnDecode
// writes for n rows: n·Heads·Splits·(ValueDim+2).
func (a *Attention) PartialElems(n int, p DecodePlan) int {
	return n * a.Heads * p.Splits * (a.ValueDim + 2)
}

// AttnDecode enqueues split-KV attention for any n: attn_decode writes
// partial results for every (row, head, split) to part (PartialElems
// floats), and the last block of each (row, head group) merges them into
// dst. cnt holds Counters(n, p) zeroed int32.
func (k *Kernels) AttnDecode(s cudadrv.Stream, a *Attention, p DecodePlan, dst, part, cnt, q, seq, pos cudadrv.DevicePtr, n int) error {
	if err := a.check(n); err != nil {
		return err
	}
	if err := checkCounts("AttnDecode", p.Splits, p.Chunk, p.HeadsPerBlock); err != nil {
		return err
	}
	group := a.Heads / a.KVHeads
	nsub := (group + p.HeadsPerBlock - 1) / p.HeadsPerBlock
	smem := decodeShared(p.HeadsPerBlock, a.HeadDim, a.ValueDim)
	if smem > maxSharedKB<<10 {
		return fmt.Errorf("ptx: AttnDecode: %d heads per block need %d bytes of shared memory", p.HeadsPerBlock, smem)
	}
	grid := cudadrv.Dim3{X: uint32(a.KVHeads * nsub), Y: uint32(p.Splits), Z: uint32(n)}
	id, _ := kvKernel(a.Cache.KType, a.Cache.VType, kvkDecode)
	return k.launchShared(id, grid, dim1(128), smem, s, part, dst, cnt, q, a.Cache.K, a.Cache.V, seq, pos,
		int32(n), int32(a.Heads), int32(a.KVHeads), int32(a.HeadDim), int32(a.ValueDim), int32(a.Cache.Ctx),
		int32(p.Chunk), int32(p.HeadsPerBlock), a.Scale)
}

// prefillKernel returns the attn_prefill instantiation for a's head
// dimension and cache types, and its query rows per block.
func (a *Attention) prefillKernel() (id kernelID, rows int, ok bool) {
	if a.HeadDim != a.ValueDim {
		return 0, 0, false
	}
	for i, hd := range prefillDims {
		if hd == a.HeadDim {
			id, ok = kvKernel(a.Cache.KType, a.Cache.VType, kvkPrefill+i)
			return id, prefillRows[i], ok
		}
	}
	return 0, 0, false
}

// PrefillSupported reports whether AttnPrefill handles a's head dimensions
// and cache types.
func (a *Attention) PrefillSupported() bool {
	_, _, ok := a.prefillKernel()
	return ok
}

// AttnPrefill enqueues tiled attention for many query rows (prompt
// processing): each block takes consecutive query rows of one head and
// streams the keys and values of their slot through shared memory once
// (converted to FP32). It needs HeadDim == ValueDim in 8, 16, 32, 64, 128,
// and at least 32 with a quantized cache type (PrefillSupported).
func (k *Kernels) AttnPrefill(s cudadrv.Stream, a *Attention, dst, q, seq, pos cudadrv.DevicePtr, n int) error {
	if err := a.check(n); err != nil {
		return err
	}
	id, rows, ok := a.prefillKernel()
	if !ok {
		return fmt.Errorf("ptx: AttnPrefill: head dims %d/%d with %s/%s caches not supported", a.HeadDim, a.ValueDim, a.Cache.KType, a.Cache.VType)
	}
	grid := dim2((n+rows-1)/rows, a.Heads)
	return k.launch(id, grid, dim1(128), s, dst, q, a.Cache.K, a.Cache.V, seq, pos,
		int32(n), int32(a.Heads), int32(a.KVHeads), int32(a.Cache.Ctx), a.Scale)
}

// matvecKernels are the instantiations of matvec_f16 and gateup_f16 by the
// number of rows N they take (matvec.cu), with their launch shapes: a
// matvec block of mvThreads threads computes mvRows rows of W, a gateup
// block of guThreads threads guRows rows of hb (as many gate and up rows).
var matvecKernels = []struct {
	n                 int
	mvThreads, mvRows int
	guThreads, guRows int
	matvec, gateup    kernelID
}{
	{1, 256, 8, 256, 8, kMatvec1, kGateUp1}, // a warp per row (gateup: gate and up)
	// Tiled: warps of 4 weight rows (gateup: 2 gate and 2 up rows).
	{2, 128, 16, 128, 8, kMatvec2, kGateUp2},
	{4, 128, 16, 128, 8, kMatvec4, kGateUp4},
	{8, 128, 16, 256, 16, kMatvec8, kGateUp8},
	{16, 256, 32, 256, 16, kMatvec16, kGateUp16},
}

// matvecFor returns the instantiation for n rows.
func matvecFor(n int) int {
	for i, mk := range matvecKernels {
		if n <= mk.n {
			return i
		}
	}
	panic("unreachable")
}

// MatVecOut is one product of MatVec: Y (n, M) = X · Wᵀ (+ Bias), W FP16
// (M, k), Bias FP32 (1, M) or 0.
type MatVecOut struct {
	Y, W, Bias cudadrv.DevicePtr
	M          int
}

// MatVec enqueues up to three products that share x (n, k) FP32, n ≤
// MatVecMaxN, in one launch: each out[j].Y[i, r] = Σ_l x[i, l]·W[r, l] +
// Bias[r]. Every weight byte is read once for all n rows.
//
// When k is a multiple of 8 the kernels read x and every W 16 bytes at a
// time, so those addresses must be 16-byte aligned (MemAlloc's are; a
// misaligned one faults on the device, CUDA_ERROR_MISALIGNED_ADDRESS at the
// next synchronization). MatVec fails without launching on a count that
// is not positive or does not fit int32, or on more than three outputs or
// MatVecMaxN rows.
func (k *Kernels) MatVec(s cudadrv.Stream, x cudadrv.DevicePtr, n, kk int, outs ...MatVecOut) error {
	if len(outs) == 0 || len(outs) > 3 {
		return fmt.Errorf("ptx: MatVec: %d outputs, want 1 to 3", len(outs))
	}
	if n > MatVecMaxN {
		return fmt.Errorf("ptx: MatVec: %d rows, at most %d", n, MatVecMaxN)
	}
	var o [3]MatVecOut
	copy(o[:], outs)
	rows := 0
	for _, out := range outs {
		if err := checkCounts("MatVec", n, kk, out.M); err != nil {
			return err
		}
		rows += out.M
	}
	mk := matvecKernels[matvecFor(n)]
	return k.launch(mk.matvec, dim1((rows+mk.mvRows-1)/mk.mvRows), dim1(mk.mvThreads), s, o[0].Y, o[1].Y, o[2].Y, x, o[0].W, o[1].W, o[2].W,
		o[0].Bias, o[1].Bias, o[2].Bias, int32(n), int32(o[0].M), int32(o[1].M), int32(o[2].M), int32(kk))
}

// GateUp enqueues the fused gate and up products with SwiGLU, for n ≤
// MatVecMaxN rows of x (n, k): with g = x·wgᵀ and u = x·wuᵀ (wg, wu FP16
// (m, k)), hb[i, r] = g / (1 + exp(-g)) * u and hb2[i, r] = u; hb and hb2
// are (n, m). It equals MatVec(hb = x·wgᵀ), MatVec(hb2 = x·wuᵀ),
// SwiGLU(hb, hb, hb2), and has MatVec's alignment rule and failures.
func (k *Kernels) GateUp(s cudadrv.Stream, hb, hb2, x, wg, wu cudadrv.DevicePtr, n, m, kk int) error {
	if err := checkCounts("GateUp", n, m, kk); err != nil {
		return err
	}
	if n > MatVecMaxN {
		return fmt.Errorf("ptx: GateUp: %d rows, at most %d", n, MatVecMaxN)
	}
	mk := matvecKernels[matvecFor(n)]
	return k.launch(mk.gateup, dim1((m+mk.guRows-1)/mk.guRows), dim1(mk.guThreads), s, hb, hb2, x, wg, wu, int32(n), int32(m), int32(kk))
}

// TopKScratch returns the bytes of scratch TopK needs for rows × cols
// values and k candidates.
func TopKScratch(rows, cols, k int) int {
	chunks := (cols + topKChunk - 1) / topKChunk
	if chunks <= 1 {
		return 0
	}
	return 2 * rows * chunks * k * 8
}

// TopK enqueues the selection of the k largest values of each of rows rows
// of src (rows, cols) FP32, in descending order with ties broken toward
// the lower column: vals FP32 (rows, k) and ids int32 (rows, k). NaN counts
// as -Inf; when k > cols the missing entries are (-Inf, -1). scratch holds
// TopKScratch(rows, cols, k) bytes.
func (k *Kernels) TopK(s cudadrv.Stream, vals, ids, src, scratch cudadrv.DevicePtr, rows, cols, kk int) error {
	if err := checkCounts("TopK", rows, cols, kk); err != nil {
		return err
	}
	if kk > TopKMax {
		return fmt.Errorf("ptx: TopK: k=%d, at most %d", kk, TopKMax)
	}
	half := scratch.Offset(TopKScratch(rows, cols, kk) / 2)
	// Ping-pong buffers of values then ids: (rows, chunks, k) each.
	bufs := [2]cudadrv.DevicePtr{scratch, half}
	inv, ini := src, cudadrv.DevicePtr(0)
	for pass := 0; ; pass++ {
		chunks := (cols + topKChunk - 1) / topKChunk
		if chunks == 1 {
			return k.launch(kTopK, dim2(1, rows), dim1(1024), s, vals, ids, inv, ini, int32(cols), int32(kk), int32(1))
		}
		outv := bufs[pass%2]
		outi := outv.Offset(4 * rows * chunks * kk)
		if err := k.launch(kTopK, dim2(chunks, rows), dim1(1024), s, outv, outi, inv, ini, int32(cols), int32(kk), int32(0)); err != nil {
			return err
		}
		inv, ini, cols = outv, outi, chunks*kk
	}
}
