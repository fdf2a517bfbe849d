package gguf_test

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
)

// Binary16 bit patterns of the (exactly representable) scales used below.
const (
	h0125  = 0x3000 // 0.125
	h025   = 0x3400 // 0.25
	h05    = 0x3800 // 0.5
	h1     = 0x3c00 // 1
	hNeg05 = 0xb800 // -0.5
	hNeg1  = 0xbc00 // -1
	hNeg15 = 0xbe00 // -1.5
	hNeg2  = 0xc000 // -2
)

// qtBuf assembles a block field by field, little-endian.
type qtBuf []byte

func (b qtBuf) f16(h uint16) qtBuf  { return binary.LittleEndian.AppendUint16(b, h) }
func (b qtBuf) u32(v uint32) qtBuf  { return binary.LittleEndian.AppendUint32(b, v) }
func (b qtBuf) f32(v float32) qtBuf { return b.u32(math.Float32bits(v)) }
func (b qtBuf) raw(p ...byte) qtBuf { return append(b, p...) }
func (b qtBuf) fill(n int, v byte) qtBuf {
	for range n {
		b = append(b, v)
	}
	return b
}

// seq appends n bytes f(0), f(1), ... f(n-1).
func (b qtBuf) seq(n int, f func(i int) byte) qtBuf {
	for i := range n {
		b = append(b, f(i))
	}
	return b
}

// nibbles appends 16 bytes whose low nibbles are lo(j) and high nibbles
// hi(j): the qs field of the 32-element types, where element j is the low
// nibble of byte j and element j+16 its high nibble.
func (b qtBuf) nibbles(lo, hi func(j int) int) qtBuf {
	return b.seq(16, func(j int) byte { return byte(lo(j)&15 | (hi(j)&15)<<4) })
}

func ident(j int) int   { return j }
func reverse(j int) int { return 15 - j }

// qtFloats returns f(0) ... f(n-1).
func qtFloats(n int, f func(e int) float64) []float32 {
	out := make([]float32, n)
	for e := range out {
		out[e] = float32(f(e))
	}
	return out
}

// packK4 packs eight 6-bit scales and mins into the 12-byte scales field of
// Q4_K and Q5_K as ggml-common.h describes it: bytes 0-3 hold scales 0-3,
// bytes 4-7 mins 0-3 (low 6 bits each); bytes 8-11 hold scale k+4 in the
// low nibble and min k+4 in the high nibble, and the two top bits of scale
// k+4 and min k+4 go to the top two bits of bytes k and k+4.
func packK4(sc, m [8]byte) []byte {
	var p [12]byte
	for k := range 4 {
		p[k] = sc[k] | (sc[k+4]>>4)<<6
		p[k+4] = m[k] | (m[k+4]>>4)<<6
		p[k+8] = sc[k+4]&15 | (m[k+4]&15)<<4
	}
	return p[:]
}

// packQ3K packs sixteen 6-bit values (scale+32) into Q3_K's 12-byte scales
// field: the low four bits of value i go to the low nibble of byte i (i < 8)
// or the high nibble of byte i-8 (i >= 8); its top two bits go to byte
// 8 + i%4 at bit 2*(i/4).
func packQ3K(s6 [16]byte) []byte {
	var p [12]byte
	for i, v := range s6 {
		if i < 8 {
			p[i] |= v & 15
		} else {
			p[i-8] |= (v & 15) << 4
		}
		p[8+i%4] |= (v >> 4) << (2 * (i / 4))
	}
	return p[:]
}

