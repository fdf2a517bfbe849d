package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Reference quantizers. They reproduce ggml's quantize_row_*_ref functions,
// the deterministic path that llama.cpp's converters use when no importance
// matrix is given, so that a file written here has the same bytes as one
// written by ggml from the same float32 data. The one exception is IQ4_NL,
// whose _ref function differs from what ggml_quantize_chunk (and so
// llama.cpp's quantize tool) runs without an importance matrix; the latter
// is reproduced (see quantIQ4NL). The legacy 32-element types are in this
// file, the K-quants in quant_k.go.
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
	case TypeQ4_1:
		return quantQ4_1
	case TypeQ5_0:
		return quantQ5_0
	case TypeQ5_1:
		return quantQ5_1
	case TypeIQ4_NL:
		return quantIQ4NL
	case TypeQ2_K:
		return quantQ2K
	case TypeQ3_K:
		return quantQ3K
	case TypeQ4_K:
		return quantQ4K
	case TypeQ5_K:
		return quantQ5K
	case TypeQ6_K:
		return quantQ6K
	}
	return nil
}

// CanQuantize reports whether Quantize supports t: F32, F16, the legacy
// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, IQ4_NL, and the K-quants Q2_K, Q3_K,
// Q4_K, Q5_K and Q6_K.
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
// largest returns the magnitude and the value of the element of x of
// largest magnitude, the first one on ties (as ggml's quantizers scan).
func largest(x []float32) (amax, vmax float32) {
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, vmax = a, v
		}
	}
	return amax, vmax
}

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
		_, vmax := largest(x)
		d := vmax / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(blk, F32ToF16(d))
		for j := range 16 {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+16] * id)
			blk[2+j] = truncLevel(x0+8.5, 15) | truncLevel(x1+8.5, 15)<<4
		}
	}
}

// truncLevel is MIN(top, (int8_t)v), the conversion of the legacy
// quantizers, for the range they produce (v in [0, 2*top+2) for finite
// input); out of that range it clamps to 0..top.
func truncLevel(v float32, top float64) byte {
	t := math.Trunc(float64(v))
	return byte(clampF64(t, 0, top))
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

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it counts as all zeros.
const groupMaxEps float32 = 1e-15

// rangeOf returns the smallest and largest of x, starting from ±FLT_MAX
// as ggml's Q4_1 and Q5_1 do.
func rangeOf(x []float32) (lo, hi float32) {
	lo, hi = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	return lo, hi
}

// quantQ4_1 writes block_q4_1 {f16 d; f16 m; uint8 qs[16]} as
// quantize_row_q4_1_ref does:
//
//	m    = min x[i], stored as f16
//	d    = (max - min) / 15, stored as f16
//	q[i] = min(15, trunc((x[i] - min)*(1/d) + 0.5))   (0 when d = 0)
//
// The quants use the float32 d and min. Nibbles as in Q4_0.
func quantQ4_1(dst []byte, src []float32) {
	for b := range len(src) / 32 {
		x := src[b*32 : b*32+32]
		blk := dst[b*20 : b*20+20]
		lo, hi := rangeOf(x)
		d := (hi - lo) / 15
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(blk, F32ToF16(d))
		binary.LittleEndian.PutUint16(blk[2:], F32ToF16(lo))
		for j := range 16 {
			x0 := float32((x[j] - lo) * id)
			x1 := float32((x[j+16] - lo) * id)
			blk[4+j] = truncLevel(x0+0.5, 15) | truncLevel(x1+0.5, 15)<<4
		}
	}
}

// quantQ5_0 writes block_q5_0 {f16 d; uint8 qh[4]; uint8 qs[16]} as
// quantize_row_q5_0_ref does, Q4_0's scheme with 32 levels:
//
//	max  = the x[i] of largest magnitude (the first one on ties), signed
//	d    = max / -16, stored as f16
//	q[i] = min(31, trunc(x[i]*(1/d) + 16.5))   (16 when d = 0)
//
// The low 4 bits go to the nibbles as in Q4_0, bit 4 of element i to bit i
// of the little-endian uint32 qh.
func quantQ5_0(dst []byte, src []float32) {
	for b := range len(src) / 32 {
		x := src[b*32 : b*32+32]
		blk := dst[b*22 : b*22+22]
		_, vmax := largest(x)
		d := vmax / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(blk, F32ToF16(d))
		var qh uint32
		for j := range 16 {
			q0 := truncLevel(float32(x[j]*id)+16.5, 31)
			q1 := truncLevel(float32(x[j+16]*id)+16.5, 31)
			blk[6+j] = q0&0x0f | (q1&0x0f)<<4
			qh |= uint32(q0>>4)<<j | uint32(q1>>4)<<(j+16)
		}
		binary.LittleEndian.PutUint32(blk[2:], qh)
	}
}

// quantQ5_1 writes block_q5_1 {f16 d; f16 m; uint8 qh[4]; uint8 qs[16]}
// as quantize_row_q5_1_ref does, Q4_1's scheme with 32 levels:
//
//	m    = min x[i], stored as f16
//	d    = (max - min) / 31, stored as f16
//	q[i] = trunc((x[i] - min)*(1/d) + 0.5)   (0 when d = 0)
//
// Bits as in Q5_0.
func quantQ5_1(dst []byte, src []float32) {
	for b := range len(src) / 32 {
		x := src[b*32 : b*32+32]
		blk := dst[b*24 : b*24+24]
		lo, hi := rangeOf(x)
		d := (hi - lo) / 31
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(blk, F32ToF16(d))
		binary.LittleEndian.PutUint16(blk[2:], F32ToF16(lo))
		var qh uint32
		for j := range 16 {
			q0 := truncLevel(float32((x[j]-lo)*id)+0.5, 31)
			q1 := truncLevel(float32((x[j+16]-lo)*id)+0.5, 31)
			blk[8+j] = q0&0x0f | (q1&0x0f)<<4
			qh |= uint32(q0>>4)<<j | uint32(q1>>4)<<(j+16)
		}
		binary.LittleEndian.PutUint32(blk[4:], qh)
	}
}

// iq4nlIndex is ggml's best_index_int8 over iq4nlValues: the index of the
// level nearest to v (the upper one on ties), found by bisection.
func iq4nlIndex(v float32) uint8 {
	vals := &iq4nlValues
	if v <= float32(vals[0]) {
		return 0
	}
	if v >= float32(vals[15]) {
		return 15
	}
	lo, hi := 0, 15
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if v < float32(vals[mid]) {
			hi = mid
		} else {
			lo = mid
		}
	}
	if v-float32(vals[hi-1]) < float32(vals[hi])-v {
		return uint8(hi - 1)
	}
	return uint8(hi)
}

