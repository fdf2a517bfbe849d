package cpu

import "github.com/m40llm/m40llm/model"

// matmulGrain is the least work (multiply-adds) worth handing to a worker.
const matmulGrain = 1 << 15

// quantGrain is the least number of activation elements worth handing to a
// worker for quantization (a variable for the tests).
var quantGrain = 1 << 12

// MatMul computes dst[i] = W @ x[i] (+ bias) for the first n rows: W is
// (d, k) in its stored type, x rows hold k floats, dst rows d floats.
// Rows of W are split across workers. Weights with an integer kernel
// (hasQDot) take the activation rows quantized to 8 bits once per call
// (see qdot.go) and every weight row is dotted with all n of them while it
// is in cache. For a few rows (decode), F16 weights go through a fused
// kernel that never writes the converted row; otherwise each weight row is
// dequantized once and used for all n activation rows, four at a time.
func (b *Backend) MatMul(dst, x model.Buf, w model.Weight, bias model.Weight, n int) {
	d, s, wt := dst.(*buf), x.(*buf), w.(*weight)
	checkCols(s.cols, wt.cols, "MatMul input")
	checkCols(d.cols, wt.rows, "MatMul output")
	var bv []float32
	if bias != nil {
		bv = bias.(*weight).vec()
		checkCols(len(bv), wt.rows, "MatMul bias")
	}
	if wt.raw != nil && hasQDot(wt.typ) && !b.floatProducts {
		b.matMulQ(d, s, wt, bv, n)
		return
	}
	k := wt.cols
	grain := max(1, matmulGrain/(k*n))
	b.prepareScratch(k)
	fused := n < 4 && wt.raw != nil && hasFusedDot(wt.typ)
	b.pool.run(wt.rows, grain, func(chunk, lo, hi int) {
		scratch := b.scratch[chunk][:k]
		for r := lo; r < hi; r++ {
			var add float32
			if bv != nil {
				add = bv[r]
			}
			if fused {
				raw := wt.raw[r*wt.rowBytes : (r+1)*wt.rowBytes]
				for i := range n {
					d.data[i*d.cols+r] = fusedDot(wt.typ, raw, s.row(i)) + add
				}
				continue
			}
			row := wt.row(r, scratch)
			i := 0
			for ; i+4 <= n; i += 4 {
				o0, o1, o2, o3 := dot4(row, s.row(i), s.row(i+1), s.row(i+2), s.row(i+3))
				d.data[i*d.cols+r] = o0 + add
				d.data[(i+1)*d.cols+r] = o1 + add
				d.data[(i+2)*d.cols+r] = o2 + add
				d.data[(i+3)*d.cols+r] = o3 + add
			}
			for ; i < n; i++ {
				d.data[i*d.cols+r] = dot(row, s.row(i)) + add
			}
		}
	})
}

// matMulQ is MatMul for weights with an integer kernel. The quantized
// activations (b.qx) are written before the row loop starts and only read
// in it; each worker writes its own range of output columns.
func (b *Backend) matMulQ(d, s *buf, wt *weight, bv []float32, n int) {
	k := wt.cols
	q := &b.qx
	q.reset(n, k)
	// Blocks are quantized independently, so a row can be split among
	// workers (decode has one row) with the same bits.
	nb := k / qblock
	b.pool.run(n*nb, max(1, quantGrain/qblock), func(_, lo, hi int) {
		for blk := lo; blk < hi; {
			i, b0 := blk/nb, blk%nb
			b1 := min(nb, b0+hi-blk)
			r := q.row(i)
			quantizeRow(qvec{r.qs[b0*qblock : b1*qblock], r.d[b0:b1], r.s[b0:b1]}, s.row(i)[b0*qblock:b1*qblock])
			blk += b1 - b0
		}
	})
	grain := max(1, matmulGrain/(k*n))
	b.pool.run(wt.rows, grain, func(_, lo, hi int) {
		// Tokens past the last four: one kernel call per token for the
		// range where there is a multi-row kernel (decode, small
		// batches), else the one-row kernel. Either gives the same bits.
		tail := n / 4 * 4
		for i := tail; i < n; i++ {
			out := d.data[i*d.cols+lo : i*d.cols+hi]
			if !qdotRows(wt.typ, wt.raw[lo*wt.rowBytes:hi*wt.rowBytes], wt.rowBytes, q.row(i), out) {
				break
			}
			if bv != nil {
				for j := range out {
					out[j] += bv[lo+j]
				}
			}
			tail++
		}
		// Groups of four tokens: one kernel call for the range where
		// there is a multi-row four-token kernel.
		head := 0
		if n >= 4 && qdot4Rows(wt.typ, wt.raw[lo*wt.rowBytes:hi*wt.rowBytes], wt.rowBytes, hi-lo, q, n/4, d.data[lo:], d.cols) {
			head = n / 4 * 4
			if bv != nil {
				for i := range head {
					out := d.data[i*d.cols+lo : i*d.cols+hi]
					for j := range out {
						out[j] += bv[lo+j]
					}
				}
			}
		}
		for r := lo; r < hi; r++ {
			var add float32
			if bv != nil {
				add = bv[r]
			}
			raw := wt.raw[r*wt.rowBytes : (r+1)*wt.rowBytes]
			i := head
			for ; i+4 <= n; i += 4 {
				o := qdot4(wt.typ, raw, q, i)
				for j, v := range o {
					d.data[(i+j)*d.cols+r] = v + add
				}
			}
			for i = tail; i < n; i++ {
				d.data[i*d.cols+r] = qdot(wt.typ, raw, q.row(i)) + add
			}
		}
	})
}

// prepareScratch makes sure every worker chunk has scratch of n floats
// before a parallel loop starts (the loop must not grow shared slices).
func (b *Backend) prepareScratch(n int) {
	for c := range b.threads {
		b.scratchFor(c, n)
	}
}

// dotGeneric returns Σ a[i]·b[i] in portable Go.
func dotGeneric(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		s0 += a[i]*b[i] + a[i+4]*b[i+4]
		s1 += a[i+1]*b[i+1] + a[i+5]*b[i+5]
		s2 += a[i+2]*b[i+2] + a[i+6]*b[i+6]
		s3 += a[i+3]*b[i+3] + a[i+7]*b[i+7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dot4Generic returns the dot products of w with four vectors in portable
// Go, loading w once.
func dot4Generic(w, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	n := len(w)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	var a0, a1, a2, a3, b0, b1, b2, b3 float32
	i := 0
	for ; i+2 <= n; i += 2 {
		w0, w1 := w[i], w[i+1]
		a0 += w0 * x0[i]
		a1 += w0 * x1[i]
		a2 += w0 * x2[i]
		a3 += w0 * x3[i]
		b0 += w1 * x0[i+1]
		b1 += w1 * x1[i+1]
		b2 += w1 * x2[i+1]
		b3 += w1 * x3[i+1]
	}
	if i < n {
		w0 := w[i]
		a0 += w0 * x0[i]
		a1 += w0 * x1[i]
		a2 += w0 * x2[i]
		a3 += w0 * x3[i]
	}
	return a0 + b0, a1 + b1, a2 + b2, a3 + b3
}
