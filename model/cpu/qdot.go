package cpu

import (
	"encoding/binary"
	"math"

	"github.com/m40llm/m40llm/gguf"
)

// Integer dot products of quantized weight rows with activations quantized
// to 8 bits. A matrix product quantizes each activation row once (qvec) and
// then takes, for every weight block, the exact integer sum of the products
// of the two sets of quants; only the block's scales are float. The result
// differs from the dot product of the dequantized row with the float
// activations by the activation quantization error alone (≤ d/2 per
// element, d = the block's amax/127).
//
// Activation layout (qvec), one row of k elements, k a multiple of 32:
//
//	qs  [k]int8        quants in -127..127; element 32b+i is qs[32b+i]
//	d   [k/32]float32  block scales: x[32b+i] ≈ d[b]·qs[32b+i]
//	s   [k/32]float32  d[b]·Σ_i qs[32b+i], for the weight types with a min
//
// The kernels in this file, qdot32.go and qdotk.go are the portable
// reference; the assembly ones (qdot_amd64.s) compute the same integer sums
// per block and differ only in the order of the float additions.

// qblock is the number of elements sharing one activation scale.
const qblock = 32

// qvec is one quantized activation row (layout above).
type qvec struct {
	qs   []int8
	d, s []float32
}

// qrows holds n quantized activation rows of k elements in one allocation
// reused from call to call.
type qrows struct {
	k    int
	qs   []int8
	d, s []float32
}

// reset makes room for n rows of k elements, growing the buffers only when
// they are too small.
func (q *qrows) reset(n, k int) {
	q.k = k
	if cap(q.qs) < n*k {
		q.qs = make([]int8, n*k)
		q.d = make([]float32, n*k/qblock)
		q.s = make([]float32, n*k/qblock)
	}
}

// row returns row i.
func (q *qrows) row(i int) qvec {
	k, nb := q.k, q.k/qblock
	return qvec{q.qs[i*k : (i+1)*k : (i+1)*k], q.d[i*nb : (i+1)*nb : (i+1)*nb], q.s[i*nb : (i+1)*nb : (i+1)*nb]}
}

// quantizeRowGeneric quantizes x (len a multiple of 32) into dst:
//
//	amax = max |x[i]| over the block, d = amax/127
//	q[i] = x[i]·(127/amax) rounded half away from zero (0 when amax = 0)
//
// A NaN in a block makes its d NaN, so it reaches every product. This is
// the portable reference; quantizeRowAVX2 computes the same bits (the same
// float32 operations, each rounded once).
func quantizeRowGeneric(dst qvec, x []float32) {
	for b := range len(x) / qblock {
		xb := x[b*qblock : b*qblock+qblock : b*qblock+qblock]
		qb := dst.qs[b*qblock : b*qblock+qblock : b*qblock+qblock]
		// The magnitudes compare as their bit patterns; a NaN's are above
		// every number's, so a NaN becomes amax.
		var abits uint32
		for _, v := range xb {
			abits = max(abits, math.Float32bits(v)&^(1<<31))
		}
		amax := math.Float32frombits(abits)
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		var sum int32
		for j, v := range xb {
			// f is rounded before the addition: no FMA.
			f := float32(v * id)
			half := math.Float32frombits(math.Float32bits(f)&(1<<31) | 0x3f000000) // ±0.5
			q := int8(int32(f + half))
			qb[j] = q
			sum += int32(q)
		}
		d := amax / 127
		dst.d[b] = d
		dst.s[b] = d * float32(sum)
	}
}

// hasQDot reports whether rows of type t have an integer dot kernel.
func hasQDot(t gguf.Type) bool {
	switch t {
	case gguf.TypeQ4_0, gguf.TypeQ4_1, gguf.TypeQ5_0, gguf.TypeQ5_1, gguf.TypeIQ4_NL, gguf.TypeQ8_0,
		gguf.TypeQ2_K, gguf.TypeQ3_K, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K:
		return true
	}
	return false
}

// qdotGeneric returns row · x for a row stored as t (see hasQDot) in
// portable Go.
func qdotGeneric(t gguf.Type, row []byte, x qvec) float32 {
	switch t {
	case gguf.TypeQ4_0:
		return qdot32Go(&q4_0Layout, row, x)
	case gguf.TypeQ4_1:
		return qdot32Go(&q4_1Layout, row, x)
	case gguf.TypeQ5_0:
		return qdot32Go(&q5_0Layout, row, x)
	case gguf.TypeQ5_1:
		return qdot32Go(&q5_1Layout, row, x)
	case gguf.TypeIQ4_NL:
		return qdot32Go(&iq4nlLayout, row, x)
	case gguf.TypeQ8_0:
		return qdotQ8_0Go(row, x)
	case gguf.TypeQ2_K:
		return qdotQ2_KGo(row, x)
	case gguf.TypeQ3_K:
		return qdotQ3_KGo(row, x)
	case gguf.TypeQ4_K:
		return qdotQ45_KGo(row, x, false)
	case gguf.TypeQ5_K:
		return qdotQ45_KGo(row, x, true)
	case gguf.TypeQ6_K:
		return qdotQ6_KGo(row, x)
	}
	panic("cpu: qdot of " + t.String())
}

func f16At(b []byte) float32 { return gguf.F16ToF32(binary.LittleEndian.Uint16(b)) }

// qdotQ8_0Go: block_q8_0, 34 bytes for 32 elements:
//
//	d   f16       2 bytes   scale
//	qs  [32]int8  32 bytes  quants
//
// w = d·q; block sum d·dx·Σ q·qx.
func qdotQ8_0Go(row []byte, x qvec) float32 {
	var sum float32
	for b, dx := range x.d {
		blk := row[b*34 : b*34+34 : b*34+34]
		xs := x.qs[b*32 : b*32+32 : b*32+32]
		var isum int32
		for j, q := range blk[2:34] {
			isum += int32(int8(q)) * int32(xs[j])
		}
		sum += f16At(blk) * dx * float32(isum)
	}
	return sum
}

