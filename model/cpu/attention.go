package cpu

import (
	"math"

	"github.com/m40llm/m40llm/model"
)

// Attention stores k and v rows into the cache, then computes causal
// grouped-query attention for every (token, KV head) of the batch: the
// Heads/KVHeads query heads that share a KV head are scored together, so
// each cached key and value row is read once per group.
func (b *Backend) Attention(dst, q, k, v model.Buf, layer, n int, p *model.AttnParams) {
	d, qs, ks, vs := dst.(*buf), q.(*buf), k.(*buf), v.(*buf)
	kv := b.kv
	checkCols(ks.cols, kv.KDim, "Attention k")
	checkCols(vs.cols, kv.VDim, "Attention v")
	checkCols(qs.cols, p.Heads*p.HeadDim, "Attention q")
	checkCols(d.cols, p.Heads*p.ValueDim, "Attention out")
	base := func(seq int32) int { return (layer*kv.Slots + int(seq)) * kv.Ctx }
	for i := range n {
		at := base(b.batch.Seq[i]) + int(b.batch.Pos[i])
		copy(b.kcache[at*kv.KDim:(at+1)*kv.KDim], ks.row(i))
		copy(b.vcache[at*kv.VDim:(at+1)*kv.VDim], vs.row(i))
	}

	group := p.Heads / p.KVHeads
	maxPos := 0
	for _, pos := range b.batch.Pos[:n] {
		maxPos = max(maxPos, int(pos)+1)
	}
	total := n * p.KVHeads
	work := maxPos * group * (p.HeadDim + p.ValueDim)
	grain := max(1, (1<<15)/max(1, work))
	b.prepareScratch(group * maxPos)
	b.pool.run(total, grain, func(chunk, lo, hi int) {
		scratch := b.scratch[chunk]
		for t := lo; t < hi; t++ {
			i, kvh := t/p.KVHeads, t%p.KVHeads
			start := base(b.batch.Seq[i])
			npos := int(b.batch.Pos[i]) + 1
			keys := b.kcache[start*kv.KDim : (start+npos)*kv.KDim]
			vals := b.vcache[start*kv.VDim : (start+npos)*kv.VDim]
			qrow, orow := qs.row(i), d.row(i)
			for g := range group {
				h := kvh*group + g
				attendHead(orow[h*p.ValueDim:(h+1)*p.ValueDim], qrow[h*p.HeadDim:(h+1)*p.HeadDim],
					keys, vals, kv.KDim, kv.VDim, kvh*p.HeadDim, kvh*p.ValueDim, npos, p.Scale, scratch[g*maxPos:(g+1)*maxPos])
			}
		}
	})
}

// attendHead computes one head's output: softmax over positions of
// scale·(q · key[pos]) weighting value[pos]. Keys and values are rows of
// kstride / vstride floats; the head's slice starts at koff / voff.
func attendHead(out, q, keys, vals []float32, kstride, vstride, koff, voff, npos int, scale float32, scores []float32) {
	hd := len(q)
	sc := scores[:npos]
	maxS := float32(math.Inf(-1))
	for pos := range npos {
		key := keys[pos*kstride+koff : pos*kstride+koff+hd]
		var s float32
		if hd >= 32 {
			s = dot(q, key)
		} else {
			for j, kj := range key {
				s += q[j] * kj
			}
		}
		s *= scale
		sc[pos] = s
		maxS = max(maxS, s)
	}
	var sum float32
	for pos, s := range sc {
		e := expf(s - maxS)
		sc[pos] = e
		sum += e
	}
	clear(out)
	inv := 1 / sum
	vd := len(out)
	for pos, e := range sc {
		axpy(out, vals[pos*vstride+voff:pos*vstride+voff+vd], e*inv)
	}
}

// axpy computes y += a·x.
func axpy(y, x []float32, a float32) {
	x = x[:len(y)]
	for j := range y {
		y[j] += a * x[j]
	}
}
