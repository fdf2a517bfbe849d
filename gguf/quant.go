package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Reference quantizers. They reproduce ggml's quantize_row_*_ref functions,
// the deterministic path that llama.cpp's converters use when no importance
// matrix is given, so that a file written here has the same bytes as one
// written by ggml from the same float32 data.
//
// Arithmetic is float32, step by step, as in ggml built without FMA
// contraction (the default for x86-64 builds that do not target FMA
// hardware): every product is rounded to float32 before it is added to
// anything (float32(a*b) + c), which also keeps the compiler from fusing it
// on arm64 and GOAMD64=v3.

// quantizer returns the reference quantizer for t, or nil. Like the
// dequantizers in the type table, it converts whole blocks:
// len(src) is a multiple of the block size and
// len(dst) == len(src)/blockSize*typeSize.
func quantizer(t Type) func(dst []byte, src []float32) {
	switch t {
	case TypeF32:
		return quantF32
	case TypeF16:
		return quantF16
	case TypeQ8_0:
		return quantQ8_0
	case TypeQ4_0:
		return quantQ4_0
	case TypeQ4_K:
		return quantQ4K
	}
	return nil
}

// CanQuantize reports whether Quantize supports t: F32, F16, Q8_0, Q4_0
// and Q4_K.
func (t Type) CanQuantize() bool { return quantizer(t) != nil }

// Quantize converts src to len(src) elements of type t, stored as in a GGUF
// tensor, bit for bit as ggml's reference quantizer for t does. len(src)
// must be a multiple of t's block size and dst must be exactly the
// matching number of bytes (t.RowSize(len(src))).
//
// Only finite input is meaningful; NaN and infinities give unspecified
// (but deterministic) quants, as they do in ggml.
func Quantize(dst []byte, src []float32, t Type) error {
	tr, ok := t.traits()
	if !ok {
		return fmt.Errorf("gguf: cannot quantize to unknown type %s", t)
	}
	q := quantizer(t)
	if q == nil {
		return fmt.Errorf("gguf: quantization to %s is not supported", t)
	}
	if len(src)%tr.blockSize != 0 {
		return fmt.Errorf("gguf: %d elements is not a whole number of %d-element %s blocks", len(src), tr.blockSize, t)
	}
	if want := len(src) / tr.blockSize * tr.typeSize; len(dst) != want {
		return fmt.Errorf("gguf: %d %s elements need %d bytes, got %d", len(src), t, want, len(dst))
	}
	q(dst, src)
	return nil
}

func quantF32(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func quantF16(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
	}
}

// abs32 is fabsf: it clears the sign bit.
func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// quantQ8_0 writes block_q8_0 {f16 d; int8 qs[32]} as
// quantize_row_q8_0_ref does:
//
//	amax = max |x[i]|
//	d    = amax / 127, stored as f16 (round to nearest even)
//	q[i] = roundf(x[i] * (1/d))   (ties away from zero; 0 when d = 0)
//
// The quants use the float32 d, not its f16 rounding.
func quantQ8_0(dst []byte, src []float32) {
	for b := range len(src) / 32 {
		x := src[b*32 : b*32+32]
		blk := dst[b*34 : b*34+34]
		var amax float32
		for _, v := range x {
			// MAX(amax, fabsf(v)) = amax > |v| ? amax : |v|
			if a := abs32(v); !(amax > a) {
				amax = a
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(blk, F32ToF16(d))
		for j, v := range x {
			r := math.Round(float64(float32(v * id))) // roundf
			blk[2+j] = byte(int8(clampF64(r, -128, 127)))
		}
	}
}

// quantQ4_0 writes block_q4_0 {f16 d; uint8 qs[16]} as
// quantize_row_q4_0_ref does:
//
//	max  = the x[i] of largest magnitude (the first one on ties), signed
//	d    = max / -8, stored as f16 (round to nearest even)
//	q[i] = min(15, trunc(x[i]*(1/d) + 8.5))   (8 when d = 0)
//
// so that the element of largest magnitude maps to q = 0, exactly -8*d.
// Element j goes to the low nibble of qs[j], element j+16 to the high
// nibble.
func quantQ4_0(dst []byte, src []float32) {
	for b := range len(src) / 32 {
		x := src[b*32 : b*32+32]
		blk := dst[b*18 : b*18+18]
		var amax, vmax float32
		for _, v := range x {
			if a := abs32(v); amax < a {
				amax, vmax = a, v
			}
		}
		d := vmax / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(blk, F32ToF16(d))
		for j := range 16 {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+16] * id)
			blk[2+j] = q4Nibble(x0+8.5) | q4Nibble(x1+8.5)<<4
		}
	}
}

// q4Nibble is MIN(15, (int8_t)v) for the range ggml's Q4_0 produces
// (v in [0, 17) for finite input), clamped to 0..15 otherwise.
func q4Nibble(v float32) byte {
	t := math.Trunc(float64(v))
	return byte(clampF64(t, 0, 15))
}

// clampF64 limits v to [lo, hi]; NaN becomes 0.
func clampF64(v, lo, hi float64) float64 {
	switch {
	case v != v:
		return 0
	case v < lo:
		return lo
	case v > hi:
		return hi
	}
	return v
}

// nearestInt is ggml's nearest_int: round to nearest, ties to even, valid
// for |v| < 2^22 (ggml asserts that range; beyond it the result saturates).
func nearestInt(v float32) int {
	return int(clampF64(math.RoundToEven(float64(v)), -(1 << 22), 1<<22))
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