func TestDequantizeHandBuilt(t *testing.T) {
	// Q2_K fields: scale (low nibble) k+1 mod 16, min (high nibble) k/2.
	q2Scales := qtBuf{}.seq(16, func(k int) byte { return byte((k+1)&15 | (k/2)<<4) })
	q2Qs := qtBuf{}.seq(64, func(i int) byte { return byte(i*37 + 11) })
	q2Want := func(d, dmin float64) func(e int) float64 {
		return func(e int) float64 {
			k := e / 16 // sub-block of 16
			q := (int(q2Qs[32*(e/128)+e%32]) >> (2 * ((e / 32) % 4))) & 3
			return d*float64(q2Scales[k]&15)*float64(q) - dmin*float64(q2Scales[k]>>4)
		}
	}

	// Q3_K fields.
	q3S6 := [16]byte{0, 1, 31, 32, 33, 63, 16, 48, 5, 60, 47, 17, 40, 24, 2, 62}
	q3Hmask := qtBuf{}.seq(32, func(l int) byte { return byte(l*29 + 7) })
	q3Qs := qtBuf{}.seq(64, func(i int) byte { return byte(i*53 + 3) })
	q3Want := func(d float64) func(e int) float64 {
		return func(e int) float64 {
			low := (int(q3Qs[32*(e/128)+e%32]) >> (2 * ((e / 32) % 4))) & 3
			high := (int(q3Hmask[e%32]) >> (e / 32)) & 1 // bit e/32 of hmask[e%32]
			q := low - 4*(1-high)
			return d * float64(int(q3S6[e/16])-32) * float64(q)
		}
	}

	// Q4_K / Q5_K fields. Scales and mins of sub-blocks 4-7 are >= 16 so
	// that their top bits, stored apart, matter.
	k4Sc := [8]byte{1, 2, 3, 63, 17, 33, 49, 60}
	k4M := [8]byte{0, 5, 2, 40, 18, 34, 50, 7}
	k4Qs := qtBuf{}.seq(128, func(i int) byte { return byte(i*71 + 5) })
	k4Nibble := func(e int) int { // low nibble for even sub-blocks, high for odd
		v := int(k4Qs[32*(e/64)+e%32])
		if (e/32)%2 == 0 {
			return v & 15
		}
		return v >> 4
	}
	q4KWant := func(d, dmin float64) func(e int) float64 {
		return func(e int) float64 {
			k := e / 32
			return d*float64(k4Sc[k])*float64(k4Nibble(e)) - dmin*float64(k4M[k])
		}
	}
	q5Qh := qtBuf{}.seq(32, func(l int) byte { return byte(l*13 + 1) })
	q5KWant := func(d, dmin float64) func(e int) float64 {
		return func(e int) float64 {
			k := e / 32
			q := k4Nibble(e) + 16*((int(q5Qh[e%32])>>k)&1) // fifth bit: bit k of qh[e%32]
			return d*float64(k4Sc[k])*float64(q) - dmin*float64(k4M[k])
		}
	}

	// Q6_K fields; scales span negative and positive values.
	q6Ql := qtBuf{}.seq(128, func(i int) byte { return byte(i*89 + 17) })
	q6Qh := qtBuf{}.seq(64, func(i int) byte { return byte(i*45 + 200) })
	q6Sc := qtBuf{}.seq(16, func(k int) byte { return byte(int8(k*9 - 70)) })
	q6Want := func(d float64) func(e int) float64 {
		return func(e int) float64 {
			h, r, l := e/128, (e%128)/32, e%32
			low := (int(q6Ql[64*h+32*(r%2)+l]) >> (4 * (r / 2))) & 15
			high := (int(q6Qh[32*h+l]) >> (2 * r)) & 3
			return d * float64(int8(q6Sc[e/16])) * float64(low|high<<4-32)
		}
	}

	// E2M1 as the OCP MX specification defines it: sign, 2 exponent bits
	// (bias 1), 1 mantissa bit; exponent 0 is subnormal (0 or 0.5).
	e2m1 := func(c int) float64 {
		s := 1.0
		if c&8 != 0 {
			s = -1
		}
		exp, man := (c>>1)&3, c&1
		if exp == 0 {
			return s * 0.5 * float64(man)
		}
		return s * math.Ldexp(1+0.5*float64(man), exp-1)
	}
	mxfp4Want := func(e int) func(i int) float64 {
		return func(i int) float64 {
			c := i // codes: lo nibble j, hi nibble 15-j
			if i >= 16 {
				c = 15 - (i - 16)
			}
			return e2m1(c) * math.Ldexp(1, e-127)
		}
	}

	tests := []struct {
		name  string
		typ   gguf.Type
		block []byte
		want  []float32
		spot  map[int]float32 // hand-computed elements, checked in addition
	}{
		{
			name:  "Q4_0 d=0.5 low nibbles ascend, high nibbles descend",
			typ:   gguf.TypeQ4_0,
			block: qtBuf{}.f16(h05).nibbles(ident, reverse),
			want: []float32{
				-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5,
				3.5, 3, 2.5, 2, 1.5, 1, 0.5, 0, -0.5, -1, -1.5, -2, -2.5, -3, -3.5, -4,
			},
		},
		{
			name:  "Q4_0 negative d=-2",
			typ:   gguf.TypeQ4_0,
			block: qtBuf{}.f16(hNeg2).nibbles(func(j int) int { return 15 * (j % 2) }, ident),
			// low: q 0 -> -2*-8 = 16, q 15 -> -2*7 = -14; high: -2*(j-8) = 16-2j
			want: qtFloats(32, func(e int) float64 {
				if e < 16 {
					return []float64{16, -14}[e%2]
				}
				return 16 - 2*float64(e-16)
			}),
		},
		{
			name:  "Q4_1 d=0.25 m=-1.5",
			typ:   gguf.TypeQ4_1,
			block: qtBuf{}.f16(h025).f16(hNeg15).nibbles(ident, reverse),
			want: []float32{
				-1.5, -1.25, -1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.25,
				2.25, 2, 1.75, 1.5, 1.25, 1, 0.75, 0.5, 0.25, 0, -0.25, -0.5, -0.75, -1, -1.25, -1.5,
			},
		},
		{
			name: "Q5_0 d=1 qh=0xAAAA5555: fifth bit on even low, odd high elements",
			typ:  gguf.TypeQ5_0,
			// qh bit i is element i's fifth bit: 0x5555 sets elements 0,2,..14,
			// 0xAAAA sets elements 17,19,..31.
			block: qtBuf{}.f16(h1).u32(0xAAAA5555).nibbles(ident, reverse),
			want: []float32{
				0, -15, 2, -13, 4, -11, 6, -9, 8, -7, 10, -5, 12, -3, 14, -1,
				-1, 14, -3, 12, -5, 10, -7, 8, -9, 6, -11, 4, -13, 2, -15, 0,
			},
		},
		{
			name:  "Q5_0 negative d=-0.5, all high bits of the upper half",
			typ:   gguf.TypeQ5_0,
			block: qtBuf{}.f16(hNeg05).u32(0xFFFF0000).nibbles(func(int) int { return 15 }, func(int) int { return 15 }),
			// lower half q = 15 -> -0.5*(15-16) = 0.5; upper q = 31 -> -0.5*15
			want: qtFloats(32, func(e int) float64 { return []float64{0.5, -7.5}[e/16] }),
		},
		{
			name:  "Q5_1 d=0.5 m=1 qh bits 0 and 31",
			typ:   gguf.TypeQ5_1,
			block: qtBuf{}.f16(h05).f16(h1).u32(0x80000001).nibbles(ident, reverse),
			want: []float32{
				9, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8, 8.5,
				8.5, 8, 7.5, 7, 6.5, 6, 5.5, 5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 9,
			},
		},
		{
			name:  "Q8_0 d=-0.25",
			typ:   gguf.TypeQ8_0,
			block: qtBuf{}.f16(0xb400).seq(31, func(i int) byte { return byte(int8(8*i - 128)) }).raw(127),
			// -0.25 * (8i-128) = 32-2i; the last quant is 127
			want: qtFloats(32, func(e int) float64 {
				if e == 31 {
					return -31.75
				}
				return 32 - 2*float64(e)
			}),
		},
		{
			name:  "IQ4_NL d=0.5 indexes kvalues_iq4nl",
			typ:   gguf.TypeIQ4_NL,
			block: qtBuf{}.f16(h05).nibbles(ident, reverse),
			// 0.5 * {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
			want: []float32{
				-63.5, -52, -41.5, -32.5, -24.5, -17.5, -11, -5, 0.5, 6.5, 12.5, 19, 26.5, 34.5, 44.5, 56.5,
				56.5, 44.5, 34.5, 26.5, 19, 12.5, 6.5, 0.5, -5, -11, -17.5, -24.5, -32.5, -41.5, -52, -63.5,
			},
		},
		{
			name:  "IQ4_NL negative d=-2",
			typ:   gguf.TypeIQ4_NL,
			block: qtBuf{}.f16(hNeg2).nibbles(func(int) int { return 8 }, func(int) int { return 0 }),
			want:  qtFloats(32, func(e int) float64 { return []float64{-2, 254}[e/16] }),
		},
		{
			name:  "MXFP4 e=128: scale 2",
			typ:   gguf.TypeMXFP4,
			block: qtBuf{}.raw(128).nibbles(ident, reverse),
			want: []float32{
				0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
				-12, -8, -6, -4, -3, -2, -1, 0, 12, 8, 6, 4, 3, 2, 1, 0,
			},
		},
		{
			name:  "MXFP4 e=0: float32 subnormal scale 2^-127",
			typ:   gguf.TypeMXFP4,
			block: qtBuf{}.raw(0).nibbles(ident, reverse),
			want:  qtFloats(32, mxfp4Want(0)),
			spot:  map[int]float32{1: 0x1p-128, 7: 0x3p-126},
		},
		{
			name:  "MXFP4 e=131: scale 16",
			typ:   gguf.TypeMXFP4,
			block: qtBuf{}.raw(131).nibbles(ident, reverse),
			want:  qtFloats(32, mxfp4Want(131)),
			spot:  map[int]float32{7: 96, 15: -96},
		},
		{
			name:  "Q8_K d=-0.125, bsums ignored",
			typ:   gguf.TypeQ8_K,
			block: qtBuf{}.f32(-0.125).seq(256, func(i int) byte { return byte(int8(i - 128)) }).fill(32, 0xff),
			want:  qtFloats(256, func(e int) float64 { return -0.125 * float64(e-128) }),
			spot:  map[int]float32{0: 16, 255: -15.875},
		},
		{
			name:  "Q2_K d=0.5 dmin=0.25",
			typ:   gguf.TypeQ2_K,
			block: qtBuf{}.raw(q2Scales...).raw(q2Qs...).f16(h05).f16(h025),
			want:  qtFloats(256, q2Want(0.5, 0.25)),
			// 37: sub-block 2 (scale 3, min 1), qs[5]=196=0b11000100, bits 2-3 = 1:
			//     0.5*3*1 - 0.25*1
			// 200: sub-block 12 (scale 13, min 6), qs[40]=211=0b11010011, bits 4-5 = 1:
			//     0.5*13*1 - 0.25*6
			// 255: sub-block 15 (scale 0, min 7): -0.25*7
			spot: map[int]float32{37: 1.25, 200: 5, 255: -1.75},
		},
		{
			name:  "Q2_K negative d=-1 dmin=-0.5",
			typ:   gguf.TypeQ2_K,
			block: qtBuf{}.raw(q2Scales...).raw(q2Qs...).f16(hNeg1).f16(hNeg05),
			want:  qtFloats(256, q2Want(-1, -0.5)),
			spot:  map[int]float32{37: -2.5, 200: -10, 255: 3.5},
		},
		{
			name:  "Q3_K d=0.25",
			typ:   gguf.TypeQ3_K,
			block: qtBuf{}.raw(q3Hmask...).raw(q3Qs...).raw(packQ3K(q3S6)...).f16(h025),
			want:  qtFloats(256, q3Want(0.25)),
			// 37: scale 31-32 = -1; hmask[5]=152, bit 1 clear; qs[5]=12, bits 2-3 = 3:
			//     q = 3-4 = -1; 0.25*-1*-1
			// 130: scale 5-32 = -27; hmask[2]=65, bit 4 clear; qs[34]=13, bits 0-1 = 1:
			//     q = -3; 0.25*-27*-3
			// 254: scale 62-32 = 30; hmask[30]=109, bit 7 clear; qs[62]=217, bits 6-7 = 3:
			//     q = -1; 0.25*30*-1
			spot: map[int]float32{37: 0.25, 130: 20.25, 254: -7.5},
		},
		{
			name:  "Q3_K negative d=-0.5",
			typ:   gguf.TypeQ3_K,
			block: qtBuf{}.raw(q3Hmask...).raw(q3Qs...).raw(packQ3K(q3S6)...).f16(hNeg05),
			want:  qtFloats(256, q3Want(-0.5)),
			spot:  map[int]float32{37: -0.5, 130: -40.5, 254: 15},
		},
		{
			name: "Q3_K scale unpacking alone (all high bits set, all quants 1, d=1)",
			typ:  gguf.TypeQ3_K,
			block: qtBuf{}.fill(32, 0xff).fill(64, 0x55).
				raw(packQ3K(q3S6)...).f16(h1),
			// Element e shows scale[e/16] - 32.
			want: qtFloats(256, func(e int) float64 {
				return []float64{-32, -31, -1, 0, 1, 31, -16, 16, -27, 28, 15, -15, 8, -8, -30, 30}[e/16]
			}),
		},
		{
			name: "Q3_K hmask alone (scales 1, low bits 0)",
			typ:  gguf.TypeQ3_K,
			block: qtBuf{}.seq(32, func(l int) byte { return 1 << (l % 8) }).fill(64, 0).
				raw(packQ3K([16]byte{33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33})...).f16(h1),
			// hmask[l] has bit l%8 set, so element e has its high bit iff
			// (e%32)%8 == e/32: then q = 0, else q = -4.
			want: qtFloats(256, func(e int) float64 {
				if (e%32)%8 == e/32 {
					return 0
				}
				return -4
			}),
		},
		{
			name:  "Q4_K d=0.5 dmin=0.25",
			typ:   gguf.TypeQ4_K,
			block: qtBuf{}.f16(h05).f16(h025).raw(packK4(k4Sc, k4M)...).raw(k4Qs...),
			want:  qtFloats(256, q4KWant(0.5, 0.25)),
			// 37: sub-block 1 (scale 2, min 5), high nibble of qs[5]=0x68:
			//     0.5*2*6 - 0.25*5
			// 150: sub-block 4 (scale 17, min 18), low nibble of qs[86]=0xdf:
			//     0.5*17*15 - 0.25*18
			// 200: sub-block 6 (scale 49, min 50), low nibble of qs[104]=0xdd:
			//     0.5*49*13 - 0.25*50
			// 255: sub-block 7 (scale 60, min 7), high nibble of qs[127]=0x3e:
			//     0.5*60*3 - 0.25*7
			spot: map[int]float32{37: 4.75, 150: 123, 200: 306, 255: 88.25},
		},
		{
			name:  "Q4_K negative d=-0.5 dmin=-1",
			typ:   gguf.TypeQ4_K,
			block: qtBuf{}.f16(hNeg05).f16(hNeg1).raw(packK4(k4Sc, k4M)...).raw(k4Qs...),
			want:  qtFloats(256, q4KWant(-0.5, -1)),
			spot:  map[int]float32{37: -1, 150: -109.5, 200: -268.5, 255: -83},
		},
		{
			name:  "Q4_K 6-bit scales alone (all quants 1, d=1, dmin=0)",
			typ:   gguf.TypeQ4_K,
			block: qtBuf{}.f16(h1).f16(0).raw(packK4(k4Sc, k4M)...).fill(128, 0x11),
			want:  qtFloats(256, func(e int) float64 { return []float64{1, 2, 3, 63, 17, 33, 49, 60}[e/32] }),
		},
		{
			name:  "Q4_K 6-bit mins alone (all quants 0, d=0, dmin=1)",
			typ:   gguf.TypeQ4_K,
			block: qtBuf{}.f16(0).f16(h1).raw(packK4(k4Sc, k4M)...).fill(128, 0),
			want:  qtFloats(256, func(e int) float64 { return []float64{0, -5, -2, -40, -18, -34, -50, -7}[e/32] }),
		},
		{
			name:  "Q5_K d=0.5 dmin=0.25",
			typ:   gguf.TypeQ5_K,
			block: qtBuf{}.f16(h05).f16(h025).raw(packK4(k4Sc, k4M)...).raw(q5Qh...).raw(k4Qs...),
			want:  qtFloats(256, q5KWant(0.5, 0.25)),
			// 0: sub-block 0 (scale 1, min 0), low nibble of qs[0]=5, qh[0]=1 bit 0 set:
			//     0.5*1*(5+16)
			// 37: sub-block 1, high nibble 6, qh[5]=66 bit 1 set: 0.5*2*22 - 0.25*5
			// 200: sub-block 6, low nibble 13, qh[8]=105 bit 6 set: 0.5*49*29 - 0.25*50
			spot: map[int]float32{0: 10.5, 37: 20.75, 200: 698},
		},
		{
			name:  "Q5_K negative d=-1 dmin=-0.5",
			typ:   gguf.TypeQ5_K,
			block: qtBuf{}.f16(hNeg1).f16(hNeg05).raw(packK4(k4Sc, k4M)...).raw(q5Qh...).raw(k4Qs...),
			want:  qtFloats(256, q5KWant(-1, -0.5)),
			spot:  map[int]float32{0: -21, 37: -41.5, 200: -1396},
		},
		{
			name:  "Q6_K d=0.125",
			typ:   gguf.TypeQ6_K,
			block: qtBuf{}.raw(q6Ql...).raw(q6Qh...).raw(q6Sc...).f16(h0125),
			want:  qtFloats(256, q6Want(0.125)),
			// 37: ql[37]=0xee low nibble 14, qh[5]=169 bits 2-3 = 2: q = 46-32 = 14,
			//     scale[2] = -52: 0.125*-52*14
			// 127: ql[63]=0xf8 high nibble 15, qh[31]=59 bits 6-7 = 0: q = -17,
			//     scale[7] = -7: 0.125*-7*-17
			// 200: ql[72]=0x19 high nibble 1, qh[40]=208 bits 4-5 = 1: q = 17-32 = -15,
			//     scale[12] = 38: 0.125*38*-15
			spot: map[int]float32{37: -91, 127: 14.875, 200: -71.25},
		},
		{
			name:  "Q6_K negative d=-0.5",
			typ:   gguf.TypeQ6_K,
			block: qtBuf{}.raw(q6Ql...).raw(q6Qh...).raw(q6Sc...).f16(hNeg05),
			want:  qtFloats(256, q6Want(-0.5)),
			spot:  map[int]float32{37: 364, 127: -59.5, 200: 285},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, tt.block, tt.typ.TypeSize(), "hand-built block size")
			require.Len(t, tt.want, tt.typ.BlockSize())
			for e, v := range tt.spot {
				require.Equal(t, v, tt.want[e], "spot value %d disagrees with the formula", e)
			}
			got := make([]float32, tt.typ.BlockSize())
			require.NoError(t, gguf.Dequantize(got, tt.block, tt.typ))
			assert.Equal(t, tt.want, got)

			// Two blocks in a row: the second must not read the first's bytes.
			two := append(append([]byte{}, tt.block...), tt.block...)
			got2 := make([]float32, 2*tt.typ.BlockSize())
			require.NoError(t, gguf.Dequantize(got2, two, tt.typ))
			assert.Equal(t, tt.want, got2[tt.typ.BlockSize():])
		})
	}
}

