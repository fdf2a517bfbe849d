package cpu

import "encoding/binary"

// Q2_K, Q3_K and Q6_K super-blocks of 256 elements share one numbering:
// element e = 128h + 32j + l (h 0..1, j 0..3, l 0..31) is in activation
// block 4h + j of its super-block and in sub-block 8h + 2j + l/16, each
// sub-block of 16 elements with its own scale. Every type decodes the 32
// quants of one activation block and takes dot16x2 with the two sub-block
// scales.

// dot16x2 returns s0·Σ_{l<16} q[l]·x[l] + s1·Σ_{l≥16} q[l]·x[l].
func dot16x2(q *[32]int8, x []int8, s0, s1 int32) int32 {
	x = x[:32]
	var a, b int32
	for l := range 16 {
		a += int32(q[l]) * int32(x[l])
		b += int32(q[l+16]) * int32(x[l+16])
	}
	return s0*a + s1*b
}

// q3KScales unpacks the 16 signed 6-bit sub-block scales of Q3_K from its
// 12-byte scales field on 32-bit words, as the assembly does (gguf's
// q3KScales is the per-scale rule): with u0, u1, u2 = s[0:4], s[4:8],
// s[8:12] little-endian, the scales 4i..4i+3 are the bytes of
//
//	i = 0: u0 & 0x0f0f0f0f      | (u2 & 0x03030303) << 4
//	i = 1: u1 & 0x0f0f0f0f      | (u2>>2 & 0x03030303) << 4
//	i = 2: u0>>4 & 0x0f0f0f0f   | (u2>>4 & 0x03030303) << 4
//	i = 3: u1>>4 & 0x0f0f0f0f   | (u2>>6 & 0x03030303) << 4
//
// minus 32 each.
func q3KScales(s []byte) (out [16]int8) {
	u0 := binary.LittleEndian.Uint32(s)
	u1 := binary.LittleEndian.Uint32(s[4:])
	u2 := binary.LittleEndian.Uint32(s[8:])
	w := [4]uint32{
		u0&0x0f0f0f0f | (u2&0x03030303)<<4,
		u1&0x0f0f0f0f | (u2>>2&0x03030303)<<4,
		u0>>4&0x0f0f0f0f | (u2>>4&0x03030303)<<4,
		u1>>4&0x0f0f0f0f | (u2>>6&0x03030303)<<4,
	}
	for i := range out {
		out[i] = int8(w[i/4]>>(8*(i%4))) - 32
	}
	return out
}

// qdotQ3_KGo: block_q3_K, 110 bytes for 256 elements:
//
//	hmask   [32]uint8  32 bytes  third bits: bit 4h+j of hmask[l]
//	qs      [64]uint8  64 bytes  low 2 bits: (qs[32h+l] >> 2j) & 3
//	scales  [12]uint8  12 bytes  16 signed 6-bit scales (q3KScales)
//	d       f16        2 bytes   super-block scale
//
// q = low | third bit << 2, minus 4 (−4..3); w = d·scale[k]·q, block sum
// d·dx·Σ_k scale[k]·Σ q·qx.
func qdotQ3_KGo(row []byte, x qvec) float32 {
	var sum float32
	var q [32]int8
	for sb := range len(x.d) / 8 {
		blk := row[sb*110 : sb*110+110 : sb*110+110]
		hmask, qs := blk[0:32], blk[32:96]
		scales := q3KScales(blk[96:108])
		d := f16At(blk[108:])
		for h := range 2 {
			for j := range 4 {
				b := 8*sb + 4*h + j
				for l := range q {
					q[l] = int8(qs[32*h+l]>>(2*j)&3|(hmask[l]>>(4*h+j)&1)<<2) - 4
				}
				k := 8*h + 2*j
				isum := dot16x2(&q, x.qs[b*32:b*32+32], int32(scales[k]), int32(scales[k+1]))
				sum += d * x.d[b] * float32(isum)
			}
		}
	}
	return sum
}

// qdotQ2_KGo: block_q2_K, 84 bytes for 256 elements:
//
//	scales  [16]uint8  16 bytes  sub-block k: scale scales[k]&15, min scales[k]>>4
//	qs      [64]uint8  64 bytes  q = (qs[32h+l] >> 2j) & 3
//	d       f16        2 bytes   super-block scale of the scales
//	dmin    f16        2 bytes   super-block scale of the mins
//
// w = d·sc[k]·q − dmin·m[k]. The mins meet sums of 16 activations, finer
// than qvec's s, so the block sum is
// dx·(d·Σ_k sc[k]·Σ q·qx − dmin·Σ_k m[k]·Σ qx), both sums integer.
func qdotQ2_KGo(row []byte, x qvec) float32 {
	var sum, msum float32
	var q [32]int8
	var ones [32]int8
	for i := range ones {
		ones[i] = 1
	}
	for sb := range len(x.d) / 8 {
		blk := row[sb*84 : sb*84+84 : sb*84+84]
		scales, qs := blk[0:16], blk[16:80]
		d, dmin := f16At(blk[80:]), f16At(blk[82:])
		for h := range 2 {
			for j := range 4 {
				b := 8*sb + 4*h + j
				for l := range q {
					q[l] = int8(qs[32*h+l] >> (2 * j) & 3)
				}
				s0, s1 := scales[8*h+2*j], scales[8*h+2*j+1]
				xs := x.qs[b*32 : b*32+32]
				isum := dot16x2(&q, xs, int32(s0&15), int32(s1&15))
				mins := dot16x2(&ones, xs, int32(s0>>4), int32(s1>>4))
				sum += d * x.d[b] * float32(isum)
				msum += dmin * x.d[b] * float32(mins)
			}
		}
	}
	return sum - msum
}
