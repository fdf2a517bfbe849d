package gguf

import (
	"encoding/binary"
	"math"
)

// Dequantizers for the 32-element block types: the legacy Q4_0, Q4_1, Q5_0
// and Q5_1, plus IQ4_NL and MXFP4, which share their nibble layout.
//
// All of them place element j of a block in the low nibble of qs[j] and
// element j+16 in the high nibble of the same byte: the two halves of the
// block are interleaved byte-wise, not element-wise.
//
// Arithmetic is float32 as in ggml's dequantize_row_* functions. Products are
// rounded to float32 before a following addition (float32(a*b) + c), so that
// the compiler cannot fuse them into an FMA and results are the same bits on
// every architecture.

// f16At reads the little-endian binary16 value at b[0:2] as float32.
func f16At(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }

// dequantQ4_0 decodes block_q4_0, 18 bytes for 32 elements:
//
//	d   f16        2 bytes   scale
//	qs  [16]uint8  16 bytes  4-bit quants, element j low nibble of qs[j],
//	                         element j+16 high nibble of qs[j]
//
// x[i] = d * (q[i] - 8), q[i] in 0..15.
func dequantQ4_0(dst []float32, src []byte) {
	for b := range len(dst) / 32 {
		blk := src[b*18 : b*18+18]
		y := dst[b*32 : b*32+32]
		d := f16At(blk)
		for j, q := range blk[2:18] {
			y[j] = float32(int(q&0x0f)-8) * d
			y[j+16] = float32(int(q>>4)-8) * d
		}
	}
}

// dequantQ4_1 decodes block_q4_1, 20 bytes for 32 elements:
//
//	d   f16        2 bytes   scale
//	m   f16        2 bytes   minimum (offset)
//	qs  [16]uint8  16 bytes  4-bit quants, nibbles as in Q4_0
//
// x[i] = d * q[i] + m, q[i] in 0..15.
func dequantQ4_1(dst []float32, src []byte) {
	for b := range len(dst) / 32 {
		blk := src[b*20 : b*20+20]
		y := dst[b*32 : b*32+32]
		d, m := f16At(blk), f16At(blk[2:])
		for j, q := range blk[4:20] {
			y[j] = float32(float32(q&0x0f)*d) + m
			y[j+16] = float32(float32(q>>4)*d) + m
		}
	}
}

// dequantQ5_0 decodes block_q5_0, 22 bytes for 32 elements:
//
//	d   f16        2 bytes   scale
//	qh  [4]uint8   4 bytes   fifth bits, a little-endian uint32: bit i is the
//	                         high bit of element i
//	qs  [16]uint8  16 bytes  low 4 bits, nibbles as in Q4_0
//
// x[i] = d * (q[i] - 16), q[i] = low4 | bit(qh, i)<<4 in 0..31.
func dequantQ5_0(dst []float32, src []byte) {
	for b := range len(dst) / 32 {
		blk := src[b*22 : b*22+22]
		y := dst[b*32 : b*32+32]
		d := f16At(blk)
		qh := binary.LittleEndian.Uint32(blk[2:])
		for j, q := range blk[6:22] {
			h0 := int((qh>>j)&1) << 4
			h1 := int((qh>>(j+16))&1) << 4
			y[j] = float32((int(q&0x0f)|h0)-16) * d
			y[j+16] = float32((int(q>>4)|h1)-16) * d
		}
	}
}

// dequantQ5_1 decodes block_q5_1, 24 bytes for 32 elements:
//
//	d   f16        2 bytes   scale
//	m   f16        2 bytes   minimum (offset)
//	qh  [4]uint8   4 bytes   fifth bits as in Q5_0
//	qs  [16]uint8  16 bytes  low 4 bits, nibbles as in Q4_0
//
// x[i] = d * q[i] + m, q[i] = low4 | bit(qh, i)<<4 in 0..31.
func dequantQ5_1(dst []float32, src []byte) {
	for b := range len(dst) / 32 {
		blk := src[b*24 : b*24+24]
		y := dst[b*32 : b*32+32]
		d, m := f16At(blk), f16At(blk[2:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		for j, q := range blk[8:24] {
			h0 := ((qh >> j) & 1) << 4
			h1 := ((qh >> (j + 16)) & 1) << 4
			y[j] = float32(float32(uint32(q&0x0f)|h0)*d) + m
			y[j+16] = float32(float32(uint32(q>>4)|h1)*d) + m
		}
	}
}

// iq4nlValues is ggml's kvalues_iq4nl: the 16 non-linear levels of IQ4_NL
// and IQ4_XS.
var iq4nlValues = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// dequantIQ4NL decodes block_iq4_nl, 18 bytes for 32 elements:
//
//	d   f16        2 bytes   scale
//	qs  [16]uint8  16 bytes  4-bit indices into iq4nlValues, nibbles as in Q4_0
//
// x[i] = d * iq4nlValues[q[i]].
func dequantIQ4NL(dst []float32, src []byte) {
	for b := range len(dst) / 32 {
		blk := src[b*18 : b*18+18]
		y := dst[b*32 : b*32+32]
		d := f16At(blk)
		for j, q := range blk[2:18] {
			y[j] = d * float32(iq4nlValues[q&0x0f])
			y[j+16] = d * float32(iq4nlValues[q>>4])
		}
	}
}

// mxfp4Values is ggml's kvalues_mxfp4: the FP4 E2M1 values times two
// (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives, doubled so that they are
// integers). The block scale is halved to compensate.
var mxfp4Values = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

// e8m0Half converts an E8M0 exponent byte to 2^(e-128), half the OCP MX
// scale 2^(e-127), as ggml's GGML_E8M0_TO_FP32_HALF does. e = 255 (NaN in the
// OCP format) gives 2^127, and e = 0 and 1 give the float32 subnormals 2^-128
// and 2^-127.
func e8m0Half(e uint8) float32 {
	if e < 2 {
		return math.Float32frombits(0x00200000 << e)
	}
	return math.Float32frombits(uint32(e-1) << 23)
}

// dequantMXFP4 decodes block_mxfp4, 17 bytes for 32 elements:
//
//	e   uint8      1 byte    shared E8M0 exponent
//	qs  [16]uint8  16 bytes  FP4 E2M1 codes (sign bit 3), nibbles as in Q4_0
//
// x[i] = mxfp4Values[q[i]] * 2^(e-128), which equals E2M1(q[i]) * 2^(e-127).
func dequantMXFP4(dst []float32, src []byte) {
	for b := range len(dst) / 32 {
		blk := src[b*17 : b*17+17]
		y := dst[b*32 : b*32+32]
		d := e8m0Half(blk[0])
		for j, q := range blk[1:17] {
			y[j] = float32(mxfp4Values[q&0x0f]) * d
			y[j+16] = float32(mxfp4Values[q>>4]) * d
		}
	}
}
