package cpu

import "math"

// expf returns e^x in float32 with a relative error below 3e-7 (about
// 2.5 ulp), several
// times faster than math.Exp: x = k·ln2 + r with |r| ≤ ln2/2, e^r from a
// degree-6 Taylor polynomial (remainder < r⁷/7! ≈ 1.2e-7), 2^k put into
// the exponent bits. Results below the smallest normal float32 become 0.
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375 // ln 2 split so that k·ln2hi is exact
		ln2lo = -2.12194440e-4
	)
	switch {
	case x > 88.72:
		return float32(math.Inf(1))
	case x < -87.33:
		return 0
	case x != x: // NaN
		return x
	}
	kf := x * log2e
	if kf >= 0 {
		kf += 0.5
	} else {
		kf -= 0.5
	}
	k := int32(kf)
	fk := float32(k)
	r := x - fk*ln2hi - fk*ln2lo
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
	if k > 127 { // only for x just below the overflow bound
		return p * float32(math.Ldexp(1, int(k)))
	}
	return math.Float32frombits(uint32(int32(math.Float32bits(p)) + k<<23))
}
