package cuda

import (
	"fmt"
	"math"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/ptx"
)

// buf is an activation buffer: rows × cols FP32, row-major.
type buf struct {
	rows, cols int
	p          cudadrv.DevicePtr
}

func (x *buf) Rows() int { return x.rows }
func (x *buf) Cols() int { return x.cols }

// NewBuf allocates an activation buffer (its contents are undefined).
func (b *Backend) NewBuf(rows, cols int) (model.Buf, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("cuda: invalid buffer shape %dx%d", rows, cols)
	}
	if b.err != nil {
		return nil, b.err
	}
	x := &buf{rows: rows, cols: cols}
	err := b.ctx.Do(func() error {
		var err error
		x.p, err = b.mem.alloc(4*int64(rows)*int64(cols), catActivations)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return x, nil
}

// InitKV allocates the FP16 KV cache, [layer][slot][pos][KDim] for keys
// and [layer][slot][pos][VDim] for values, zeroed. It also waits for the
// weight copies still in flight and, after a Plan, warms up (see warmUp):
// model.Load calls it last.
func (b *Backend) InitKV(cfg model.KVConfig) error {
	if b.err != nil {
		return b.err
	}
	per := int64(cfg.Layers) * int64(cfg.Slots) * int64(cfg.Ctx)
	if per <= 0 || cfg.KDim <= 0 || cfg.VDim <= 0 || cfg.Ctx > math.MaxInt32 {
		return fmt.Errorf("cuda: invalid KV cache config %+v", cfg)
	}
	return b.ctx.Do(func() error {
		if err := b.load.finish(); err != nil {
			return err
		}
		if err := b.mem.free(b.kc); err != nil {
			return err
		}
		if err := b.mem.free(b.vc); err != nil {
			return err
		}
		b.kc, b.vc = 0, 0
		var err error
		kb, vb := 2*per*int64(cfg.KDim), 2*per*int64(cfg.VDim)
		if b.kc, err = b.mem.alloc(kb, catKV); err != nil {
			return fmt.Errorf("%s: KV cache keys (%s): %w", b.Name(), gib(kb), err)
		}
		if b.vc, err = b.mem.alloc(vb, catKV); err != nil {
			return fmt.Errorf("%s: KV cache values (%s): %w", b.Name(), gib(vb), err)
		}
		b.kv = cfg
		if err := cudadrv.MemsetD8(b.kc, 0, int(kb)); err != nil {
			return err
		}
		if err := cudadrv.MemsetD8(b.vc, 0, int(vb)); err != nil {
			return err
		}
		return b.warmUp()
	})
}

// layerCache addresses one layer of the KV cache.
func (b *Backend) layerCache(layer int) ptx.KVCache {
	kv := b.kv
	per := kv.Slots * kv.Ctx
	return ptx.KVCache{
		K: b.kc.Offset(2 * layer * per * kv.KDim), V: b.vc.Offset(2 * layer * per * kv.VDim),
		Ctx: kv.Ctx, KCols: kv.KDim, VCols: kv.VDim,
	}
}

// opKind names the kernel an op record runs.
type opKind uint8

const (
	opEmbed       opKind = iota + 1 // a = dst, b = table; i0 = dim
	opRMSNorm                       // a = dst, b = x, c = w; i0 = cols
	opAddRMSNorm                    // a = x, b = d, c = dst, d = w; i0 = cols
	opHeadRMSNorm                   // a = x, b = w; i0 = cols, i1 = headDim
	opMatVec                        // b = x; mv; i0 = k
	opGateUp                        // a = hb, b = hb2, c = x, d = wg, e = wu; i0 = m, i1 = k
	opGEMM                          // a = y, b = x, c = w; i0 = m, i1 = k
	opAddBias                       // a = y, b = bias; i0 = m
	opSwiGLU                        // a = dst, b = gate, c = up; i0 = cols
	opAdd                           // a = dst, b = x; i0 = cols
	opGather                        // a = dst, b = src, c = rows; i0 = cols
	opRopeTable                     // a = cs, b = invFreq; i0 = half; f = freqScale
	opRope                          // a = x, b = cs; i0 = cols, i1 = headDim, i2 = ropeDim; neox
	opKVAppend                      // a = k, b = v; attn.Cache
	opRopeAppend                    // a = q, b = k, c = v, d = cs; i0 = qcols, i1 = headDim, i2 = ropeDim; neox; attn.Cache
	opAttnDecode                    // a = dst, b = q, c = partials, d = counters; attn, plan
	opAttnPrefill                   // a = dst, b = q; attn
	opTopK                          // a = vals, b = ids, c = src, d = scratch; i0 = cols, i1 = k
)

// op is one recorded kernel launch: its kind, the rows it acts on and its
// operands (their meaning per kind is listed with the kinds). Ops are plain
// values, compared with == to decide whether a captured graph replays a
// step. The batch's device buffers (tokens, positions, slots) are operands
// too, so a step recorded against other buffers never matches.
type op struct {
	kind          opKind
	n             int
	a, b, c, d, e cudadrv.DevicePtr
	i0, i1, i2    int
	f             float32
	neox          bool
	tokens        cudadrv.DevicePtr
	pos, seq      cudadrv.DevicePtr
	mv            [3]ptx.MatVecOut
	nmv           int
	attn          ptx.Attention
	plan          ptx.DecodePlan
}

// record appends o to the step, first fusing it with the op before when
// one kernel can do the work of both:
//
//   - Add(x, d) then RMSNorm(dst, x): add_rmsnorm_f32 (x += d; dst =
//     rmsnorm(x)), the residual add and the next norm in one pass;
//   - up to three MatMuls of the same input (n ≤ 16): one matvec launch
//     (the Q, K and V projections, the gate and up projections);
//   - those gate and up products then SwiGLU into the gate buffer:
//     gateup_f16, SwiGLU applied on the way out;
//   - Rope(q), Rope(k) then Attention: rope_append rotates both and stores
//     K and V in the cache (see Attention).
//
// Each fused kernel leaves every buffer as the unfused sequence does.
func (b *Backend) record(o op) {
	ops := b.st.ops
	if !b.opts.NoFusion && len(ops) > 0 {
		last := &ops[len(ops)-1]
		switch {
		case o.kind == opRMSNorm && last.kind == opAdd && last.a == o.b && last.n == o.n && last.i0 == o.i0:
			*last = op{kind: opAddRMSNorm, n: o.n, a: last.a, b: last.b, c: o.a, d: o.c, i0: o.i0, f: o.f}
			return
		case o.kind == opMatVec && last.kind == opMatVec && last.nmv < 3 && last.b == o.b && last.n == o.n && last.i0 == o.i0 &&
			!last.writes(o.b) && !last.writes(o.mv[0].Y) && o.mv[0].Y != o.b:
			last.mv[last.nmv] = o.mv[0]
			last.nmv++
			return
		case o.kind == opSwiGLU && last.kind == opMatVec && last.nmv == 2 && o.a == o.b &&
			last.mv[0].Y == o.b && last.mv[1].Y == o.c && last.mv[0].Bias == 0 && last.mv[1].Bias == 0 &&
			last.mv[0].M == o.i0 && last.mv[1].M == o.i0 && last.n == o.n:
			*last = op{kind: opGateUp, n: o.n, a: o.b, b: o.c, c: last.b, d: last.mv[0].W, e: last.mv[1].W, i0: o.i0, i1: last.i0}
			return
		}
	}
	b.st.ops = append(ops, o)
}

// writes reports whether a matvec op writes buffer p.
func (o *op) writes(p cudadrv.DevicePtr) bool {
	for _, m := range o.mv[:o.nmv] {
		if m.Y == p {
			return true
		}
	}
	return false
}

func bufOf(x model.Buf) *buf          { return x.(*buf) }
func weightOf(w model.Weight) *weight { return w.(*weight) }

func checkCols(a, b int, what string) {
	if a != b {
		panic(fmt.Sprintf("cuda: %s: width mismatch %d != %d", what, a, b))
	}
}

func checkRows(x *buf, n int, what string) {
	if n <= 0 || n > x.rows {
		panic(fmt.Sprintf("cuda: %s: %d rows of a %d-row buffer", what, n, x.rows))
	}
}

// ready reports whether ops may be recorded for n rows of the batch.
func (b *Backend) ready(n int) bool {
	if b.err != nil {
		return false
	}
	if n > b.st.n {
		panic(fmt.Sprintf("cuda: op on %d rows of a %d-token batch", n, b.st.n))
	}
	return true
}

// Embed records dst[i] = table[tokens[i]] for the batch's tokens.
func (b *Backend) Embed(dst model.Buf, table model.Weight, n int) {
	d, w := bufOf(dst), weightOf(table)
	checkCols(d.cols, w.cols, "Embed")
	checkRows(d, n, "Embed")
	if !w.f16 {
		panic("cuda: Embed: the table is not a matrix")
	}
	if b.ready(n) {
		b.record(op{kind: opEmbed, n: n, a: d.p, b: w.p, i0: d.cols, tokens: b.st.tokens()})
	}
}

// RMSNorm records dst[i] = x[i] / sqrt(mean(x[i]²) + eps) * w.
func (b *Backend) RMSNorm(dst, x model.Buf, w model.Weight, n int, eps float32) {
	d, s, g := bufOf(dst), bufOf(x), weightOf(w)
	checkCols(d.cols, s.cols, "RMSNorm")
	checkCols(g.cols, s.cols, "RMSNorm weight")
	checkRows(d, n, "RMSNorm")
	checkRows(s, n, "RMSNorm")
	if b.ready(n) {
		b.record(op{kind: opRMSNorm, n: n, a: d.p, b: s.p, c: g.p, i0: s.cols, f: eps})
	}
}

// HeadRMSNorm records the in-place RMSNorm of each head of x.
func (b *Backend) HeadRMSNorm(x model.Buf, w model.Weight, n, headDim int, eps float32) {
	s, g := bufOf(x), weightOf(w)
	checkCols(g.cols, headDim, "HeadRMSNorm weight")
	checkRows(s, n, "HeadRMSNorm")
	if b.ready(n) {
		b.record(op{kind: opHeadRMSNorm, n: n, a: s.p, b: g.p, i0: s.cols, i1: headDim, f: eps})
	}
}

// MatMul records dst[i] = W @ x[i] (+ bias): the matvec kernel for up to
// 16 rows (every weight byte read once for all rows), else a GEMM (cuBLAS
// when enabled) and a bias add.
func (b *Backend) MatMul(dst, x model.Buf, w model.Weight, bias model.Weight, n int) {
	d, s, wt := bufOf(dst), bufOf(x), weightOf(w)
	checkCols(s.cols, wt.cols, "MatMul input")
	checkCols(d.cols, wt.rows, "MatMul output")
	checkRows(d, n, "MatMul")
	checkRows(s, n, "MatMul")
	if !wt.f16 {
		panic("cuda: MatMul: the weight is not a matrix")
	}
	var bp cudadrv.DevicePtr
	if bias != nil {
		bv := weightOf(bias)
		checkCols(bv.cols, wt.rows, "MatMul bias")
		bp = bv.p
	}
	if !b.ready(n) {
		return
	}
	if n <= ptx.MatVecMaxN {
		o := op{kind: opMatVec, n: n, b: s.p, i0: wt.cols, nmv: 1}
		o.mv[0] = ptx.MatVecOut{Y: d.p, W: wt.p, Bias: bp, M: wt.rows}
		b.record(o)
		return
	}
	if b.blas != nil {
		b.do(func() error { return b.blas.Reserve(n * wt.cols) })
	}
	b.record(op{kind: opGEMM, n: n, a: d.p, b: s.p, c: wt.p, i0: wt.rows, i1: wt.cols})
	if bp != 0 {
		b.record(op{kind: opAddBias, n: n, a: d.p, b: bp, i0: wt.rows})
	}
}

// SwiGLU records dst[i] = silu(gate[i]) * up[i].
func (b *Backend) SwiGLU(dst, gate, up model.Buf, n int) {
	d, g, u := bufOf(dst), bufOf(gate), bufOf(up)
	checkCols(d.cols, g.cols, "SwiGLU")
	checkCols(d.cols, u.cols, "SwiGLU")
	checkRows(d, n, "SwiGLU")
	if b.ready(n) {
		b.record(op{kind: opSwiGLU, n: n, a: d.p, b: g.p, c: u.p, i0: d.cols})
	}
}

// Add records dst[i] += x[i].
func (b *Backend) Add(dst, x model.Buf, n int) {
	d, s := bufOf(dst), bufOf(x)
	checkCols(d.cols, s.cols, "Add")
	checkRows(d, n, "Add")
	if b.ready(n) {
		b.record(op{kind: opAdd, n: n, a: d.p, b: s.p, i0: d.cols})
	}
}

// GatherRows records dst[j] = src[rows[j]]; the row indices travel with
// the batch.
func (b *Backend) GatherRows(dst, src model.Buf, rows []int32) {
	d, s := bufOf(dst), bufOf(src)
	checkCols(d.cols, s.cols, "GatherRows")
	checkRows(d, len(rows), "GatherRows")
	for _, r := range rows {
		if r < 0 || int(r) >= s.rows {
			panic(fmt.Sprintf("cuda: GatherRows: row %d of a %d-row buffer", r, s.rows))
		}
	}
	if len(rows) == 0 || b.err != nil {
		return
	}
	p := b.st.stageRows(rows)
	if p == 0 {
		// The step's row staging is full: run what is recorded first.
		if err := b.flush(nil, nil); err != nil {
			return
		}
		p = b.st.stageRows(rows)
	}
	b.record(op{kind: opGather, n: len(rows), a: d.p, b: s.p, c: p, i0: d.cols})
}

// ropeKey identifies an inverse-frequency table.
type ropeKey struct {
	dim     int
	base    float32
	factors cudadrv.DevicePtr
}

// Rope records the in-place rotation of each head of x by its token's
// position. The first Rope of a batch also records the cos/sin table that
// every layer shares.
func (b *Backend) Rope(x model.Buf, n, headDim int, p *model.RopeParams) {
	s := bufOf(x)
	checkRows(s, n, "Rope")
	if p.Dim <= 0 || p.Dim%2 != 0 || p.Dim > headDim || s.cols%headDim != 0 {
		panic(fmt.Sprintf("cuda: Rope: rotating %d of %d dims of rows of %d", p.Dim, headDim, s.cols))
	}
	if !b.ready(n) {
		return
	}
	cs, ok := b.ropeTable(p)
	if !ok {
		return
	}
	b.record(op{kind: opRope, n: n, a: s.p, b: cs, i0: s.cols, i1: headDim, i2: p.Dim, neox: p.Style == model.RopeNeoX})
}

// ropeTable records the batch's cos/sin table for p unless it is already
// recorded, and returns its address.
func (b *Backend) ropeTable(p *model.RopeParams) (cudadrv.DevicePtr, bool) {
	key := ropeKey{dim: p.Dim, base: p.Base}
	var factors []float32
	if p.Factors != nil {
		fw := weightOf(p.Factors)
		checkCols(fw.cols, p.Dim/2, "Rope factors")
		key.factors, factors = fw.p, fw.host
	}
	st := &b.st
	if st.ropeValid && st.ropeKey == key && st.ropeScale == p.FreqScale {
		return st.scratch[scrRopeCS].p, true
	}
	inv, ok := st.invFreq[key]
	if !ok {
		// Inverse frequencies in float64, exactly as the CPU backend.
		half := p.Dim / 2
		f := make([]float64, half)
		for j := range f {
			f[j] = math.Pow(float64(p.Base), -2*float64(j)/float64(p.Dim))
			if factors != nil {
				f[j] /= float64(factors[j])
			}
		}
		b.do(func() error {
			var err error
			if inv, err = b.mem.alloc(8*int64(half), catScratch); err != nil {
				return err
			}
			return cudadrv.CopyToDevice(inv, f)
		})
		if b.err != nil {
			return 0, false
		}
		if st.invFreq == nil {
			st.invFreq = map[ropeKey]cudadrv.DevicePtr{}
		}
		st.invFreq[key] = inv
	}
	cs, ok := b.scratchBuf(scrRopeCS, 8*st.cap*p.Dim/2)
	if !ok {
		return 0, false
	}
	b.record(op{kind: opRopeTable, n: st.n, a: cs, b: inv, i0: p.Dim / 2, f: p.FreqScale, pos: st.pos()})
	st.ropeValid, st.ropeKey, st.ropeScale = true, key, p.FreqScale
	return cs, true
}

// Attention records the KV-cache store of k and v and the attention of q.
// With up to 16 rows (decode) it is split-KV attention (attn_decode), which
// spreads long contexts over the whole GPU; with more
// rows the tiled prefill kernel, when it supports the head dims. When the
// two ops before are Rope(q) and Rope(k) they become one rope_append with
// the store.
func (b *Backend) Attention(dst, q, k, v model.Buf, layer, n int, p *model.AttnParams) {
	d, qs, ks, vs := bufOf(dst), bufOf(q), bufOf(k), bufOf(v)
	kv := b.kv
	checkCols(ks.cols, kv.KDim, "Attention k")
	checkCols(vs.cols, kv.VDim, "Attention v")
	checkCols(qs.cols, p.Heads*p.HeadDim, "Attention q")
	checkCols(d.cols, p.Heads*p.ValueDim, "Attention out")
	checkCols(kv.KDim, p.KVHeads*p.HeadDim, "Attention KV heads")
	if layer < 0 || layer >= kv.Layers {
		panic(fmt.Sprintf("cuda: Attention: layer %d of %d", layer, kv.Layers))
	}
	if !b.ready(n) {
		return
	}
	st := &b.st
	a := ptx.Attention{Cache: b.layerCache(layer), Heads: p.Heads, KVHeads: p.KVHeads,
		HeadDim: p.HeadDim, ValueDim: p.ValueDim, Scale: p.Scale}

	fused := false
	if ops := st.ops; !b.opts.NoFusion && len(ops) >= 2 {
		r1, r2 := ops[len(ops)-2], ops[len(ops)-1]
		if r1.kind == opRope && r2.kind == opRope && r1.n == n && r2.n == n && r1.b == r2.b && r1.i1 == r2.i1 &&
			r1.i2 == r2.i2 && r1.neox == r2.neox && r1.i1 == p.HeadDim &&
			(r1.a == qs.p && r2.a == ks.p || r1.a == ks.p && r2.a == qs.p) {
			st.ops = ops[:len(ops)-2]
			b.record(op{kind: opRopeAppend, n: n, a: qs.p, b: ks.p, c: vs.p, d: r1.b,
				i0: qs.cols, i1: r1.i1, i2: r1.i2, neox: r1.neox, attn: a, pos: st.pos(), seq: st.seq()})
			fused = true
		}
	}
	if !fused {
		b.record(op{kind: opKVAppend, n: n, a: ks.p, b: vs.p, attn: a, pos: st.pos(), seq: st.seq()})
	}
	if n > ptx.MatVecMaxN && a.PrefillSupported() {
		b.record(op{kind: opAttnPrefill, n: n, a: d.p, b: qs.p, attn: a, pos: st.pos(), seq: st.seq()})
		return
	}
	plan := a.PlanDecode(n, b.info.SMs)
	part, ok := b.scratchBuf(scrPartials, 4*a.PartialElems(n, plan))
	if !ok {
		return
	}
	cnt, ok := b.scratchBuf(scrCounters, 4*a.Counters(n, plan))
	if !ok {
		return
	}
	b.record(op{kind: opAttnDecode, n: n, a: d.p, b: qs.p, c: part, d: cnt, attn: a, plan: plan, pos: st.pos(), seq: st.seq()})
}

// do runs fn on the context's thread, recording its error.
func (b *Backend) do(fn func() error) {
	if b.err == nil {
		b.fail(b.ctx.Do(fn))
	}
}