// scalesMinsK4 unpacks the eight 6-bit scales and mins of a Q4_K/Q5_K
// super-block from its 12-byte scales field s (gguf's scaleMinK4 for all
// eight sub-blocks, on 32-bit words as the assembly does):
//
//	u0, u1, u2 = s[0:4], s[4:8], s[8:12] little-endian
//	sc[0:4] = u0 & 0x3f3f3f3f
//	sc[4:8] = u2 & 0x0f0f0f0f | (u0>>6 & 0x03030303) << 4
//	m[0:4]  = u1 & 0x3f3f3f3f
//	m[4:8]  = u2>>4 & 0x0f0f0f0f | (u1>>6 & 0x03030303) << 4
func scalesMinsK4(s []byte) (sc, m uint64) {
	u0 := binary.LittleEndian.Uint32(s)
	u1 := binary.LittleEndian.Uint32(s[4:])
	u2 := binary.LittleEndian.Uint32(s[8:])
	sc = uint64(u0&0x3f3f3f3f) | uint64(u2&0x0f0f0f0f|(u0>>6&0x03030303)<<4)<<32
	m = uint64(u1&0x3f3f3f3f) | uint64(u2>>4&0x0f0f0f0f|(u1>>6&0x03030303)<<4)<<32
	return sc, m
}

// qdotQ45_KGo: block_q4_K (five false), 144 bytes for 256 elements, and
// block_q5_K (five true), 176 bytes:
//
//	d       f16         2 bytes    super-block scale of the scales
//	dmin    f16         2 bytes    super-block scale of the mins
//	scales  [12]uint8   12 bytes   8 6-bit scales and mins (scalesMinsK4)
//	qh      [32]uint8   32 bytes   Q5_K only: bit j of qh[l] is the fifth
//	                               bit of element l of sub-block j
//	qs      [128]uint8  128 bytes  sub-block 2c: low nibbles of qs[32c:32c+32],
//	                               sub-block 2c+1: high nibbles
//
// w = d·sc[j]·q − dmin·m[j] for sub-block j, which is activation block
// 8·super + j: its sum is d·sc[j]·dx·Σ q·qx − dmin·m[j]·s.
func qdotQ45_KGo(row []byte, x qvec, five bool) float32 {
	size, qsOff := 144, 16
	if five {
		size, qsOff = 176, 48
	}
	var sum, msum float32
	for sb := range len(x.d) / 8 {
		blk := row[sb*size : sb*size+size : sb*size+size]
		d, dmin := f16At(blk), f16At(blk[2:])
		sc, m := scalesMinsK4(blk[4:16])
		for c := range 4 {
			qs := blk[qsOff+32*c : qsOff+32*c+32]
			j := 2 * c
			xlo := x.qs[(8*sb+j)*32 : (8*sb+j+1)*32]
			xhi := x.qs[(8*sb+j+1)*32 : (8*sb+j+2)*32]
			var lo, hi int32
			for l, q := range qs {
				var h5lo, h5hi int32
				if five {
					h := blk[16+l] >> j
					h5lo, h5hi = int32(h&1)<<4, int32(h&2)<<3
				}
				lo += (int32(q&15) | h5lo) * int32(xlo[l])
				hi += (int32(q>>4) | h5hi) * int32(xhi[l])
			}
			for n, isum := range [2]int32{lo, hi} {
				k := j + n
				s := float32(uint8(sc >> (8 * k)))
				mm := float32(uint8(m >> (8 * k)))
				sum += d * s * x.d[8*sb+k] * float32(isum)
				msum += dmin * mm * x.s[8*sb+k]
			}
		}
	}
	return sum - msum
}

// qdotQ6_KGo: block_q6_K, 210 bytes for 256 elements:
//
//	ql      [128]uint8  128 bytes  low 4 bits
//	qh      [64]uint8   64 bytes   high 2 bits
//	scales  [16]int8    16 bytes   signed sub-block scales (16 elements each)
//	d       f16         2 bytes    super-block scale
//
// Element e = 128h + 32r + l (h 0..1, r 0..3, l 0..31) is in activation
// block 4h + r and sub-block 8h + 2r + l/16; its low 4 bits are the low
// (r = 0, 1) or high (r = 2, 3) nibble of ql[64h + 32(r%2) + l], its high
// two bits (qh[32h+l] >> 2r) & 3, and q = (low | high<<4) − 32:
// w = d·scales[k]·q; block sum d·dx·Σ_k scales[k]·Σ q·qx.
func qdotQ6_KGo(row []byte, x qvec) float32 {
	var sum float32
	var q [32]int8
	for sb := range len(x.d) / 8 {
		blk := row[sb*210 : sb*210+210 : sb*210+210]
		ql, qh, scales := blk[0:128], blk[128:192], blk[192:208]
		d := f16At(blk[208:])
		for h := range 2 {
			for r := range 4 {
				b := 8*sb + 4*h + r
				lq := ql[64*h+32*(r%2) : 64*h+32*(r%2)+32]
				shift := uint(4 * (r / 2))
				for l := range q {
					q[l] = int8(lq[l]>>shift&15|(qh[32*h+l]>>(2*r)&3)<<4) - 32
				}
				k := 8*h + 2*r
				isum := dot16x2(&q, x.qs[b*32:b*32+32], int32(int8(scales[k])), int32(int8(scales[k+1])))
				sum += d * x.d[b] * float32(isum)
			}
		}
	}
	return sum
}
