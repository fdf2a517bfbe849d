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