// qtXorshift is Marsaglia's xorshift32, used to make pseudo-random test
// inputs that a C program can reproduce.
type qtXorshift uint32

func (s *qtXorshift) next() uint32 {
	x := uint32(*s)
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	*s = qtXorshift(x)
	return x
}

// qtFNV is FNV-1a 64 over the little-endian bytes of v's float32 values.
func qtFNV(v []float32) uint64 {
	h := fnv.New64a()
	var b [4]byte
	for _, f := range v {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(f))
		h.Write(b[:])
	}
	return h.Sum64()
}

// TestDequantizeMatchesGGML dequantizes pseudo-random blocks of every
// supported quantized type and compares a hash of the result with ggml's
// dequantize_row_* (ggml-quants.c, C, gcc 12 -O2, with and without
// -march=native -ffp-contract=fast: same results) run on the same bytes.
// The block bytes come from xorshift32 seeded with 0x1234567 + 7919*type;
// every f16 scale is then replaced by ±[0.125, 0.25) (bits r&0x83ff|0x3000)
// and Q8_K's float32 scale by ±[2^-7, 2^-6) so that no scale is NaN or Inf.
// MXFP4 keeps its random exponent bytes (any byte is a valid scale).
func TestDequantizeMatchesGGML(t *testing.T) {
	tests := []struct {
		typ      gguf.Type
		blocks   int
		f16At    []int // offsets of f16 scales in a block
		in, want uint64
	}{
		{gguf.TypeQ4_0, 8, []int{0}, 0xa843b85e508c82d9, 0xe7eecdb814a3632f},
		{gguf.TypeQ4_1, 8, []int{0, 2}, 0xf6b3c75147116f28, 0x07b88e7aaeb5942b},
		{gguf.TypeQ5_0, 8, []int{0}, 0xe73651a3acc73234, 0x9d2d769ae6bde1e2},
		{gguf.TypeQ5_1, 8, []int{0, 2}, 0xd339c7220ac4052b, 0x680d517e7d2e3952},
		{gguf.TypeQ8_0, 8, []int{0}, 0xf1a20570b8e8b44f, 0x18afdf318b1eeb41},
		{gguf.TypeQ2_K, 4, []int{80, 82}, 0xa7813bceae40af7d, 0xb400bb760885ca90},
		{gguf.TypeQ3_K, 4, []int{108}, 0x81effb8944d9176b, 0x5f00c1737cb169f6},
		{gguf.TypeQ4_K, 4, []int{0, 2}, 0x168cfb493d771270, 0xfc465daf247fd2b9},
		{gguf.TypeQ5_K, 4, []int{0, 2}, 0x7b28b6e497ab0834, 0xde3a6fbf55c82758},
		{gguf.TypeQ6_K, 4, []int{208}, 0x359b2eadf570f5d9, 0xdf651250ee625ff3},
		{gguf.TypeQ8_K, 4, nil, 0x90d0a090bbaa7269, 0xcc58e313cac6b8e9},
		{gguf.TypeIQ4_NL, 8, []int{0}, 0x73f1e7c53e40a37f, 0x3c0604ad84199e6e},
		{gguf.TypeMXFP4, 8, nil, 0x767b2067e82125f9, 0xa33892ab88b8e8e0},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			ts := tt.typ.TypeSize()
			rs := qtXorshift(0x1234567 + 7919*uint32(tt.typ))
			src := make([]byte, ts*tt.blocks)
			for i := range src {
				src[i] = byte(rs.next() >> 11)
			}
			for b := range tt.blocks {
				blk := src[b*ts:]
				for _, off := range tt.f16At {
					binary.LittleEndian.PutUint16(blk[off:], uint16(rs.next()&0x83ff|0x3000))
				}
				if tt.typ == gguf.TypeQ8_K {
					binary.LittleEndian.PutUint32(blk, rs.next()&0x807fffff|0x3c000000)
				}
			}
			in := make([]float32, len(src)/4)
			for i := range in {
				in[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
			}
			require.Equal(t, fmt.Sprintf("%016x", tt.in), fmt.Sprintf("%016x", qtFNV(in)), "input bytes differ from the C generator's")

			got := make([]float32, tt.blocks*tt.typ.BlockSize())
			require.NoError(t, gguf.Dequantize(got, src, tt.typ))
			assert.Equal(t, fmt.Sprintf("%016x", tt.want), fmt.Sprintf("%016x", qtFNV(got)))
		})
	}
}

