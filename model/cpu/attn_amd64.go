package cpu

//go:noescape
func expSubAVX2(x *float32, n int, m float32) float32

//go:noescape
func scoresAVX2(q, k *float32, stride, hd, nblocks int, scale float32, out *float32)

//go:noescape
func wsumAVX2(out, v *float32, stride, hd int, w *float32, npos int)

// expSub sets x[i] = e^(x[i]-m) (all x[i] ≤ m) and returns the sum.
func expSub(x []float32, m float32) float32 {
	n := len(x)
	var sum float32
	k := 0
	if useAVX2 && n >= 8 {
		k = n &^ 7
		sum = expSubAVX2(&x[0], k, m)
	}
	for i := k; i < n; i++ {
		e := expf(x[i] - m)
		x[i] = e
		sum += e
	}
	return sum
}

// scores sets out[p] = scale·(q · keys[p·stride : p·stride+len(q)]) for
// p < len(out).
func scores(out, q, keys []float32, stride int, scale float32) {
	hd, n := len(q), len(out)
	p := 0
	if useAVX2 && hd%8 == 0 && n >= 8 {
		blocks := n / 8
		_ = keys[(blocks*8-1)*stride+hd-1]
		scoresAVX2(&q[0], &keys[0], stride*4, hd, blocks, scale, &out[0])
		p = blocks * 8
	}
	for ; p < n; p++ {
		out[p] = dotSmall(q, keys[p*stride:p*stride+hd]) * scale
	}
}

// wsum sets out = Σ_p w[p]·vals[p·stride : p·stride+len(out)].
func wsum(out, vals []float32, stride int, w []float32) {
	hd, n := len(out), len(w)
	if useAVX2 && hd%8 == 0 && n > 0 {
		_ = vals[(n-1)*stride+hd-1]
		wsumAVX2(&out[0], &vals[0], stride*4, hd, &w[0], n)
		return
	}
	wsumGeneric(out, vals, stride, w)
}
