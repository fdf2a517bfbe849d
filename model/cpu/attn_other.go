//go:build !amd64

package cpu

// expSub sets x[i] = e^(x[i]-m) (all x[i] ≤ m) and returns the sum.
func expSub(x []float32, m float32) float32 {
	var sum float32
	for i, v := range x {
		e := expf(v - m)
		x[i] = e
		sum += e
	}
	return sum
}

// scores sets out[p] = scale·(q · keys[p·stride : p·stride+len(q)]).
func scores(out, q, keys []float32, stride int, scale float32) {
	hd := len(q)
	for p := range out {
		out[p] = dotSmall(q, keys[p*stride:p*stride+hd]) * scale
	}
}

// wsum sets out = Σ_p w[p]·vals[p·stride : p·stride+len(out)].
func wsum(out, vals []float32, stride int, w []float32) {
	wsumGeneric(out, vals, stride, w)
}
