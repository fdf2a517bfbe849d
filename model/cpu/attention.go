package cpu

import (
	"github.com/m40llm/m40llm/model"
)

// Attention stores k and v rows into the cache (converted to its types,
// see kvHalf), then computes causal grouped-query attention for every
// (token, KV head) of the batch: the Heads/KVHeads query heads that share
// a KV head are scored together, so each cached key and value row is read
// once per group (when there are fewer (token, KV head) pairs than
// threads, query heads are spread over the threads instead, each reading
// its KV head's rows; the results are the same bits). A cache of another
// type than f32 is dequantized, head by head, into per-worker scratch
// before scoring, so the arithmetic is FP32 for every type.
func (b *Backend) Attention(dst, q, k, v model.Buf, layer, n int, p *model.AttnParams) {
	d, qs, ks, vs := dst.(*buf), q.(*buf), k.(*buf), v.(*buf)
	kv := b.kv
	checkCols(ks.cols, kv.KDim, "Attention k")
	checkCols(vs.cols, kv.VDim, "Attention v")
	checkCols(qs.cols, p.Heads*p.HeadDim, "Attention q")
	checkCols(d.cols, p.Heads*p.ValueDim, "Attention out")
	base := func(seq int32) int { return (layer*kv.Slots + int(seq)) * kv.Ctx }
	for i := range n {
		at := base(b.batch.Slot[i]) + int(b.batch.Pos[i])
		b.kcache.store(at, ks.row(i))
		b.vcache.store(at, vs.row(i))
	}

	group := p.Heads / p.KVHeads
	maxPos := 0
	for _, pos := range b.batch.Pos[:n] {
		maxPos = max(maxPos, int(pos)+1)
	}
	total := n * p.KVHeads
	work := maxPos * group * (p.HeadDim + p.ValueDim)
	grain := max(1, (1<<15)/max(1, work))
	// Per chunk: group·maxPos scores, then room for the head's keys and
	// values as float32 when the cache holds another type.
	need := group * maxPos
	kOff, vOff := need, need
	if kv.TypeK != model.CacheF32 {
		vOff += maxPos * p.HeadDim
	}
	if kv.TypeV != model.CacheF32 {
		need = vOff + maxPos*p.ValueDim
	} else {
		need = vOff
	}
	b.prepareScratch(need)
	if total < b.threads && group > 1 {
		// Too few (token, KV head) pairs for the threads (decode with
		// few KV heads): one item per query head, each reading its KV
		// head's rows itself. attendHead is the same per head, so the
		// bits are too.
		b.pool.run(n*p.Heads, max(1, grain/group), func(chunk, lo, hi int) {
			scratch := b.scratch[chunk]
			for t := lo; t < hi; t++ {
				i, h := t/p.Heads, t%p.Heads
				kvh := h / group
				start := base(b.batch.Slot[i])
				npos := int(b.batch.Pos[i]) + 1
				keys, kstride := b.kcache.rows(start, npos, kvh*p.HeadDim, p.HeadDim, scratch[kOff:vOff])
				vals, vstride := b.vcache.rows(start, npos, kvh*p.ValueDim, p.ValueDim, scratch[vOff:need])
				attendHead(d.row(i)[h*p.ValueDim:(h+1)*p.ValueDim], qs.row(i)[h*p.HeadDim:(h+1)*p.HeadDim],
					keys, vals, kstride, vstride, 0, 0, npos, p.Scale, scratch[:maxPos])
			}
		})
		return
	}
	b.pool.run(total, grain, func(chunk, lo, hi int) {
		scratch := b.scratch[chunk]
		for t := lo; t < hi; t++ {
			i, kvh := t/p.KVHeads, t%p.KVHeads
			start := base(b.batch.Slot[i])
			npos := int(b.batch.Pos[i]) + 1
			keys, kstride := b.kcache.rows(start, npos, kvh*p.HeadDim, p.HeadDim, scratch[kOff:vOff])
			vals, vstride := b.vcache.rows(start, npos, kvh*p.ValueDim, p.ValueDim, scratch[vOff:need])
			qrow, orow := qs.row(i), d.row(i)
			for g := range group {
				h := kvh*group + g
				attendHead(orow[h*p.ValueDim:(h+1)*p.ValueDim], qrow[h*p.HeadDim:(h+1)*p.HeadDim],
					keys, vals, kstride, vstride, 0, 0, npos, p.Scale, scratch[g*maxPos:(g+1)*maxPos])
			}
		}
	})
}

// attendHead computes one head's output: softmax over positions of
// scale·(q · key[pos]) weighting value[pos]. Keys and values are rows of
// kstride / vstride floats; the head's slice starts at koff / voff.
func attendHead(out, q, keys, vals []float32, kstride, vstride, koff, voff, npos int, scale float32, scratch []float32) {
	sc := scratch[:npos]
	scores(sc, q, keys[koff:], kstride, scale)
	maxS := sc[0]
	for _, s := range sc[1:] {
		maxS = max(maxS, s)
	}
	sum := expSub(sc, maxS)
	inv := 1 / sum
	for i := range sc {
		sc[i] *= inv
	}
	wsum(out, vals[voff:], vstride, sc)
}

// dotSmall is a dot product for short vectors, inlined.
func dotSmall(a, b []float32) float32 {
	b = b[:len(a)]
	var s float32
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// wsumGeneric is wsum in portable Go.
func wsumGeneric(out, vals []float32, stride int, w []float32) {
	clear(out)
	hd := len(out)
	for p, wp := range w {
		v := vals[p*stride : p*stride+hd]
		for j := range out {
			out[j] += wp * v[j]
		}
	}
}
