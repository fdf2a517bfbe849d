package gguf

import (
	"encoding/binary"
	"math"
)

// Dequantizers for the K-quant types: super-blocks of 256 elements split
// into 16 sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 8 sub-blocks of 32 (Q4_K,
// Q5_K), each sub-block with its own quantized scale (and min).
//
// Element numbering used in the comments: e is the index in the super-block
// (0..255). As in ggml, arithmetic is float32. Every product that meets an
// addition or subtraction is rounded to float32 first (an explicit
// conversion), so that the compiler forms no FMA and the results are the
// same bits on every architecture.

// scaleMinK4 unpacks the 6-bit scale and min of sub-block j (0..7) from the
// 12-byte scales field of Q4_K and Q5_K (ggml's get_scale_min_k4):
//
//	j < 4:  sc = s[j] & 63               m = s[j+4] & 63
//	j >= 4: sc = s[j+4]&15 | s[j-4]>>6<<4  m = s[j+4]>>4 | s[j]>>6<<4
//
// Bytes 0..3 hold the scales of sub-blocks 0..3 in their low 6 bits, bytes
// 4..7 the mins of sub-blocks 0..3; bytes 8..11 hold the low 4 bits of the
// scale (low nibble) and min (high nibble) of sub-blocks 4..7, whose top two
// bits are the top two bits of bytes 0..3 (scale) and 4..7 (min).
func scaleMinK4(j int, s []byte) (sc, m uint8) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0x0f | (s[j-4]>>6)<<4, s[j+4]>>4 | (s[j]>>6)<<4
}

// dequantQ2K decodes block_q2_K, 84 bytes for 256 elements:
//
//	scales  [16]uint8  16 bytes  sub-block s: scale s&15 (low nibble), min s>>4
//	qs      [64]uint8  64 bytes  2-bit quants
//	d       f16        2 bytes   super-block scale of the scales
//	dmin    f16        2 bytes   super-block scale of the mins
//
// Element e = 128h + 32j + l (h 0..1, j 0..3, l 0..31) has quant
// q = (qs[32h+l] >> 2j) & 3 and sub-block k = 8h + 2j + l/16:
// x = d*(scales[k]&15) * q - dmin*(scales[k]>>4).
func dequantQ2K(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		blk := src[b*84 : b*84+84]
		y := dst[b*qk : b*qk+qk]
		scales, qs := blk[0:16], blk[16:80]
		d, dmin := f16At(blk[80:]), f16At(blk[82:])
		for h := range 2 {
			q := qs[32*h : 32*h+32]
			for j := range 4 {
				shift := 2 * j
				for half := range 2 {
					sc := scales[8*h+2*j+half]
					dl := d * float32(sc&0x0f)
					ml := float32(dmin * float32(sc>>4))
					out := y[128*h+32*j+16*half : 128*h+32*j+16*half+16]
					for l, v := range q[16*half : 16*half+16] {
						out[l] = float32(dl*float32((v>>shift)&3)) - ml
					}
				}
			}
		}
	}
}

// q3KScales unpacks the 16 signed 6-bit sub-block scales of Q3_K from its
// 12-byte scales field s. Scale i (0..15) is
//
//	low4  = s[i] & 15       for i < 8,  s[i-8] >> 4   for i >= 8
//	high2 = (s[8 + i%4] >> (2*(i/4))) & 3
//	scale = (low4 | high2<<4) - 32
func q3KScales(s []byte) (out [16]int8) {
	for i := range 16 {
		var low uint8
		if i < 8 {
			low = s[i] & 0x0f
		} else {
			low = s[i-8] >> 4
		}
		high := (s[8+i%4] >> (2 * (i / 4))) & 3
		out[i] = int8(low|high<<4) - 32
	}
	return out
}

// dequantQ3K decodes block_q3_K, 110 bytes for 256 elements:
//
//	hmask   [32]uint8  32 bytes  high (third) bits
//	qs      [64]uint8  64 bytes  low 2 bits
//	scales  [12]uint8  12 bytes  16 signed 6-bit scales, see q3KScales
//	d       f16        2 bytes   super-block scale
//
// Element e = 128h + 32j + l (h 0..1, j 0..3, l 0..31) has low bits
// (qs[32h+l] >> 2j) & 3 and high bit (hmask[l] >> (4h+j)) & 1, sub-block
// k = 8h + 2j + l/16. The quant is q = low - 4 when the high bit is clear and
// q = low when it is set (so q is in -4..3): x = d*scale[k] * q.
func dequantQ3K(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		blk := src[b*110 : b*110+110]
		y := dst[b*qk : b*qk+qk]
		hmask, qs := blk[0:32], blk[32:96]
		scales := q3KScales(blk[96:108])
		d := f16At(blk[108:])
		for h := range 2 {
			q := qs[32*h : 32*h+32]
			for j := range 4 {
				shift := 2 * j
				bit := uint8(1) << (4*h + j)
				for half := range 2 {
					dl := d * float32(scales[8*h+2*j+half])
					out := y[128*h+32*j+16*half : 128*h+32*j+16*half+16]
					for l := range 16 {
						ll := 16*half + l
						v := int((q[ll] >> shift) & 3)
						if hmask[ll]&bit == 0 {
							v -= 4
						}
						out[l] = dl * float32(v)
					}
				}
			}
		}
	}
}

