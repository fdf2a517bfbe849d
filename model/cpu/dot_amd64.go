package cpu

import (
	"unsafe"

	"github.com/m40llm/m40llm/gguf"
	"golang.org/x/sys/cpu"
)

// useAVX2 selects the assembly kernels (AVX2 and FMA, Haswell and later).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func dot4AVX2(w, x0, x1, x2, x3 *float32, n int, out *[4]float32)

// dot returns Σ a[i]·b[i] over len(a) elements.
func dot(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	if !useAVX2 || n < 8 {
		return dotGeneric(a, b)
	}
	m := n &^ 7
	s := dotAVX2(&a[0], &b[0], m)
	for i := m; i < n; i++ {
		s += a[i] * b[i]
	}
	return s
}

// dot4 returns the dot products of w with four vectors.
func dot4(w, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	n := len(w)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	if !useAVX2 || n < 8 {
		return dot4Generic(w, x0, x1, x2, x3)
	}
	m := n &^ 7
	var out [4]float32
	dot4AVX2(&w[0], &x0[0], &x1[0], &x2[0], &x3[0], m, &out)
	for i := m; i < n; i++ {
		out[0] += w[i] * x0[i]
		out[1] += w[i] * x1[i]
		out[2] += w[i] * x2[i]
		out[3] += w[i] * x3[i]
	}
	return out[0], out[1], out[2], out[3]
}

//go:noescape
func dotF16AVX2(w *uint16, x *float32, n int) float32

// hasFusedDot reports whether rows of type t have a fused dot kernel.
func hasFusedDot(t gguf.Type) bool {
	return useAVX2 && t == gguf.TypeF16
}

// fusedDot returns row · x for a row stored as t (F16; see hasFusedDot),
// without converting it to memory.
func fusedDot(t gguf.Type, row []byte, x []float32) float32 {
	n := len(x)
	switch t {
	case gguf.TypeF16:
		w := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(row))), len(row)/2)[:n]
		m := n &^ 7
		var s float32
		if m > 0 {
			s = dotF16AVX2(&w[0], &x[0], m)
		}
		for i := m; i < n; i++ {
			s += gguf.F16ToF32(w[i]) * x[i]
		}
		return s
	}
	panic("cpu: fusedDot of " + t.String())
}

//go:noescape
func f16ToF32AVX2(dst *float32, src *uint16, n int)

// rowToF32 converts a stored row to float32 in dst with a vector kernel
// and reports true, or reports false when t has none (the caller then
// dequantizes the generic way).
func rowToF32(t gguf.Type, dst []float32, row []byte) bool {
	if !useAVX2 || t != gguf.TypeF16 {
		return false
	}
	n := len(dst)
	src := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(row))), len(row)/2)[:n]
	m := n &^ 7
	if m > 0 {
		f16ToF32AVX2(&dst[0], &src[0], m)
	}
	for i := m; i < n; i++ {
		dst[i] = gguf.F16ToF32(src[i])
	}
	return true
}
