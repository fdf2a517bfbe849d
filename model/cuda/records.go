package cuda

import (
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/ptx"
)

// The records below are the kernels a step can hold: one comparable struct
// per kernel, its operands named, their layout written in ptx's convention
// (row-major (rows, cols), FP32 activations unless a field says otherwise).
// Device addresses are plain integers (cudadrv.DevicePtr), so a record is
// a value: a step of records compares with == to the step a captured graph
// was recorded from, and the batch's device arrays (tokens, positions,
// slots, gathered rows) are operands like any other buffer, so a step
// recorded against other batch buffers never matches.
//
// The op methods of Backend (ops.go) build the unfused records; record
// fuses them (fuse, below, is the one place that does).

// op is a recorded kernel: a value of one of the record types below.
type op interface {
	// kernel names the kernel the record launches, as ptx names it
	// (instantiations by size left out).
	kernel() string
	// launch enqueues the kernel on l's stream (inside Do).
	launch(l *launcher) error
}

// rec is the constraint of record and put: a record type, comparable (a
// record type with a slice or map field does not compile).
type rec interface {
	op
	comparable
}

// launcher is what a record launches with: the kernels, the step's stream
// and cuBLAS (nil when it is off).
type launcher struct {
	k    *ptx.Kernels
	s    cudadrv.Stream
	blas *ptx.BLAS
}

// embed is embed_f16: dst[i] = table[tokens[i]] for i < n, with table FP16
// (vocab, dim), dst (n, dim) and tokens the batch's int32 (n).
type embed struct {
	dst, table, tokens cudadrv.DevicePtr
	n, dim             int
}

func (embed) kernel() string { return "embed_f16" }
func (r embed) launch(l *launcher) error {
	return l.k.Embed(l.s, r.dst, r.table, r.tokens, r.n, r.dim)
}

// rmsNorm is rmsnorm_f32: dst[i] = x[i] / sqrt(mean(x[i]²) + eps) * w for
// i < n, with x and dst (n, cols) (dst may be x) and w FP32 (1, cols).
type rmsNorm struct {
	dst, x, w cudadrv.DevicePtr
	n, cols   int
	eps       float32
}

func (rmsNorm) kernel() string { return "rmsnorm_f32" }
func (r rmsNorm) launch(l *launcher) error {
	return l.k.RMSNorm(l.s, r.dst, r.x, r.w, r.n, r.cols, r.eps)
}

// addRMSNorm is add_rmsnorm_f32: x[i] += d[i], then dst[i] =
// rmsnorm(x[i]) * w for i < n, with x, d and dst (n, cols) (dst may be d
// or x) and w FP32 (1, cols). It comes only from fuse.
type addRMSNorm struct {
	x, d, dst, w cudadrv.DevicePtr
	n, cols      int
	eps          float32
}

func (addRMSNorm) kernel() string { return "add_rmsnorm_f32" }
func (r addRMSNorm) launch(l *launcher) error {
	return l.k.AddRMSNorm(l.s, r.x, r.d, r.dst, r.w, r.n, r.cols, r.eps)
}

// headRMSNorm is head_rmsnorm_f32: in place, the RMSNorm of each head
// (headDim consecutive values) of the first n rows of x (n, cols), every
// head with the weight w FP32 (1, headDim).
type headRMSNorm struct {
	x, w             cudadrv.DevicePtr
	n, cols, headDim int
	eps              float32
}

func (headRMSNorm) kernel() string { return "head_rmsnorm_f32" }
func (r headRMSNorm) launch(l *launcher) error {
	return l.k.HeadRMSNorm(l.s, r.x, r.w, r.n, r.cols, r.headDim, r.eps)
}

// matVec is matvec_f16_nN: the first outs products of out, which share x
// (n, k) with n ≤ ptx.MatVecMaxN: out[j].Y (n, out[j].M) = x · out[j].Wᵀ
// + out[j].Bias, W FP16 (M, k), Bias FP32 (1, M) or 0. Entries past outs
// are zero. MatMul records one product; fuse merges up to three.
type matVec struct {
	x    cudadrv.DevicePtr
	n, k int
	out  [3]ptx.MatVecOut
	outs int
}

