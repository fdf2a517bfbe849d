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
// weighted least squares; it keeps the best by weighted squared error, or
// by weighted absolute error when useMAD is set. L receives the levels;
// laux is scratch of len(x). It returns scale and min.
func makeQKX2Quants(nmax int, x, w []float32, L, laux []uint8, rmin, rdelta float32, nstep int, useMAD bool) (scale, theMin float32) {
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
		bestErr += float32(w[i] * errTerm(diff, useMAD))
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
				curErr += float32(w[i] * errTerm(diff, useMAD))
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

// errTerm is |diff| when useMAD is set, diff² otherwise.
func errTerm(diff float32, useMAD bool) float32 {
	if useMAD {
		return abs32(diff)
	}
	return float32(diff * diff)
}

// fitScaleMinK fits one 256-element super-block x for Q4_K (nmax 15) or
// Q5_K (nmax 31) as quantize_row_q4_K_ref and quantize_row_q5_K_ref do. It
// writes the 16 bytes the two blocks share, head = {f16 d; f16 dmin;
// uint8 scales[12]}, and the levels L:
//
//  1. Each 32-element sub-block j is fitted by makeQKX2Quants (weights
//     sqrt(mean(x²)) + |x|, nstep+1 candidate scales from
//     (nmax+rmin+0.1k)/(max-min)), giving scale[j] and min[j].
//  2. d = max(scale)/63 and dmin = max(min)/63 are stored as f16; each
//     sub-block stores sc = nearest(63*scale[j]/max(scale)) and
//     m = nearest(63*min[j]/max(min)) in 6 bits (see scaleMinK4).
//  3. Every element is requantized against the stored values:
//     q = clamp(nearest((x + f16(dmin)*m) / (f16(d)*sc)), 0, nmax); a
//     sub-block whose f16(d)*sc is 0 keeps its levels from step 1.
func fitScaleMinK(head []byte, L *[qk]uint8, x []float32, nmax int, rmin float32, nstep int) {
	var (
		laux    [32]uint8
		weights [32]float32
		mins    [8]float32
		scales  [8]float32
	)
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
		scales[j], mins[j] = makeQKX2Quants(nmax, xs, weights[:], L[32*j:32*j+32], laux[:], rmin, 0.1, nstep, false)
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
	sc := head[4:16]
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
	binary.LittleEndian.PutUint16(head[0:], hd)
	binary.LittleEndian.PutUint16(head[2:], hm)
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
			L[32*j+i] = uint8(max(0, min(nmax, l)))
		}
	}
}

// quantQ4K writes block_q4_K (see dequantQ4K) as quantize_row_q4_K_ref
// does: fitScaleMinK with nmax 15 and 21 candidate scales
// ((15-1+0.1k)/(max-min), k = 0..20), then the levels as nibbles.
func quantQ4K(dst []byte, src []float32) {
	var L [qk]uint8
	for b := range len(src) / qk {
		blk := dst[b*144 : b*144+144]
		clear(blk[4:16])
		fitScaleMinK(blk, &L, src[b*qk:b*qk+qk], 15, -1, 20)
		qs := blk[16:144]
		for c := range 4 {
			for l := range 32 {
				qs[32*c+l] = L[64*c+l] | L[64*c+32+l]<<4
			}
		}
	}
}

// quantQ5K writes block_q5_K (see dequantQ5K) as quantize_row_q5_K_ref
// does: fitScaleMinK with nmax 31 and 16 candidate scales
// ((31-0.5+0.1k)/(max-min), k = 0..15), then the low 4 bits of each level
// as nibbles (as in Q4_K) and bit 4 of element 64c+32n+l as bit 2c+n of
// qh[l].
func quantQ5K(dst []byte, src []float32) {
	var L [qk]uint8
	for b := range len(src) / qk {
		blk := dst[b*176 : b*176+176]
		clear(blk[4:48])
		fitScaleMinK(blk, &L, src[b*qk:b*qk+qk], 31, -0.5, 15)
		qh, qs := blk[16:48], blk[48:176]
		for c := range 4 {
			for l := range 32 {
				lo, hi := L[64*c+l], L[64*c+32+l]
				qs[32*c+l] = lo&0x0f | (hi&0x0f)<<4
				qh[l] |= (lo>>4)<<(2*c) | (hi>>4)<<(2*c+1)
			}
		}
	}
}