func TestCanDequantize(t *testing.T) {
	want := map[gguf.Type]bool{
		gguf.TypeF32: true, gguf.TypeF16: true, gguf.TypeBF16: true,
		gguf.TypeQ4_0: true, gguf.TypeQ4_1: true, gguf.TypeQ5_0: true, gguf.TypeQ5_1: true, gguf.TypeQ8_0: true,
		gguf.TypeQ2_K: true, gguf.TypeQ3_K: true, gguf.TypeQ4_K: true, gguf.TypeQ5_K: true, gguf.TypeQ6_K: true, gguf.TypeQ8_K: true,
		gguf.TypeIQ4_NL: true, gguf.TypeMXFP4: true,
	}
	for _, typ := range gguf.Types() {
		assert.Equal(t, want[typ], typ.CanDequantize(), "%s", typ)
	}
}

func TestDequantizeErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  gguf.Type
		n    int
		src  int
	}{
		{"unknown type", gguf.Type(200), 32, 34},
		{"type without a dequantizer", gguf.TypeIQ2_XXS, 256, 66},
		{"partial block", gguf.TypeQ4_K, 255, 144},
		{"short source", gguf.TypeQ6_K, 256, 209},
		{"long source", gguf.TypeQ4_0, 32, 19},
		{"legacy block size", gguf.TypeQ5_1, 48, 36},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := gguf.Dequantize(make([]float32, tt.n), make([]byte, tt.src), tt.typ)
			assert.Error(t, err)
			err = gguf.DequantizeF16(make([]uint16, tt.n), make([]byte, tt.src), tt.typ)
			assert.Error(t, err)
		})
	}
}