func (matVec) kernel() string { return "matvec_f16" }
func (r matVec) launch(l *launcher) error {
	return l.k.MatVec(l.s, r.x, r.n, r.k, r.out[:r.outs]...)
}

// writes reports whether one of r's products writes buffer p.
func (r *matVec) writes(p cudadrv.DevicePtr) bool {
	for _, o := range r.out[:r.outs] {
		if o.Y == p {
			return true
		}
	}
	return false
}

// gateUp is gateup_f16_nN: with g = x·wgᵀ and u = x·wuᵀ (x (n, k), n ≤
// ptx.MatVecMaxN; wg and wu FP16 (m, k)), hb[i, r] = silu(g)·u and
// hb2[i, r] = u, hb and hb2 (n, m). It comes only from fuse.
type gateUp struct {
	hb, hb2, x, wg, wu cudadrv.DevicePtr
	n, m, k            int
}

func (gateUp) kernel() string { return "gateup_f16" }
func (r gateUp) launch(l *launcher) error {
	return l.k.GateUp(l.s, r.hb, r.hb2, r.x, r.wg, r.wu, r.n, r.m, r.k)
}

// matVecQ is matvec_q*_nN: the first outs products of out, which share x
// (n, k) with n ≤ ptx.MatVecMaxN and one quantized type: out[j].Y (n,
// out[j].W.M) = x · out[j].Wᵀ + out[j].Bias. Entries past outs are zero.
// MatMul records one product; fuse merges up to three.
type matVecQ struct {
	x    cudadrv.DevicePtr
	n, k int
	out  [3]ptx.QuantOut
	outs int
}

func (r matVecQ) kernel() string { return "matvec_" + r.out[0].W.Type.Kernel() }
func (r matVecQ) launch(l *launcher) error {
	return l.k.MatVecQ(l.s, r.x, r.n, r.k, r.out[:r.outs]...)
}

// writes reports whether one of r's products writes buffer p.
func (r *matVecQ) writes(p cudadrv.DevicePtr) bool {
	for _, o := range r.out[:r.outs] {
		if o.Y == p {
			return true
		}
	}
	return false
}

// gateUpQ is gateup_q*_nN: gateUp with quantized wg and wu of one type. It
// comes only from fuse.
type gateUpQ struct {
	hb, hb2, x cudadrv.DevicePtr
	wg, wu     ptx.QuantWeight
	n          int
}

func (r gateUpQ) kernel() string { return "gateup_" + r.wg.Type.Kernel() }
func (r gateUpQ) launch(l *launcher) error {
	return l.k.GateUpQ(l.s, r.hb, r.hb2, r.x, &r.wg, &r.wu, r.n)
}

// dequantF16 is dequant_q*_f16: dst (w.M, w.K) FP16 = W, ahead of a gemm
// of a prompt.
type dequantF16 struct {
	dst cudadrv.DevicePtr
	w   ptx.QuantWeight
}

func (r dequantF16) kernel() string { return "dequant_" + r.w.Type.Kernel() + "_f16" }
func (r dequantF16) launch(l *launcher) error {
	return l.k.DequantF16(l.s, r.dst, &r.w)
}

// embedQ is embed_q*: dst[i] = W[tokens[i]] as FP32 for i < n, W a
// quantized (vocab, dim) table, dst (n, dim).
type embedQ struct {
	dst, tokens cudadrv.DevicePtr
	w           ptx.QuantWeight
	n           int
}

func (r embedQ) kernel() string { return "embed_" + r.w.Type.Kernel() }
func (r embedQ) launch(l *launcher) error {
	return l.k.EmbedQ(l.s, r.dst, &r.w, r.tokens, r.n)
}