// makeQXQuants is ggml's make_qx_quants with rmse_type 1 and no importance
// weights, as Q6_K uses it: it fits x with x ≈ scale*q, q in -nmax..nmax-1,
// weighting each element by x². Starting from the scale that maps the
// element of largest magnitude to -nmax, it tries the 18 scales that map
// it to -(nmax ± 0.1k), k = 1..9, and keeps the least-squares fit with
// the largest Σ(wxq)²/Σwq². L receives q+nmax; a group whose largest
// magnitude is below 1e-15 gives scale 0 and L = 0.
func makeQXQuants(nmax int, x []float32, L []uint8) float32 {
	amax, vmax := largest(x)
	if amax < groupMaxEps {
		clear(L[:len(x)])
		return 0
	}
	fnmax := float32(nmax)
	level := func(iscale, v float32) int {
		return max(-nmax, min(nmax-1, nearestInt(float32(iscale*v))))
	}
	sums := func(iscale float32) (sumLX, sumL2 float32) {
		for _, v := range x {
			fl := float32(level(iscale, v))
			w := float32(v * v)
			sumLX += float32(float32(w*v) * fl)
			sumL2 += float32(float32(w*fl) * fl)
		}
		return sumLX, sumL2
	}
	iscale := -fnmax / vmax
	for i, v := range x {
		L[i] = uint8(level(iscale, v) + nmax)
	}
	sumLX, sumL2 := sums(iscale)
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := float32(scale * sumLX)
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fnmax + float32(0.1*float32(is))) / vmax
		sumLX, sumL2 = sums(iscale)
		if sumL2 > 0 && float32(sumLX*sumLX) > float32(best*sumL2) {
			for i, v := range x {
				L[i] = uint8(level(iscale, v) + nmax)
			}
			scale = sumLX / sumL2
			best = float32(scale * sumLX)
		}
	}
	return scale
}

// quantQ6K writes block_q6_K (see dequantQ6K) as quantize_row_q6_K_ref
// does:
//
//  1. Each 16-element sub-block j is fitted by makeQXQuants (nmax 32),
//     giving a signed scale[j]; max is the scale of largest magnitude.
//  2. d = max/-128 is stored as f16 and each sub-block stores the int8
//     sc = min(127, nearest(-128*scale[j]/max)). A super-block whose
//     largest scale is below 1e-15 is stored as all zeros.
//  3. Every element is requantized against the stored values:
//     q = clamp(nearest(x / (f16(d)*sc)), -32, 31); a sub-block whose
//     f16(d)*sc is 0 keeps its levels from step 1.
func quantQ6K(dst []byte, src []float32) {
	var (
		L      [qk]uint8
		scales [16]float32
	)
	for b := range len(src) / qk {
		x := src[b*qk : b*qk+qk]
		blk := dst[b*210 : b*210+210]
		var maxScale, maxAbs float32
		for j := range 16 {
			scales[j] = makeQXQuants(32, x[16*j:16*j+16], L[16*j:16*j+16])
			if a := abs32(scales[j]); a > maxAbs {
				maxAbs, maxScale = a, scales[j]
			}
		}
		if maxAbs < groupMaxEps {
			clear(blk)
			continue
		}
		iscale := -128 / maxScale
		hd := F32ToF16(1 / iscale)
		binary.LittleEndian.PutUint16(blk[208:], hd)
		fd := F16ToF32(hd)
		sc := blk[192:208]
		for j := range 16 {
			s := int8(min(127, nearestInt(float32(iscale*scales[j]))))
			sc[j] = byte(s)
			d := fd * float32(s)
			if d == 0 {
				continue
			}
			for i, v := range x[16*j : 16*j+16] {
				L[16*j+i] = uint8(max(-32, min(31, nearestInt(v/d))) + 32)
			}
		}
		ql, qh := blk[0:128], blk[128:192]
		for h := range 2 {
			q := L[128*h : 128*h+128]
			for l := range 32 {
				ql[64*h+l] = q[l]&0x0f | (q[l+64]&0x0f)<<4
				ql[64*h+32+l] = q[l+32]&0x0f | (q[l+96]&0x0f)<<4
				qh[32*h+l] = q[l]>>4 | (q[l+32]>>4)<<2 | (q[l+64]>>4)<<4 | (q[l+96]>>4)<<6
			}
		}
	}
}

