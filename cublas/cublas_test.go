package cublas_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/internal/gputest"
)

// GemmEx in FP32 (A, B and C R32F, CUBLAS_COMPUTE_32F) on a small
// column-major problem against a float64 reference. (GemmEx with FP16
// storage is tested, in its row-major use, by package ptx.)
func TestGemmEx(t *testing.T) {
	ctx := gputest.Context(t)
	lib := gputest.BLAS(t, ctx)
	major, minor, patch := lib.Version()
	t.Logf("cuBLAS %d.%d.%d from %s", major, minor, patch, lib.Path())

	// Column-major: A is m×k (lda = m), B is k×n (ldb = k), C is m×n (ldc = m).
	const m, n, k = 37, 23, 51
	r := rand.New(rand.NewPCG(1, 2))
	a := make([]float32, m*k)
	b := make([]float32, k*n)
	for i := range a {
		a[i] = 2*r.Float32() - 1
	}
	for i := range b {
		b[i] = 2*r.Float32() - 1
	}
	ref := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for l := 0; l < k; l++ {
				s += float64(a[l*m+i]) * float64(b[j*k+l])
			}
			ref[j*m+i] = s
		}
	}

	var got []float32
	err := ctx.Do(func() error {
		h, err := lib.NewHandle()
		if err != nil {
			return err
		}
		defer h.Destroy()
		if err := h.SetStream(0); err != nil {
			return err
		}
		var bufs [3]cudadrv.DevicePtr
		defer func() {
			for _, p := range bufs {
				cudadrv.MemFree(p)
			}
		}()
		for i, bytes := range []int{4 * len(a), 4 * len(b), 4 * len(ref)} {
			if bufs[i], err = cudadrv.MemAlloc(bytes); err != nil {
				return err
			}
		}
		da, db, dc := bufs[0], bufs[1], bufs[2]
		if err := cudadrv.CopyToDevice(da, a); err != nil {
			return err
		}
		if err := cudadrv.CopyToDevice(db, b); err != nil {
			return err
		}
		if err := cudadrv.MemsetD32(dc, 0x7fc00000, len(ref)); err != nil { // NaN: every element must be written
			return err
		}
		if err := h.GemmEx(cublas.OpN, cublas.OpN, m, n, k, 1, da, cublas.R32F, m, db, cublas.R32F, k, 0,
			dc, cublas.R32F, m, cublas.Compute32F, cublas.GemmDefault); err != nil {
			return err
		}
		got = make([]float32, len(ref))
		if err := cudadrv.CopyFromDevice(got, dc); err != nil {
			return err
		}

		// A bad leading dimension is a typed error, not a crash.
		err = h.GemmEx(cublas.OpN, cublas.OpN, m, n, k, 1, da, cublas.R32F, 1, db, cublas.R32F, k, 0,
			dc, cublas.R32F, m, cublas.Compute32F, cublas.GemmDefault)
		if !errors.Is(err, cublas.ErrInvalidValue) {
			t.Errorf("GemmEx with lda < m = %v, want ErrInvalidValue", err)
		} else {
			t.Logf("lda < m: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var num, den float64
	for i, g := range got {
		if math.IsNaN(float64(g)) {
			t.Fatalf("NaN at %d", i)
		}
		num += (float64(g) - ref[i]) * (float64(g) - ref[i])
		den += ref[i] * ref[i]
	}
	if e := math.Sqrt(num / den); !(e < 1e-5) {
		t.Fatalf("relative error %.3g, want < 1e-5", e)
	}
}