// gemm is a product for more than ptx.MatVecMaxN rows: y (n, m) = x (n, k)
// · wᵀ, w FP16 (m, k). With cuBLAS it is convert_f32_f16 then GemmEx
// (ptx.BLAS, which rounds x to FP16), otherwise gemm_f16w_f32.
type gemm struct {
	y, x, w cudadrv.DevicePtr
	n, m, k int
}

func (gemm) kernel() string { return "gemm" }
func (r gemm) launch(l *launcher) error {
	if l.blas != nil {
		return l.blas.MatMulF16(l.s, r.y, r.x, r.w, r.n, r.m, r.k)
	}
	return l.k.MatMulF16(l.s, r.y, r.x, r.w, r.n, r.m, r.k)
}

// addBias is add_bias_f32: y[i] += bias for i < n, y (n, m), bias FP32
// (1, m).
type addBias struct {
	y, bias cudadrv.DevicePtr
	n, m    int
}

func (addBias) kernel() string             { return "add_bias_f32" }
func (r addBias) launch(l *launcher) error { return l.k.AddBias(l.s, r.y, r.bias, r.n, r.m) }

// swiGLU is swiglu_f32: dst[i] = silu(gate[i]) · up[i] for i < n, every
// buffer (n, cols); dst may be gate or up.
type swiGLU struct {
	dst, gate, up cudadrv.DevicePtr
	n, cols       int
}

func (swiGLU) kernel() string { return "swiglu_f32" }
func (r swiGLU) launch(l *launcher) error {
	return l.k.SwiGLU(l.s, r.dst, r.gate, r.up, r.n*r.cols)
}

// add is add_f32: dst[i] += x[i] for i < n, both (n, cols).
type add struct {
	dst, x  cudadrv.DevicePtr
	n, cols int
}

func (add) kernel() string             { return "add_f32" }
func (r add) launch(l *launcher) error { return l.k.Add(l.s, r.dst, r.x, r.n*r.cols) }

// gatherRows is gather_rows_f32: dst[j] = src[rows[j]] for j < n, dst and
// src (·, cols), rows int32 (n) in the step's row staging.
type gatherRows struct {
	dst, src, rows cudadrv.DevicePtr
	n, cols        int
}

func (gatherRows) kernel() string { return "gather_rows_f32" }
func (r gatherRows) launch(l *launcher) error {
	return l.k.GatherRows(l.s, r.dst, r.src, r.rows, r.n, r.cols)
}

// ropeTable is rope_table: cs[i, j] = (cos θ, sin θ), θ = (pos[i] ·
// freqScale) · invFreq[j] in FP64, for the n tokens of the batch: cs float2
// (n, half), pos the batch's int32 positions (n), invFreq FP64 (half).
// Every Rope of a batch with the same parameters reads it.
type ropeTable struct {
	cs, pos, invFreq cudadrv.DevicePtr
	n, half          int
	freqScale        float32
}

func (ropeTable) kernel() string { return "rope_table" }
func (r ropeTable) launch(l *launcher) error {
	return l.k.RopeTable(l.s, r.cs, r.pos, r.invFreq, r.n, r.half, r.freqScale)
}

// rope is rope_f32: in place, each head (headDim values) of the first n
// rows of x (n, cols) rotated by the angles of cs (n, ropeDim/2): pairs
// (2j, 2j+1), or (j, j+ropeDim/2) when neox; dims past ropeDim are left
// alone.
type rope struct {
	x, cs                     cudadrv.DevicePtr
	n, cols, headDim, ropeDim int
	neox                      bool
}

func (rope) kernel() string { return "rope_f32" }
func (r rope) launch(l *launcher) error {
	return l.k.Rope(l.s, r.x, r.cs, r.n, r.cols, r.headDim, r.ropeDim, r.neox)
}

// kvSuffix is the part of a KV kernel's name that names the cache types:
// "" for FP16 keys and values (kv_append, attn_decode), else
// "_KTYPE_VTYPE" (attn_decode_q8_0_q8_0).
func kvSuffix(c ptx.KVCache) string {
	if c.KType == ptx.CacheF16 && c.VType == ptx.CacheF16 {
		return ""
	}
	return "_" + c.KType.String() + "_" + c.VType.String()
}

