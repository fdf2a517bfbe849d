package gguf_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
)

// f16Reference decodes binary16 from its fields as IEEE 754 defines them:
// (-1)^s × 2^(e-15) × (1 + m/1024) for 0 < e < 31, (-1)^s × 2^-14 × m/1024
// for e = 0, infinity or NaN for e = 31.
func f16Reference(h uint16) float64 {
	s := 1.0
	if h&0x8000 != 0 {
		s = -1
	}
	e, m := int(h>>10&31), float64(h&1023)
	switch e {
	case 0:
		return s * math.Ldexp(m, -24)
	case 31:
		if m != 0 {
			return math.NaN()
		}
		return math.Inf(int(s))
	}
	return s * math.Ldexp(1024+m, e-25)
}

func isF16NaN(h uint16) bool { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }

func TestF16ToF32AllValues(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		got := gguf.F16ToF32(h)
		want := f16Reference(h)
		if math.IsNaN(want) {
			require.True(t, math.IsNaN(float64(got)), "%#04x", h)
			// Sign and payload survive: the mantissa moves to the top of
			// float32's.
			bits := math.Float32bits(got)
			require.Equal(t, uint32(h>>15), bits>>31, "%#04x sign", h)
			require.Equal(t, uint32(h&0x3ff), bits>>13&0x3ff, "%#04x payload", h)
			continue
		}
		require.Equal(t, float32(want), got, "%#04x", h)
		// Zeros keep their sign.
		require.Equal(t, math.Signbit(want), math.Signbit(float64(got)), "%#04x sign", h)
	}
}

func TestF16RoundTripAllValues(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		back := gguf.F32ToF16(gguf.F16ToF32(h))
		if isF16NaN(h) {
			require.True(t, isF16NaN(back), "%#04x came back as %#04x", h, back)
			require.Equal(t, h&0x8000, back&0x8000, "%#04x sign", h)
			continue
		}
		require.Equal(t, h, back, "%#04x", h)
	}
}

func TestF32ToF16(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"largest finite", 65504, 0x7bff},

		// Half-way points round to the even neighbour.
		{"1+2^-11 half-way, to even 1", 1 + 0x1p-11, 0x3c00},
		{"1+3*2^-11 half-way, to even 1+2^-9", 1 + 0x3p-11, 0x3c02},
		{"just above half-way rounds up", 1 + 0x1p-11 + 0x1p-23, 0x3c01},
		{"just below half-way rounds down", 1 + 0x1p-11 - 0x1p-23, 0x3c00},
		{"2049 half-way, to even 2048", 2049, 0x6800},
		{"2051 half-way, to even 2052", 2051, 0x6802},
		{"2047.5 rounds up into the next binade", 2047.5, 0x6800},
		{"-2049 half-way, to even -2048", -2049, 0xe800},

		// Overflow: 65520 is half-way between 65504 and 2^16 (the next
		// step, out of range), and rounds to even: infinity.
		{"65519 rounds down to 65504", 65519, 0x7bff},
		{"65520 rounds to +Inf", 65520, 0x7c00},
		{"-65520 rounds to -Inf", -65520, 0xfc00},
		{"1e10 overflows", 1e10, 0x7c00},
		{"float32 max overflows", math.MaxFloat32, 0x7c00},
		{"+Inf", float32(math.Inf(1)), 0x7c00},
		{"-Inf", float32(math.Inf(-1)), 0xfc00},

		// Subnormals: multiples of 2^-24.
		{"2^-24 smallest subnormal", 0x1p-24, 0x0001},
		{"-2^-24", -0x1p-24, 0x8001},
		{"2^-25 half-way, to even 0", 0x1p-25, 0x0000},
		{"-2^-25 half-way, to even -0", -0x1p-25, 0x8000},
		{"just above 2^-25 rounds up", 0x1p-25 + 0x1p-40, 0x0001},
		{"3*2^-25 half-way, to even 2*2^-24", 0x3p-25, 0x0002},
		{"5*2^-25 half-way, to even 2*2^-24", 0x5p-25, 0x0002},
		{"2^-26 rounds to 0", 0x1p-26, 0x0000},
		{"float32 subnormal rounds to 0", 0x1p-149, 0x0000},
		{"largest subnormal", 0x3ffp-24, 0x03ff},
		{"1023.5*2^-24 rounds up to the smallest normal", 0x7ffp-25, 0x0400},
		{"2^-14 smallest normal", 0x1p-14, 0x0400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, fmt.Sprintf("%#04x", tt.want), fmt.Sprintf("%#04x", gguf.F32ToF16(tt.in)))
		})
	}

	t.Run("NaN stays NaN", func(t *testing.T) {
		for _, bits := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff} {
			h := gguf.F32ToF16(math.Float32frombits(bits))
			assert.True(t, isF16NaN(h), "%#08x gave %#04x", bits, h)
			assert.Equal(t, uint16(bits>>16&0x8000), h&0x8000, "%#08x sign", bits)
		}
	})
}

// TestF32ToF16Nearest checks, over a sweep of float32 values from 2^-25
// to just below 65520 (both signs), that the result is the nearest binary16
// value, the even one on a tie, measured with the reference decoder.
func TestF32ToF16Nearest(t *testing.T) {
	for bits := uint32(0x33000000); bits < 0x477ff000; bits += 0x1357 {
		for _, sign := range []uint32{0, 1 << 31} {
			f := math.Float32frombits(bits | sign)
			h := gguf.F32ToF16(f)
			got := f16Reference(h)
			err := math.Abs(got - float64(f))
			// neighbours of h (towards and away from zero)
			for _, n := range []uint16{h - 1, h + 1} {
				if n&0x7fff > 0x7bff || (h&0x7fff == 0 && n == h-1) {
					continue
				}
				nerr := math.Abs(f16Reference(n) - float64(f))
				if nerr < err || nerr == err && h&1 == 1 {
					t.Fatalf("%g (%#08x): got %#04x (error %g), %#04x is nearer or even (error %g)", f, bits|sign, h, err, n, nerr)
				}
			}
		}
	}
}

func TestBF16ToF32(t *testing.T) {
	tests := []struct {
		in   uint16
		want float32
	}{
		{0x3f80, 1},
		{0xc000, -2},
		{0x0000, 0},
		{0x4049, 3.140625},
		{0x7f80, float32(math.Inf(1))},
		{0x0001, 0x1p-133},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, gguf.BF16ToF32(tt.in), "%#04x", tt.in)
	}
}
