package sample

import (
	"math"
	"slices"
)

// The full-vocabulary top-p pass histograms probability mass by the
// distance d = max - logit (in nats) in buckets of 1/massPerNat nat, the
// last bucket collecting everything further than massBuckets/massPerNat.
const (
	massPerNat  = 16
	massBuckets = 256
)

func massBucket(d float64) int {
	if d >= massBuckets/massPerNat {
		return massBuckets - 1
	}
	return int(d * massPerNat)
}

// chain runs top-p, min-p, temperature and the draw over c, which is sorted
// in the candidate order and free of NaN and -Inf. z is the top-p
// normaliser, the sum of exp(logit - max) over the distribution top-p sees;
// 0 means c is that distribution.
func (s *Sampler) chain(c []cand, z float64) int32 {
	if len(c) == 0 {
		return NoToken
	}
	top := float64(c[0].logit)
	if s.greedy || math.IsInf(top, 1) {
		return c[0].id
	}
	if p := s.p.TopP; p < 1 {
		if z == 0 {
			for _, e := range c {
				z += expNeg(float64(e.logit) - top)
			}
		}
		target := float64(p) * z
		var cum float64
		for i, e := range c {
			cum += expNeg(float64(e.logit) - top)
			if cum >= target {
				c = c[:i+1]
				break
			}
		}
	}
	if s.p.MinP > 0 {
		floor := top + math.Log(float64(s.p.MinP))
		i := 1
		for i < len(c) && float64(c[i].logit) >= floor {
			i++
		}
		c = c[:i]
	}
	return s.draw(c, top)
}

// draw picks one of c with probability proportional to
// exp((logit - top) / Temperature), walking c in order.
func (s *Sampler) draw(c []cand, top float64) int32 {
	inv := 1 / float64(s.p.Temperature)
	w := s.weightBuf(len(c))
	var total float64
	for i, e := range c {
		w[i] = expNeg((float64(e.logit) - top) * inv)
		total += w[i]
	}
	u := s.rng.Float64() * total
	var acc float64
	for i, x := range w {
		acc += x
		if u < acc {
			return c[i].id
		}
	}
	return c[len(c)-1].id // u within rounding of total
}

func (s *Sampler) weightBuf(n int) []float64 {
	if cap(s.weights) < n {
		s.weights = make([]float64, n)
	}
	return s.weights[:n]
}

// sampleAll samples from logits (penalties already applied) without top-k.
func (s *Sampler) sampleAll(logits []float32) int32 {
	best, bv := argmax(logits)
	if s.greedy || best == NoToken || math.IsInf(float64(bv), 1) {
		return best
	}
	top := float64(bv)
	topP, minP := s.p.TopP < 1, s.p.MinP > 0
	if !topP && !minP {
		return s.drawAll(logits, top)
	}

	// Without top-k the chain's result is the shorter of two prefixes of
	// the sorted vocabulary: top-p's (mass >= TopP of the whole
	// distribution) and min-p's (logit >= top + ln MinP). Collect the tokens
	// above a threshold that keeps both prefixes, sort only those and let
	// the chain cut them exactly.
	floor := math.Inf(-1)
	if minP {
		floor = top + math.Log(float64(s.p.MinP))
	}
	var z float64
	lo := floor
	if topP {
		clear(s.mass[:])
		for _, v := range logits {
			if v > negInf {
				d := top - float64(v)
				s.mass[massBucket(d)] += expNeg(-d)
			}
		}
		for _, m := range s.mass {
			z += m
		}
		// Buckets up to cut hold the top-p prefix. A token is in one of them
		// exactly when d < (cut+1)/massPerNat, as d*massPerNat is exact.
		target := float64(s.p.TopP) * z
		var cum float64
		for b, m := range s.mass[:massBuckets-1] {
			cum += m
			if cum >= target {
				lo = max(lo, top-float64(b+1)/massPerNat)
				break
			}
		}
	}
	c := collect(s.cands[:0], logits, lo)
	slices.SortFunc(c, cmpCand)
	s.cands = c[:0]
	return s.chain(c, z)
}

// collect appends to c every token whose logit is at least lo, and never a
// NaN or -Inf one. Lowering lo only adds tokens, so lo is rounded down to
// float32.
func collect(c []cand, logits []float32, lo float64) []cand {
	lo32 := float32(lo)
	if float64(lo32) > lo {
		lo32 = math.Nextafter32(lo32, negInf)
	}
	lo32 = max(lo32, -math.MaxFloat32)
	i := 0
	for ; i+8 <= len(logits); i += 8 {
		l := logits[i : i+8 : i+8]
		if l[0] >= lo32 || l[1] >= lo32 || l[2] >= lo32 || l[3] >= lo32 ||
			l[4] >= lo32 || l[5] >= lo32 || l[6] >= lo32 || l[7] >= lo32 {
			for j, v := range l {
				if v >= lo32 {
					c = append(c, cand{int32(i + j), v})
				}
			}
		}
	}
	for ; i < len(logits); i++ {
		if v := logits[i]; v >= lo32 {
			c = append(c, cand{int32(i), v})
		}
	}
	return c
}

// drawAll draws from the whole vocabulary at the configured temperature,
// walking it in ID order.
func (s *Sampler) drawAll(logits []float32, top float64) int32 {
	inv := 1 / float64(s.p.Temperature)
	w := s.weightBuf(len(logits))
	var total float64
	for i, v := range logits {
		x := 0.0
		if v > negInf {
			x = expNeg((float64(v) - top) * inv)
		}
		w[i] = x
		total += x
	}
	u := s.rng.Float64() * total
	var acc float64
	last := NoToken
	for i, x := range w {
		if x == 0 {
			continue
		}
		acc += x
		last = int32(i)
		if u < acc {
			return last
		}
	}
	return last
}

// exp2Frac[j] holds the bits of 2**(j/32).
var exp2Frac = func() (t [32]uint64) {
	for j := range t {
		t[j] = math.Float64bits(math.Exp2(float64(j) / 32))
	}
	return t
}()

// expNeg returns e**x for x <= 0 with a relative error below 1e-11, about
// twice as fast as math.Exp and small enough to be inlined. Arguments below
// -708 (and -Inf) give 0; x must not be NaN.
func expNeg(x float64) float64 {
	if x < -708 {
		return 0
	}
	// x = n ln2/32 + r with n = 32k + j, 0 <= j < 32 and |r| <= ln2/64, so
	// e**x = 2**k 2**(j/32) e**r; e**r is its Taylor series to degree 4
	// (remainder below 1.3e-12). Adding 1.5*2**52 rounds x*32/ln2 to n and
	// leaves 2**51 + n in the mantissa bits: the low five bits are j, and
	// shifting the rest by 5 then into the exponent field adds k to the
	// exponent of 2**(j/32) (the bits above fall off, so the addition wraps
	// correctly for negative k).
	const round = 0x1.8p52
	nd := x*(32/math.Ln2) + round
	n := int64(math.Float64bits(nd))
	r := x - (nd-round)*(math.Ln2/32)
	return (1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24))))) *
		math.Float64frombits(exp2Frac[n&31]+uint64(n>>5)<<52)
}
