package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestDotKernels compares the dispatching dot and dot4 (assembly on amd64
// with AVX2) with a float64 reference, for lengths around every tail case.
func TestDotKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	ref := func(a, b []float32) float64 {
		var s float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	for _, n := range []int{1, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 100, 172, 4096 + 5} {
		w, x0, x1, x2, x3 := vec(n), vec(n), vec(n), vec(n), vec(n)
		tol := 1e-5 * math.Sqrt(float64(n)) * 4
		assert.InDelta(t, ref(w, x0), float64(dot(w, x0)), tol, "dot n=%d", n)
		assert.InDelta(t, ref(w, x0), float64(dotGeneric(w, x0)), tol, "dotGeneric n=%d", n)
		a, b, c, d := dot4(w, x0, x1, x2, x3)
		for j, got := range []float32{a, b, c, d} {
			x := [][]float32{x0, x1, x2, x3}[j]
			assert.InDelta(t, ref(w, x), float64(got), tol, "dot4[%d] n=%d", j, n)
		}
	}
}

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := -87.0; x <= 88.0; x += 0.0037 {
		got := float64(expf(float32(x)))
		// Compare against e^(float32(x)), the exact input expf sees.
		want := math.Exp(float64(float32(x)))
		worst = max(worst, math.Abs(got-want)/want)
	}
	assert.Less(t, worst, 3e-7) // about 2.5 float32 ulp
	assert.Equal(t, float32(0), expf(-100))
	assert.True(t, math.IsInf(float64(expf(100)), 1))
	assert.True(t, math.IsNaN(float64(expf(float32(math.NaN())))))
	assert.Equal(t, float32(1), expf(0))
}
