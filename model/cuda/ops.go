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

// NewBuf allocates an activation buffer (its contents are undefined). It
// fails on a non-positive shape, with the backend's failure once it is
// unusable, and with the driver's error (cudadrv.ErrOutOfMemory when the
// buffer does not fit); a failed NewBuf leaves the backend working.
func (b *Backend) NewBuf(rows, cols int) (model.Buf, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("cuda: invalid buffer shape %dx%d", rows, cols)
	}
	if b.err != nil {
		return nil, b.err
	}
	x := &buf{rows: rows, cols: cols}
	err := b.dev.do(func() error {
		var err error
		x.p, err = b.mem.alloc(4*int64(rows)*int64(cols), catActivations)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return x, nil
}

var _ model.CacheTyper = (*Backend)(nil)

// SupportsCacheType reports whether the kernels read and write caches of
// type t: f32, f16, q8_0 and q4_0, for keys and values alike and in any
// pair (model.CheckCacheType also asks that the head dimension be a
// multiple of the type's blocks).
func (b *Backend) SupportsCacheType(t model.CacheType) bool {
	_, ok := deviceCacheType(t)
	return ok
}

// deviceCacheType is the kernels' name of t.
func deviceCacheType(t model.CacheType) (ptx.CacheType, bool) {
	switch t {
	case model.CacheF16:
		return ptx.CacheF16, true
	case model.CacheF32:
		return ptx.CacheF32, true
	case model.CacheQ8_0:
		return ptx.CacheQ8_0, true
	case model.CacheQ4_0:
		return ptx.CacheQ4_0, true
	}
	return 0, false
}

// kvBytes returns the bytes of the key and value caches of cfg: rows of
// KDim and VDim elements in their types, for every (layer, slot, position).
func kvBytes(cfg model.KVConfig) (k, v int64) {
	per := int64(cfg.Layers) * int64(cfg.Slots) * int64(cfg.Ctx)
	return per * cfg.TypeK.RowBytes(cfg.KDim), per * cfg.TypeV.RowBytes(cfg.VDim)
}

// InitKV allocates the KV cache, [layer][slot][pos] rows of KDim keys and
// of VDim values in the config's types (ptx.KVCache gives the layouts),
// zeroed, in place of any cache allocated before. It first waits for the
// weight copies still in flight and then, after a Plan, warms up (see
// warmUp): model.Load calls it once the weights are loaded, before it
// allocates the activations. It fails on an invalid config (a cache type
// the kernels do not read, or rows that are not whole blocks of it), with
// the backend's failure once it is unusable, and with the driver's error
// (cudadrv.ErrOutOfMemory when the cache does not fit); the backend keeps
// working after an allocation failure, without a cache.
func (b *Backend) InitKV(cfg model.KVConfig) error {
	if b.err != nil {
		return b.err
	}
	per := int64(cfg.Layers) * int64(cfg.Slots) * int64(cfg.Ctx)
	if per <= 0 || cfg.KDim <= 0 || cfg.VDim <= 0 || cfg.Ctx > math.MaxInt32 {
		return fmt.Errorf("cuda: invalid KV cache config %+v", cfg)
	}
	kt, okK := deviceCacheType(cfg.TypeK)
	vt, okV := deviceCacheType(cfg.TypeV)
	if !okK || !okV {
		return fmt.Errorf("cuda: KV cache of %s keys and %s values: the cuda backend supports %s caches", cfg.TypeK, cfg.TypeV, model.CacheTypeNames())
	}
	if cfg.KDim%kt.BlockSize() != 0 || cfg.VDim%vt.BlockSize() != 0 {
		return fmt.Errorf("cuda: KV cache rows of %d keys and %d values are not whole blocks of %s/%s", cfg.KDim, cfg.VDim, cfg.TypeK, cfg.TypeV)
	}
	return b.dev.do(func() error {
		if err := b.dev.finishUploads(); err != nil {
			return err
		}
		if err := b.mem.free(b.kc); err != nil {
			return err
		}
		if err := b.mem.free(b.vc); err != nil {
			return err
		}
		b.kc, b.vc, b.kv = 0, 0, model.KVConfig{}
		var err error
		kb, vb := kvBytes(cfg)
		if b.kc, err = b.mem.alloc(kb, catKV); err != nil {
			return fmt.Errorf("%s: KV cache keys (%s): %w", b.Name(), gib(kb), err)
		}
		if b.vc, err = b.mem.alloc(vb, catKV); err != nil {
			return fmt.Errorf("%s: KV cache values (%s): %w", b.Name(), gib(vb), err)
		}
		b.kv, b.kvK, b.kvV = cfg, kt, vt
		if err := b.dev.zero(b.kc, int(kb)); err != nil {
			return err
		}
		if err := b.dev.zero(b.vc, int(vb)); err != nil {
			return err
		}
		return b.warmUp()
	})
}

var _ model.SlotCopier = (*Backend)(nil)

// CopySlot copies the keys and values of positions 0..n-1 of slot src
// over those of slot dst in every layer: it submits and waits for the
// recorded work (as Sync), then makes one device-to-device copy per layer
// for the keys and one for the values (each slot's positions are
// contiguous in a layer: [layer][slot][pos][dim] FP16), which the next
// step's work sees. It fails, copying nothing, for slots outside the
// cache, dst == src or n outside 0..Ctx; as Sync does; and with the
// driver's error of a copy, after which the backend is unusable.
func (b *Backend) CopySlot(dst, src, n int) error {
	kv := b.kv
	switch {
	case kv.Slots == 0:
		return fmt.Errorf("cuda: CopySlot without a KV cache")
	case dst < 0 || dst >= kv.Slots || src < 0 || src >= kv.Slots || dst == src:
		return fmt.Errorf("cuda: CopySlot from slot %d to slot %d of %d", src, dst, kv.Slots)
	case n < 0 || n > kv.Ctx:
		return fmt.Errorf("cuda: CopySlot of %d positions of %d", n, kv.Ctx)
	}
	if err := b.Sync(); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return b.failed(b.dev.do(func() error {
		for l := range kv.Layers {
			c := b.layerCache(l)
			for _, h := range [2]struct {
				base cudadrv.DevicePtr
				cols int
			}{{c.K, kv.KDim}, {c.V, kv.VDim}} {
				row := 2 * h.cols // bytes of one FP16 row
				if err := b.dev.copyDevice(h.base.Offset(dst*kv.Ctx*row), h.base.Offset(src*kv.Ctx*row), n*row); err != nil {
					return fmt.Errorf("KV cache copy of layer %d, slot %d to %d: %w", l, src, dst, err)
				}
			}
		}
		return nil
	}))
}

// layerCache addresses one layer of the KV cache.
func (b *Backend) layerCache(layer int) ptx.KVCache {
	kv := b.kv
	per := int64(kv.Slots) * int64(kv.Ctx) * int64(layer)
	return ptx.KVCache{
		K: b.kc.Offset(int(per * b.kvK.RowBytes(kv.KDim))), V: b.vc.Offset(int(per * b.kvV.RowBytes(kv.VDim))),
		Ctx: kv.Ctx, KCols: kv.KDim, VCols: kv.VDim, KType: b.kvK, VType: b.kvV,
	}
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

// ready reports whether ops may be recorded for n rows of the batch: not
// once the backend or the step has failed (the op is dropped; the failure
// is returned by the next Read, ReadTopK or Sync).
func (b *Backend) ready(n int) bool {
	if b.err != nil || b.st.err != nil {
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
	if !w.matrix() {
		panic("cuda: Embed: the table is not a matrix")
	}
	if !b.ready(n) {
		return
	}
	if w.q != nil {
		record(b, embedQ{dst: d.p, tokens: b.st.tokens(), w: *w.q, n: n})
		return
	}
	record(b, embed{dst: d.p, table: w.p, tokens: b.st.tokens(), n: n, dim: d.cols})
}

// RMSNorm records dst[i] = x[i] / sqrt(mean(x[i]²) + eps) * w.
func (b *Backend) RMSNorm(dst, x model.Buf, w model.Weight, n int, eps float32) {
	d, s, g := bufOf(dst), bufOf(x), weightOf(w)
	checkCols(d.cols, s.cols, "RMSNorm")
	checkCols(g.cols, s.cols, "RMSNorm weight")
	checkRows(d, n, "RMSNorm")
	checkRows(s, n, "RMSNorm")
	if b.ready(n) {
		record(b, rmsNorm{dst: d.p, x: s.p, w: g.p, n: n, cols: s.cols, eps: eps})
	}
}

// HeadRMSNorm records the in-place RMSNorm of each head of x.
func (b *Backend) HeadRMSNorm(x model.Buf, w model.Weight, n, headDim int, eps float32) {
	s, g := bufOf(x), weightOf(w)
	checkCols(g.cols, headDim, "HeadRMSNorm weight")
	checkRows(s, n, "HeadRMSNorm")
	if b.ready(n) {
		record(b, headRMSNorm{x: s.p, w: g.p, n: n, cols: s.cols, headDim: headDim, eps: eps})
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
	if !wt.matrix() {
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
	if wt.q != nil && n <= ptx.MatVecMaxN {
		r := matVecQ{x: s.p, n: n, k: wt.cols, outs: 1}
		r.out[0] = ptx.QuantOut{Y: d.p, W: *wt.q, Bias: bp}
		record(b, r)
		return
	}
	if n <= ptx.MatVecMaxN {
		r := matVec{x: s.p, n: n, k: wt.cols, outs: 1}
		r.out[0] = ptx.MatVecOut{Y: d.p, W: wt.p, Bias: bp, M: wt.rows}
		record(b, r)
		return
	}
	// cuBLAS's scratch must not be allocated while the step runs.
	elems := n * wt.cols
	if !b.doStep(func() error { return stepAlloc(b.dev.reserveBLAS(elems)) }) {
		return
	}
	wp := wt.p
	if wt.q != nil {
		// A prompt: the weight as FP16 in scratch, then the GEMM.
		var ok bool
		if wp, ok = b.scratchBuf(scrDequant, 2*wt.rows*wt.cols); !ok {
			return
		}
		record(b, dequantF16{dst: wp, w: *wt.q})
	}
	record(b, gemm{y: d.p, x: s.p, w: wp, n: n, m: wt.rows, k: wt.cols})
	if bp != 0 {
		record(b, addBias{y: d.p, bias: bp, n: n, m: wt.rows})
	}
}

// SwiGLU records dst[i] = silu(gate[i]) * up[i].
func (b *Backend) SwiGLU(dst, gate, up model.Buf, n int) {
	d, g, u := bufOf(dst), bufOf(gate), bufOf(up)
	checkCols(d.cols, g.cols, "SwiGLU")
	checkCols(d.cols, u.cols, "SwiGLU")
	checkRows(d, n, "SwiGLU")
	if b.ready(n) {
		record(b, swiGLU{dst: d.p, gate: g.p, up: u.p, n: n, cols: d.cols})
	}
}

// Add records dst[i] += x[i].
func (b *Backend) Add(dst, x model.Buf, n int) {
	d, s := bufOf(dst), bufOf(x)
	checkCols(d.cols, s.cols, "Add")
	checkRows(d, n, "Add")
	if b.ready(n) {
		record(b, add{dst: d.p, x: s.p, n: n, cols: d.cols})
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
	if len(rows) == 0 || b.err != nil || b.st.err != nil {
		return
	}
	p := b.st.stageRows(rows)
	if p == 0 {
		// The step's row staging is full: run what is recorded first. When
		// that fails, the rest of the step fails with it.
		if err := b.flush(nil); err != nil {
			if b.err == nil {
				b.st.err = err
			}
			return
		}
		p = b.st.stageRows(rows)
	}
	record(b, gatherRows{dst: d.p, src: s.p, rows: p, n: len(rows), cols: d.cols})
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
	record(b, rope{x: s.p, cs: cs, n: n, cols: s.cols, headDim: headDim, ropeDim: p.Dim, neox: p.Style == model.RopeNeoX})
}

// ropeTable records the batch's cos/sin table for p unless it is already
// recorded, and returns its address. Its allocations (the inverse
// frequencies, once per table; the table) fail the step when they do not
// fit.
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
		ok := b.doStep(func() error {
			var err error
			if inv, err = b.mem.alloc(8*int64(half), catScratch); err != nil {
				return stepAlloc(fmt.Errorf("RoPE inverse frequencies: %w", err))
			}
			return copyToDevice(b.dev, inv, f)
		})
		if !ok {
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
	record(b, ropeTable{cs: cs, pos: st.pos(), invFreq: inv, n: st.n, half: p.Dim / 2, freqScale: p.FreqScale})
	st.ropeValid, st.ropeKey, st.ropeScale = true, key, p.FreqScale
	return cs, true
}

// Attention records the KV-cache store of k and v and the attention of q.
// With up to 16 rows (decode) it is split-KV attention (attn_decode), which
// spreads long contexts over the whole GPU; with more rows the tiled
// prefill kernel, when it supports the head dims. After Rope(q) and
// Rope(k) the store fuses with both rotations (see fuse).
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
	record(b, kvAppend{cache: a.Cache, k: ks.p, v: vs.p, seq: st.seq(), pos: st.pos(), n: n})
	if n > ptx.MatVecMaxN && a.PrefillSupported() {
		record(b, attnPrefill{attn: a, dst: d.p, q: qs.p, seq: st.seq(), pos: st.pos(), n: n})
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
	record(b, attnDecode{attn: a, plan: plan, dst: d.p, q: qs.p, part: part, cnt: cnt, seq: st.seq(), pos: st.pos(), n: n})
}