// dequantQ4K decodes block_q4_K, 144 bytes for 256 elements:
//
//	d       f16         2 bytes    super-block scale of the scales
//	dmin    f16         2 bytes    super-block scale of the mins
//	scales  [12]uint8   12 bytes   8 6-bit scales and 8 6-bit mins, see scaleMinK4
//	qs      [128]uint8  128 bytes  4-bit quants
//
// Element e = 64c + 32n + l (c 0..3, n 0..1, l 0..31) is in sub-block
// k = 2c + n; its quant is the low (n = 0) or high (n = 1) nibble of
// qs[32c+l]: x = d*sc[k] * q - dmin*m[k].
func dequantQ4K(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		blk := src[b*144 : b*144+144]
		y := dst[b*qk : b*qk+qk]
		d, dmin := f16At(blk), f16At(blk[2:])
		scales, qs := blk[4:16], blk[16:144]
		for c := range 4 {
			sc1, m1 := scaleMinK4(2*c, scales)
			sc2, m2 := scaleMinK4(2*c+1, scales)
			d1, min1 := d*float32(sc1), float32(dmin*float32(m1))
			d2, min2 := d*float32(sc2), float32(dmin*float32(m2))
			lo := y[64*c : 64*c+32]
			hi := y[64*c+32 : 64*c+64]
			for l, v := range qs[32*c : 32*c+32] {
				lo[l] = float32(d1*float32(v&0x0f)) - min1
				hi[l] = float32(d2*float32(v>>4)) - min2
			}
		}
	}
}

// dequantQ5K decodes block_q5_K, 176 bytes for 256 elements:
//
//	d       f16         2 bytes    super-block scale of the scales
//	dmin    f16         2 bytes    super-block scale of the mins
//	scales  [12]uint8   12 bytes   8 6-bit scales and 8 6-bit mins, see scaleMinK4
//	qh      [32]uint8   32 bytes   fifth bits
//	qs      [128]uint8  128 bytes  low 4 bits
//
// Element e = 64c + 32n + l (c 0..3, n 0..1, l 0..31) is in sub-block
// k = 2c + n; its low 4 bits are the low (n = 0) or high (n = 1) nibble of
// qs[32c+l] and its fifth bit is bit k of qh[l]:
// x = d*sc[k] * (low4 + 16*bit) - dmin*m[k].
func dequantQ5K(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		blk := src[b*176 : b*176+176]
		y := dst[b*qk : b*qk+qk]
		d, dmin := f16At(blk), f16At(blk[2:])
		scales, qh, qs := blk[4:16], blk[16:48], blk[48:176]
		for c := range 4 {
			sc1, m1 := scaleMinK4(2*c, scales)
			sc2, m2 := scaleMinK4(2*c+1, scales)
			d1, min1 := d*float32(sc1), float32(dmin*float32(m1))
			d2, min2 := d*float32(sc2), float32(dmin*float32(m2))
			lo := y[64*c : 64*c+32]
			hi := y[64*c+32 : 64*c+64]
			for l, v := range qs[32*c : 32*c+32] {
				h := qh[l] >> (2 * c)
				lo[l] = float32(d1*float32(v&0x0f|(h&1)<<4)) - min1
				hi[l] = float32(d2*float32(v>>4|(h&2)<<3)) - min2
			}
		}
	}
}

// dequantQ6K decodes block_q6_K, 210 bytes for 256 elements:
//
//	ql      [128]uint8  128 bytes  low 4 bits
//	qh      [64]uint8   64 bytes   high 2 bits
//	scales  [16]int8    16 bytes   signed 8-bit sub-block scales
//	d       f16         2 bytes    super-block scale
//
// Element e = 128h + 32r + l (h 0..1, r 0..3, l 0..31) is in sub-block
// k = 8h + 2r + l/16. Its low 4 bits are the low (r = 0, 1) or high
// (r = 2, 3) nibble of ql[64h + 32*(r%2) + l], its high 2 bits are
// (qh[32h+l] >> 2r) & 3, and q = (low4 | high2<<4) - 32 in -32..31:
// x = d*scales[k] * q.
func dequantQ6K(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		blk := src[b*210 : b*210+210]
		y := dst[b*qk : b*qk+qk]
		ql, qh, sc := blk[0:128], blk[128:192], blk[192:208]
		d := f16At(blk[208:])
		for h := range 2 {
			lq := ql[64*h : 64*h+64]
			hq := qh[32*h : 32*h+32]
			s := sc[8*h : 8*h+8]
			out := y[128*h : 128*h+128]
			for l := range 32 {
				is := l / 16
				hb := hq[l]
				q1 := int(lq[l]&0x0f|(hb&3)<<4) - 32
				q2 := int(lq[l+32]&0x0f|((hb>>2)&3)<<4) - 32
				q3 := int(lq[l]>>4|((hb>>4)&3)<<4) - 32
				q4 := int(lq[l+32]>>4|((hb>>6)&3)<<4) - 32
				out[l] = d * float32(int8(s[is])) * float32(q1)
				out[l+32] = d * float32(int8(s[is+2])) * float32(q2)
				out[l+64] = d * float32(int8(s[is+4])) * float32(q3)
				out[l+96] = d * float32(int8(s[is+6])) * float32(q4)
			}
		}
	}
}

// dequantQ8K decodes block_q8_K, 292 bytes for 256 elements:
//
//	d      float32    4 bytes    scale
//	qs     [256]int8  256 bytes  quants
//	bsums  [16]int16  32 bytes   sums of groups of 16 quants (unused here)
//
// x[i] = d * qs[i].
func dequantQ8K(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		blk := src[b*292 : b*292+292]
		y := dst[b*qk : b*qk+qk]
		d := math.Float32frombits(binary.LittleEndian.Uint32(blk))
		for i, q := range blk[4 : 4+qk] {
			y[i] = d * float32(int8(q))
		}
	}
}
