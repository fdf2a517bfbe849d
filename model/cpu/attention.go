package cpu

import (
	"math"

	"github.com/m40llm/m40llm/model"
)

// Attention stores k and v rows into the cache, then computes causal
// grouped-query attention for every (token, head) of the batch. Query head
// h reads KV head h / (Heads/KVHeads).
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
	total := n * p.Heads
	grain := max(1, (1<<14)/max(1, maxPos*(p.HeadDim+p.ValueDim)))
	b.prepareScratch(maxPos)
	b.pool.run(total, grain, func(chunk, lo, hi int) {
		scores := b.scratch[chunk][:maxPos]
		for t := lo; t < hi; t++ {
			i, h := t/p.Heads, t%p.Heads
			kvh := h / group
			start := base(b.batch.Seq[i])
			npos := int(b.batch.Pos[i]) + 1
			qh := qs.row(i)[h*p.HeadDim : (h+1)*p.HeadDim]
			sc := scores[:npos]
			maxS := float32(math.Inf(-1))
			for pos := range npos {
				kr := b.kcache[(start+pos)*kv.KDim+kvh*p.HeadDim:]
				s := dot(qh, kr[:p.HeadDim]) * p.Scale
				sc[pos] = s
				maxS = max(maxS, s)
			}
			var sum float32
			for pos, s := range sc {
				e := float32(math.Exp(float64(s - maxS)))
				sc[pos] = e
				sum += e
			}
			out := d.row(i)[h*p.ValueDim : (h+1)*p.ValueDim]
			clear(out)
			inv := 1 / sum
			for pos, e := range sc {
				wgt := e * inv
				vr := b.vcache[(start+pos)*kv.VDim+kvh*p.ValueDim:]
				vr = vr[:p.ValueDim]
				for j := range out {
					out[j] += wgt * vr[j]
				}
			}
		}
	})
}