// kvAppend is kv_append: row i of k (n, cache.KCols) and v (n,
// cache.VCols), converted to the cache's types, stored at (seq[i], pos[i])
// of one layer's cache, for i < n; seq and pos are the batch's int32 slots
// and positions.
type kvAppend struct {
	cache          ptx.KVCache
	k, v, seq, pos cudadrv.DevicePtr
	n              int
}

func (r kvAppend) kernel() string { return "kv_append" + kvSuffix(r.cache) }
func (r kvAppend) launch(l *launcher) error {
	return l.k.KVAppend(l.s, r.cache, r.k, r.v, r.seq, r.pos, r.n)
}

// ropeAppend is rope_append: rope of q (n, qcols) and of k (n,
// cache.KCols) in place with the angles of cs, then kvAppend of the
// rotated k and of v. It comes only from fuse.
type ropeAppend struct {
	cache                      ptx.KVCache
	q, k, v, cs, seq, pos      cudadrv.DevicePtr
	n, qcols, headDim, ropeDim int
	neox                       bool
}

func (r ropeAppend) kernel() string { return "rope_append" + kvSuffix(r.cache) }
func (r ropeAppend) launch(l *launcher) error {
	return l.k.RopeAppend(l.s, r.cache, r.q, r.k, r.v, r.cs, r.seq, r.pos, r.n, r.qcols, r.headDim, r.ropeDim, r.neox)
}

// attnDecode is attn_decode: split-KV grouped-query attention of q (n,
// Heads·HeadDim) over the cache of attn, each token over positions 0..pos
// of its slot, into dst (n, Heads·ValueDim). part holds the partial
// results (attn.PartialElems floats) and cnt the arrival counters
// (attn.Counters int32, zero between launches).
type attnDecode struct {
	attn                        ptx.Attention
	plan                        ptx.DecodePlan
	dst, q, part, cnt, seq, pos cudadrv.DevicePtr
	n                           int
}

func (r attnDecode) kernel() string { return "attn_decode" + kvSuffix(r.attn.Cache) }
func (r attnDecode) launch(l *launcher) error {
	return l.k.AttnDecode(l.s, &r.attn, r.plan, r.dst, r.part, r.cnt, r.q, r.seq, r.pos, r.n)
}

// attnPrefill is attn_prefill_hD: the same attention as attnDecode by
// tiles of query rows, for long batches whose head dims it supports
// (attn.PrefillSupported).
type attnPrefill struct {
	attn             ptx.Attention
	dst, q, seq, pos cudadrv.DevicePtr
	n                int
}

func (r attnPrefill) kernel() string { return "attn_prefill" + kvSuffix(r.attn.Cache) }
func (r attnPrefill) launch(l *launcher) error {
	return l.k.AttnPrefill(l.s, &r.attn, r.dst, r.q, r.seq, r.pos, r.n)
}

// topK is topk_pass, one launch per pass (one when cols ≤ 2048): the k
// largest values of each of the rows rows of src (rows, cols), in
// descending order, ties toward the lower column, into vals FP32 (rows, k)
// and ids int32 (rows, k); scratch holds ptx.TopKScratch(rows, cols, k)
// bytes (0 when that is 0).
type topK struct {
	vals, ids, src, scratch cudadrv.DevicePtr
	rows, cols, k           int
}

func (topK) kernel() string { return "topk_pass" }
func (r topK) launch(l *launcher) error {
	return l.k.TopK(l.s, r.vals, r.ids, r.src, r.scratch, r.rows, r.cols, r.k)
}

// fault is swiglu_f32 over one element with dst an address that is never
// mapped: the kernel that InjectFault adds to a step. gate and up are src,
// a live buffer, so that the fault is the write.
type fault struct {
	dst, src cudadrv.DevicePtr
}

// faultAddr is in the first page of the address space, which is never
// mapped on the device (nor on the host, for GPUs that can reach host
// memory).
const faultAddr cudadrv.DevicePtr = 0x100