// TestDequantizeF16ErrorCount checks that a partial block is reported with
// the caller's element count, not that of the last 4096-element chunk.
func TestDequantizeF16ErrorCount(t *testing.T) {
	err := gguf.DequantizeF16(make([]uint16, 5000), make([]byte, 20*144), gguf.TypeQ4_K)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "5000 Q4_K elements")
}

// TestDequantizeF16MatchesF32 checks DequantizeF16, which works in chunks,
// against rounding Dequantize's output, over several chunks of K-quants.
func TestDequantizeF16MatchesF32(t *testing.T) {
	for _, typ := range []gguf.Type{gguf.TypeQ4_0, gguf.TypeQ6_K, gguf.TypeQ3_K, gguf.TypeF16} {
		t.Run(typ.String(), func(t *testing.T) {
			n := 5*4096 + 2*256 // not a whole number of chunks
			src := make([]byte, n/typ.BlockSize()*typ.TypeSize())
			rs := qtXorshift(99)
			for i := range src {
				src[i] = byte(rs.next())
			}
			if typ == gguf.TypeF16 { // keep the data finite
				for i := 1; i < len(src); i += 2 {
					src[i] &= 0xbb
				}
			}
			f32 := make([]float32, n)
			require.NoError(t, gguf.Dequantize(f32, src, typ))
			f16 := make([]uint16, n)
			require.NoError(t, gguf.DequantizeF16(f16, src, typ))
			for i := range f32 {
				if gguf.F32ToF16(f32[i]) != f16[i] {
					t.Fatalf("element %d: F16 path %#04x, F32 path %v (%#04x)", i, f16[i], f32[i], gguf.F32ToF16(f32[i]))
				}
			}
		})
	}
}

