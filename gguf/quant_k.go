package gguf

import (
	"encoding/binary"
	"math"
)

// nearestInt is ggml's nearest_int: round to nearest, ties to even, by
// adding 1.5*2^23 in float32 and reading the low mantissa bits. That is
// exact for |v| < 2^22, the range ggml asserts; beyond it, and for NaN and
// infinities, it gives the same (meaningless) value as ggml built without
// assertions, as release builds are: inputs whose scales overflow f16
// reach it with ±Inf or NaN.
func nearestInt(v float32) int {
	f := v + 12582912
	return int(math.Float32bits(f)&0x007fffff) - 0x00400000
}

// makeQKX2Quants is ggml's make_qkx2_quants: it fits x (len(x) elements,
// weighted by w) with x ≈ scale*L - min, L in 0..nmax, min >= 0, trying
// nstep+1 candidate scales around nmax/(max-min) and refining each by
// weighted least squares; it keeps the best by weighted squared error.
// L receives the levels; laux is scratch of len(x). It returns scale and min.
func makeQKX2Quants(nmax int, x, w []float32, L, laux []uint8, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < lo {
			lo = x[i]
		}
		if x[i] > hi {
			hi = x[i]
		}
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -lo
	}
	fnmax := float32(nmax)
	iscale := fnmax / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i := range n {
		l := nearestInt(float32(iscale * (x[i] - lo)))
		L[i] = uint8(max(0, min(nmax, l)))
		diff := float32(float32(scale*float32(L[i]))+lo) - x[i]
		bestErr += float32(w[i] * float32(diff*diff))
	}
	if nstep < 1 {
		return scale, -lo
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + fnmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := nearestInt(float32(iscale * (x[i] - lo)))
			l = max(0, min(nmax, l))
			laux[i] = uint8(l)
			fl := float32(l)
			wl := float32(w[i] * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curErr float32
			for i := range n {
				diff := float32(float32(thisScale*float32(laux[i]))+thisMin) - x[i]
				curErr += float32(w[i] * float32(diff*diff))
			}
			if curErr < bestErr {
				copy(L[:n], laux[:n])
				bestErr = curErr
				scale, lo = thisScale, thisMin
			}
		}
	}
	return scale, -lo
}

// quantQ4K writes block_q4_K (see dequantQ4K) as quantize_row_q4_K_ref does:
//
//  1. Each 32-element sub-block j is fitted by makeQKX2Quants (nmax 15,
//     weights sqrt(mean(x²)) + |x|, 21 candidate scales from
//     (15-1+0.1k)/(max-min)), giving scale[j] and min[j].
//  2. d = max(scale)/63 and dmin = max(min)/63 are stored as f16; each
//     sub-block stores sc = nearest(63*scale[j]/max(scale)) and
//     m = nearest(63*min[j]/max(min)) in 6 bits (see scaleMinK4).
//  3. Every element is requantized against the stored values:
//     q = clamp(nearest((x + f16(dmin)*m) / (f16(d)*sc)), 0, 15); a
//     sub-block whose f16(d)*sc is 0 keeps its levels from step 1.
func quantQ4K(dst []byte, src []float32) {
	var (
		L       [qk]uint8
		laux    [32]uint8
		weights [32]float32
		mins    [8]float32
		scales  [8]float32
	)
	for b := range len(src) / qk {
		x := src[b*qk : b*qk+qk]
		blk := dst[b*144 : b*144+144]
		var maxScale, maxMin float32
		for j := range 8 {
			xs := x[32*j : 32*j+32]
			var sumX2 float32
			for _, v := range xs {
				sumX2 += float32(v * v)
			}
			avX := float32(math.Sqrt(float64(sumX2 / 32)))
			for l, v := range xs {
				weights[l] = avX + abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(15, xs, weights[:], L[32*j:32*j+32], laux[:], -1, 0.1, 20)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}

		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		sc := blk[4:16]
		for j := range 8 {
			ls := min(63, uint8(nearestInt(float32(invScale*scales[j]))))
			lm := min(63, uint8(nearestInt(float32(invMin*mins[j]))))
			if j < 4 {
				sc[j] = ls
				sc[j+4] = lm
			} else {
				sc[j+4] = ls&0x0f | (lm&0x0f)<<4
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		hd, hm := F32ToF16(maxScale/63), F32ToF16(maxMin/63)
		binary.LittleEndian.PutUint16(blk[0:], hd)
		binary.LittleEndian.PutUint16(blk[2:], hm)
		fd, fm := F16ToF32(hd), F16ToF32(hm)

		for j := range 8 {
			s, m := scaleMinK4(j, sc)
			d := fd * float32(s)
			if d == 0 {
				continue
			}
			dm := float32(fm * float32(m))
			for i, v := range x[32*j : 32*j+32] {
				l := nearestInt((v + dm) / d)
				L[32*j+i] = uint8(max(0, min(15, l)))
			}
		}

		qs := blk[16:144]
		for c := range 4 {
			for l := range 32 {
				qs[32*c+l] = L[64*c+l] | L[64*c+32+l]<<4
			}
		}
	}
}
