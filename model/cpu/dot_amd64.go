package cpu

import "golang.org/x/sys/cpu"

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