// TestDequantizeQ8_0Model dequantizes every Q8_0 tensor of the Q8_0
// stories260K and compares it with the same tensor of the F32 file. Both
// come from karpathy's tinyllamas checkpoint (TestQuantizeQ8_0ModelBytes
// shows the Q8_0 file is exactly the reference quantization of these F32
// weights), so the difference is the real quantization error.
//
// Bounds: within a block of 32 with largest magnitude amax, Q8_0 stores
// q = round(x/d) with d = amax/127 and dequantizes with f16(d), so
// |x - f16(d)*q| <= d/2 + 127*|d - f16(d)| <= amax/254 + amax/2048.
// Over the whole model the largest difference is 0.00723, in
// blk.1.attn_q.weight, in a block with amax 1.825 (half a step is 0.00718,
// plus the f16 rounding of d). The 0.0062 quoted in shared/testdata's
// README does not hold for that tensor; the global bound checked here is
// 0.0075.
func TestDequantizeQ8_0Model(t *testing.T) {
	qpath := fixture.Shared(t, "models/tinyllamas-stories-260k-q8_0.gguf")
	qf, err := gguf.Open(qpath)
	require.NoError(t, err)
	defer qf.Close()
	ff, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer ff.Close()

	compared, flat := 0, 0
	var modelMax float64
	for i := range qf.Tensors {
		qt := &qf.Tensors[i]
		if len(qt.Dims) != 2 {
			continue
		}
		t.Run(qt.Name, func(t *testing.T) {
			require.Equal(t, gguf.TypeQ8_0, qt.Type)
			ft, ok := ff.Tensor(qt.Name)
			require.True(t, ok, "F32 twin missing")
			require.Equal(t, gguf.TypeF32, ft.Type)
			require.Equal(t, ft.Dims, qt.Dims)

			// ffn_down has rows of 172 elements: blocks straddle rows, the
			// tensor is one flat run of 11008/32 = 344 blocks.
			isDown := strings.Contains(qt.Name, "ffn_down")
			assert.Equal(t, !isDown, qt.RowAligned())
			if isDown {
				flat++
				assert.Equal(t, int64(344*34), qt.Size)
			}

			got, err := qf.Float32s(qt)
			require.NoError(t, err)
			want, err := ff.Float32s(ft)
			require.NoError(t, err)
			require.Len(t, got, len(want))
			var maxDiff float64
			for b := 0; b < len(want)/32; b++ {
				var amax float64
				for _, v := range want[32*b : 32*b+32] {
					amax = max(amax, math.Abs(float64(v)))
				}
				bound := amax * (1.0/254 + 1.0/2048) * (1 + 1e-6)
				for j := 32 * b; j < 32*b+32; j++ {
					d := math.Abs(float64(got[j]) - float64(want[j]))
					if d > bound {
						t.Errorf("element %d: |%v - %v| = %v exceeds amax/254 + amax/2048 = %v", j, got[j], want[j], d, bound)
					}
					maxDiff = max(maxDiff, d)
				}
			}
			assert.LessOrEqual(t, maxDiff, 0.0075)
			assert.Greater(t, maxDiff, 0.0, "identical data is not a quantization")
			modelMax = max(modelMax, maxDiff)
			compared++
		})
	}
	assert.Equal(t, 37, compared, "2-D tensors compared")
	assert.Equal(t, 5, flat, "flat (row-straddling) ffn_down tensors")
	t.Logf("largest difference over the model: %.6f", modelMax)
}

// BenchmarkDequantize measures dequantization speed per type, in MB/s of
// float32 output (4 bytes per element).
func BenchmarkDequantize(b *testing.B) {
	const n = 1 << 20
	dst := make([]float32, n)
	for _, typ := range gguf.Types() {
		if !typ.CanDequantize() {
			continue
		}
		src := make([]byte, n/typ.BlockSize()*typ.TypeSize())
		rs := qtXorshift(7)
		for i := range src {
			src[i] = byte(rs.next())
		}
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := gguf.Dequantize(dst, src, typ); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