// quantIQ4NL writes block_iq4_nl {f16 d; uint8 qs[16]} as quantize_iq4_nl
// does without an importance matrix (the function ggml_quantize_chunk and
// so llama.cpp's quantize tool call; quantize_row_iq4_nl_ref skips the
// search of step 2 and the requantization of step 3):
//
//  1. With weights w = x², max the x[i] of largest magnitude (the first on
//     ties) and the levels v[k] = iq4nlValues[k], each element takes the
//     level nearest to x*(1/d) for d = max/127, and d is refitted by
//     weighted least squares: d = Σwvx/Σwv².
//  2. For t = -7..7 the levels nearest to x*(t-127)/max are tried; each
//     least-squares fit with a larger Σ(wvx)²/Σwv² replaces d.
//  3. d is stored as f16 and every element takes the level nearest to
//     x*(1/d) (the float32 d).
//
// A block whose largest magnitude is below 1e-15 stores d = 0 and level 8
// (the value 1, nearest to 0) everywhere. Nibbles as in Q4_0.
func quantIQ4NL(dst []byte, src []float32) {
	var L [32]uint8
	for b := range len(src) / 32 {
		x := src[b*32 : b*32+32]
		blk := dst[b*18 : b*18+18]
		amax, vmax := largest(x)
		var d float32
		if amax >= groupMaxEps {
			d = -vmax / float32(iq4nlValues[0])
			id := 1 / d
			var sumQX, sumQ2 float32
			for _, v := range x {
				q := float32(iq4nlValues[iq4nlIndex(float32(id*v))])
				wq := float32(float32(v*v) * q)
				sumQX += float32(wq * v)
				sumQ2 += float32(wq * q)
			}
			d = sumQX / sumQ2
			best := float32(d * sumQX)
			for t := -7; t <= 7; t++ {
				id = float32(t+int(iq4nlValues[0])) / vmax
				sumQX, sumQ2 = 0, 0
				for _, v := range x {
					q := float32(iq4nlValues[iq4nlIndex(float32(id*v))])
					wq := float32(float32(v*v) * q)
					sumQX += float32(wq * v)
					sumQ2 += float32(wq * q)
				}
				if sumQ2 > 0 && float32(sumQX*sumQX) > float32(best*sumQ2) {
					d = sumQX / sumQ2
					best = float32(d * sumQX)
				}
			}
		}
		binary.LittleEndian.PutUint16(blk, F32ToF16(d))
		var id float32
		if d != 0 {
			id = 1 / d
		}
		for j, v := range x {
			L[j] = iq4nlIndex(float32(id * v))
		}
		for j := range 16 {
			blk[2+j] = L[j] | L[j+16]<<4
		}
	}
}