func (fault) kernel() string { return "swiglu_f32 (injected fault)" }
func (r fault) launch(l *launcher) error {
	return l.k.SwiGLU(l.s, r.dst, r.src, r.src, 1)
}

// record appends r to the step being built, first fusing it with the
// records before it where fuse finds one kernel for them all (unless
// Options.NoFusion).
func record[T rec](b *Backend, r T) {
	if !b.opts.NoFusion && b.st.fuse(r) {
		return
	}
	put(&b.st, r)
}

// fuse records r together with the last records of the step as one
// kernel, and reports whether it did. Each case is a sequence of unfused
// records that the forward pass produces, the fused record that replaces
// it, and the condition under which the fused kernel is exact: it reads
// the same inputs and leaves every buffer as the sequence does, each
// element computed by the same formula (a dot product may be summed in
// another order). Anything else is recorded as it comes. TestDecodeKernels
// pins the fused kernels of a decode step of each architecture, so a
// change here or in the order of the forward pass that loses one fails.
func (st *step) fuse(r op) bool {
	ops := st.ops
	if len(ops) == 0 {
		return false
	}
	last := ops[len(ops)-1]
	switch r := r.(type) {
	case rmsNorm:
		// add{dst: x, x: d}, rmsNorm{dst, x, w} → addRMSNorm{x, d, dst, w}:
		// a residual add and the next norm (between layers, and within a
		// layer after attention). Exact when the norm reads the buffer just
		// added to, over the same rows and width: add_rmsnorm_f32 adds and
		// normalizes a row in one block, each thread writing an element
		// only after it has read the inputs of that element, so dst may be
		// d or x.
		a, ok := last.(add)
		if !ok || a.dst != r.x || a.n != r.n || a.cols != r.cols {
			return false
		}
		replace(st, 1, addRMSNorm{x: a.dst, d: a.x, dst: r.dst, w: r.w, n: r.n, cols: r.cols, eps: r.eps})
		return true

	case matVec:
		// matVec{x, out: A}, matVec{x, out: [B]} → matVec{x, out: A + [B]}:
		// products of one input (the Q, K and V projections; gate and up),
		// up to three, in one launch that reads x once. Exact when they
		// read the same x (n, k), no product writes x, and B's output is
		// not one the others write: then no product reads or writes what
		// another writes, and their order does not matter.
		m, ok := last.(matVec)
		b := r.out[0]
		if !ok || r.outs != 1 || m.outs == len(m.out) || m.x != r.x || m.n != r.n || m.k != r.k ||
			b.Y == r.x || m.writes(r.x) || m.writes(b.Y) {
			return false
		}
		m.out[m.outs] = b
		m.outs++
		replace(st, 1, m)
		return true

	case matVecQ:
		// The same merge for quantized products of one type and width
		// (matvec_q* takes up to three outputs; rows of each are computed
		// as they are alone).
		m, ok := last.(matVecQ)
		b := r.out[0]
		if !ok || r.outs != 1 || m.outs == len(m.out) || m.x != r.x || m.n != r.n || m.k != r.k ||
			m.out[0].W.Type != b.W.Type || b.Y == r.x || m.writes(r.x) || m.writes(b.Y) {
			return false
		}
		m.out[m.outs] = b
		m.outs++
		replace(st, 1, m)
		return true

	case swiGLU:
		if q, ok := last.(matVecQ); ok {
			// As below, for quantized gate and up of one type: gateup_q*.
			g, u := q.out[0], q.out[1]
			if q.outs != 2 || g.Bias != 0 || u.Bias != 0 || g.W.M != r.cols || u.W.M != r.cols || q.n != r.n ||
				r.gate != g.Y || r.up != u.Y || r.dst != g.Y {
				return false
			}
			replace(st, 1, gateUpQ{hb: g.Y, hb2: u.Y, x: q.x, wg: g.W, wu: u.W, n: q.n})
			return true
		}
		// matVec{x, out: [g = x·Wgᵀ, u = x·Wuᵀ]}, swiGLU{dst: g, gate: g,
		// up: u} → gateUp{hb: g, hb2: u, x, Wg, Wu}: the feed-forward block's
		// gate and up products with SwiGLU applied on the way out. Exact
		// when the two products have no bias and the rows and width of the
		// SwiGLU, and it writes silu(g)·u over g: gateup_f16 leaves u in hb2
		// and silu(g)·u in hb, as the sequence does.
		m, ok := last.(matVec)
		g, u := m.out[0], m.out[1]
		if !ok || m.outs != 2 || g.Bias != 0 || u.Bias != 0 || g.M != r.cols || u.M != r.cols || m.n != r.n ||
			r.gate != g.Y || r.up != u.Y || r.dst != g.Y {
			return false
		}
		replace(st, 1, gateUp{hb: g.Y, hb2: u.Y, x: m.x, wg: g.W, wu: u.W, n: m.n, m: r.cols, k: m.k})
		return true

	case kvAppend:
		// rope{x: q}, rope{x: k} (either order), kvAppend{k, v} →
		// ropeAppend{q, k, v}: the rotation of the queries and keys of a
		// layer and the store of the keys and values in its cache. Exact
		// when both rotations use the same table and parameters over the
		// rows stored, one of them rotates the keys stored (rows of the
		// cache's width) and the other a third buffer: rope_append rotates
		// a token's q and k rows in one block, then, after a barrier, stores
		// the rotated k row and the v row.
		if len(ops) < 2 {
			return false
		}
		q, ok1 := ops[len(ops)-2].(rope)
		k, ok2 := last.(rope)
		if q.x == r.k {
			q, k = k, q
		}
		if !ok1 || !ok2 || k.x != r.k || k.cols != r.cache.KCols || q.x == r.k || q.x == r.v ||
			q.cs != k.cs || q.n != r.n || k.n != r.n || q.headDim != k.headDim || q.ropeDim != k.ropeDim || q.neox != k.neox {
			return false
		}
		replace(st, 2, ropeAppend{cache: r.cache, q: q.x, k: r.k, v: r.v, cs: q.cs, seq: r.seq, pos: r.pos,
			n: r.n, qcols: q.cols, headDim: q.headDim, ropeDim: q.ropeDim, neox: q.neox})
		return true
	}
	return false
}