// makeQ3Quants is ggml's make_q3_quants with do_rmse set, as Q3_K uses it:
// it maps the element of largest magnitude to -nmax, q in -nmax..nmax-1,
// then up to 5 times revisits each element, moving it to the level its
// leave-one-out least-squares fit (weights x²) suggests when that raises
// Σ(wxq)²/Σwq². It returns Σwxq/Σwq² and L = q+nmax; a group whose largest
// magnitude is below 1e-15 gives 0 and L = 0.
func makeQ3Quants(nmax int, x []float32, L []int8) float32 {
	amax, vmax := largest(x)
	if amax < groupMaxEps {
		clear(L[:len(x)])
		return 0
	}
	iscale := -float32(nmax) / vmax
	var sumLX, sumL2 float32
	for i, v := range x {
		l := max(-nmax, min(nmax-1, nearestInt(float32(iscale*v))))
		L[i] = int8(l)
		fl := float32(l)
		w := float32(v * v)
		sumLX += float32(float32(w*v) * fl)
		sumL2 += float32(float32(w*fl) * fl)
	}
	for range 5 {
		changed := false
		for i, v := range x {
			w := float32(v * v)
			fl := float32(L[i])
			slx := sumLX - float32(float32(w*v)*fl)
			if !(slx > 0) {
				continue
			}
			sl2 := sumL2 - float32(float32(w*fl)*fl)
			nl := max(-nmax, min(nmax-1, nearestInt(float32(v*sl2)/slx)))
			if nl == int(L[i]) {
				continue
			}
			fn := float32(nl)
			slx += float32(float32(w*v) * fn)
			sl2 += float32(float32(w*fn) * fn)
			if sl2 > 0 && float32(float32(slx*slx)*sumL2) > float32(float32(sumLX*sumLX)*sl2) {
				L[i] = int8(nl)
				sumLX, sumL2 = slx, sl2
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	for i := range x {
		L[i] += int8(nmax)
	}
	return sumLX / sumL2
}

// pack2Bit stores 256 2-bit levels as Q2_K and Q3_K do: element
// 128h + 32j + l goes to bits 2j..2j+1 of qs[32h+l].
func pack2Bit(qs []byte, L *[qk]uint8) {
	for h := range 2 {
		q := L[128*h : 128*h+128]
		for l := range 32 {
			qs[32*h+l] = q[l] | q[l+32]<<2 | q[l+64]<<4 | q[l+96]<<6
		}
	}
}

// quantQ3K writes block_q3_K (see dequantQ3K) as quantize_row_q3_K_ref
// does:
//
//  1. Each 16-element sub-block j is fitted by makeQ3Quants (nmax 4),
//     giving a signed scale[j]; max is the scale of largest magnitude.
//  2. d = max/-32 is stored as f16 and each sub-block stores the 6-bit
//     sc = clamp(nearest(-32*scale[j]/max), -32, 31) + 32 (see q3KScales);
//     with max = 0, d = 0 and every sc is 0.
//  3. Every element is requantized against the stored values:
//     q = clamp(nearest(x / (f16(d)*(sc-32))), -4, 3) + 4; a sub-block
//     whose f16(d)*(sc-32) is 0 keeps its levels from step 1.
//  4. Bit 2 of each level goes to hmask, the low 2 bits to qs.
func quantQ3K(dst []byte, src []float32) {
	var (
		L      [qk]int8
		U      [qk]uint8
		scales [16]float32
	)
	for b := range len(src) / qk {
		x := src[b*qk : b*qk+qk]
		blk := dst[b*110 : b*110+110]
		clear(blk)
		var maxScale, amax float32
		for j := range 16 {
			scales[j] = makeQ3Quants(4, x[16*j:16*j+16], L[16*j:16*j+16])
			if a := abs32(scales[j]); a > amax {
				amax, maxScale = a, scales[j]
			}
		}
		hmask, qs, sc := blk[0:32], blk[32:96], blk[96:108]
		var hd uint16
		if maxScale != 0 {
			iscale := -32 / maxScale
			for j := range 16 {
				l := uint8(max(-32, min(31, int(int8(nearestInt(float32(iscale*scales[j])))))) + 32)
				if j < 8 {
					sc[j] = l & 0x0f
				} else {
					sc[j-8] |= (l & 0x0f) << 4
				}
				sc[8+j%4] |= (l >> 4) << (2 * (j / 4))
			}
			hd = F32ToF16(1 / iscale)
		}
		binary.LittleEndian.PutUint16(blk[108:], hd)
		fd := F16ToF32(hd)
		stored := q3KScales(sc)
		for j := range 16 {
			d := fd * float32(stored[j])
			if d == 0 {
				continue
			}
			for i, v := range x[16*j : 16*j+16] {
				L[16*j+i] = int8(max(-4, min(3, nearestInt(v/d))) + 4)
			}
		}
		for j, l := range L {
			u := uint8(l)
			if u > 3 {
				hmask[j%32] |= 1 << (j / 32)
				u -= 4
			}
			U[j] = u
		}
		pack2Bit(qs, &U)
	}
}

// quantQ2K writes block_q2_K (see dequantQ2K) as quantize_row_q2_K_ref
// does:
//
//  1. Each 16-element sub-block j is fitted by makeQKX2Quants (nmax 3,
//     weights |x|, 16 candidate scales from (3-0.5+0.1k)/(max-min),
//     least absolute error), giving scale[j] and min[j].
//  2. d = max(scale)/15 and dmin = max(min)/15 are stored as f16; each
//     sub-block stores sc = nearest(15*scale[j]/max(scale)) in the low
//     nibble and m = nearest(15*min[j]/max(min)) in the high nibble (0
//     and d or dmin 0 when the maximum is 0).
//  3. Every element is requantized against the stored values:
//     q = clamp(nearest((x + f16(dmin)*m) / (f16(d)*sc)), 0, 3); a
//     sub-block whose f16(d)*sc is 0 keeps its levels from step 1.
func quantQ2K(dst []byte, src []float32) {
	var (
		L       [qk]uint8
		laux    [16]uint8
		weights [16]float32
		mins    [16]float32
		scales  [16]float32
	)
	for b := range len(src) / qk {
		x := src[b*qk : b*qk+qk]
		blk := dst[b*84 : b*84+84]
		var maxScale, maxMin float32
		for j := range 16 {
			xs := x[16*j : 16*j+16]
			for l, v := range xs {
				weights[l] = abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(3, xs, weights[:], L[16*j:16*j+16], laux[:], -0.5, 0.1, 15, true)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}
		sc := blk[0:16]
		clear(sc)
		var hd, hm uint16
		if maxScale > 0 {
			iscale := 15 / maxScale
			for j := range 16 {
				sc[j] = uint8(nearestInt(float32(iscale * scales[j])))
			}
			hd = F32ToF16(maxScale / 15)
		}
		if maxMin > 0 {
			iscale := 15 / maxMin
			for j := range 16 {
				sc[j] |= uint8(nearestInt(float32(iscale*mins[j])) << 4)
			}
			hm = F32ToF16(maxMin / 15)
		}
		binary.LittleEndian.PutUint16(blk[80:], hd)
		binary.LittleEndian.PutUint16(blk[82:], hm)
		fd, fm := F16ToF32(hd), F16ToF32(hm)
		for j := range 16 {
			d := fd * float32(sc[j]&0x0f)
			if d == 0 {
				continue
			}
			dm := float32(fm * float32(sc[j]>>4))
			for i, v := range x[16*j : 16*j+16] {
				L[16*j+i] = uint8(max(0, min(3, nearestInt((v+dm)/d))))
			}
		}
		pack2Bit(blk[16:80], &L)
	}
}