// replace puts r in place of the last n records of the step.
func replace[T rec](st *step, n int, r T) {
	st.ops = st.ops[:len(st.ops)-n]
	put(st, r)
}

// boxesPerIndex is how many records put remembers per index of a step:
// enough for every record that passes through one index of a decode step
// as it is fused (one, two then three products), for two step shapes
// that alternate.
const boxesPerIndex = 8

// boxes holds records put stored at one index of a step, round robin in
// the order they were stored.
type boxes struct {
	ops  [boxesPerIndex]op
	next int // where the next new record goes
	hit  int // the box put used last
}

// put appends r to the step.
//
// Storing a record in an op puts a copy of it on the heap. A decode loop
// records the same steps again and again (which is what lets a captured
// graph replay them), so for each index of the step st.boxes keeps the last
// records stored there, and put reuses one that holds a record equal to r
// instead of allocating: recording a decode step seen before allocates
// nothing. The search starts at the box used last and goes on in storage
// order, because a step passes the same records through an index in the
// same order every time (a product, then two, then three fused), so the
// record wanted is nearly always the first or second one compared.
func put[T rec](st *step, r T) {
	i := len(st.ops)
	if i == len(st.boxes) {
		st.boxes = append(st.boxes, boxes{})
	}
	bx := &st.boxes[i]
	for j := range boxesPerIndex {
		k := (bx.hit + j) % boxesPerIndex
		if v, ok := bx.ops[k].(T); ok && v == r {
			bx.hit = k
			st.ops = append(st.ops, bx.ops[k])
			return
		}
	}
	o := op(r)
	bx.ops[bx.next], bx.hit = o, bx.next
	bx.next = (bx.next + 1) % boxesPerIndex
	st.ops = append(st.ops, o)
}
