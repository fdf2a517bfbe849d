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

// Sgemm and GemmStridedBatchedEx on small column-major problems against a
// float64 reference. (GemmEx with FP16 storage is tested, in its row-major
// use, by package ptx.)
func TestGemm(t *testing.T) {
	ctx := gputest.Context(t)
	lib := gputest.BLAS(t, ctx)
	major, minor, patch := lib.Version()
	t.Logf("cuBLAS %d.%d.%d from %s", major, minor, patch, lib.Path())

	// Column-major: A is m×k (lda = m), B is k×n (ldb = k), C is m×n (ldc = m).
	const m, n, k, batch = 37, 23, 51, 3
	r := rand.New(rand.NewPCG(1, 2))
	a := make([]float32, batch*m*k)
	b := make([]float32, batch*k*n)
	for i := range a {
		a[i] = 2*r.Float32() - 1
	}
	for i := range b {
		b[i] = 2*r.Float32() - 1
	}
	ref := make([]float64, batch*m*n)
	for p := 0; p < batch; p++ {
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for l := 0; l < k; l++ {
					s += float64(a[p*m*k+l*m+i]) * float64(b[p*k*n+j*k+l])
				}
				ref[p*m*n+j*m+i] = s
			}
		}
	}
	check := func(name string, got []float32, want []float64) {
		t.Helper()
		var num, den float64
		for i, g := range got {
			if math.IsNaN(float64(g)) {
				t.Fatalf("%s: NaN at %d", name, i)
			}
			num += (float64(g) - want[i]) * (float64(g) - want[i])
			den += want[i] * want[i]
		}
		if e := math.Sqrt(num / den); !(e < 1e-5) {
			t.Fatalf("%s: relative error %.3g", name, e)
		}
	}

	err := ctx.Do(func() error {
		h, err := lib.NewHandle()
		if err != nil {
			return err
		}
		defer h.Destroy()
		if v, err := h.Version(); err != nil || v/10000 != major {
			t.Errorf("Handle.Version = %d, %v (library major %d)", v, err, major)
		}
		if err := h.SetMathMode(cublas.DefaultMath); err != nil {
			return err
		}
		if err := h.SetStream(0); err != nil {
			return err
		}
		da, _ := cudadrv.MemAlloc(4 * len(a))
		db, _ := cudadrv.MemAlloc(4 * len(b))
		dc, err := cudadrv.MemAlloc(4 * len(ref))
		if err != nil {
			return err
		}
		defer cudadrv.MemFree(da)
		defer cudadrv.MemFree(db)
		defer cudadrv.MemFree(dc)
		if err := cudadrv.CopyToDevice(da, a); err != nil {
			return err
		}
		if err := cudadrv.CopyToDevice(db, b); err != nil {
			return err
		}
		got := make([]float32, len(ref))

		if err := cudadrv.MemsetD32(dc, 0x7fc00000, len(ref)); err != nil {
			return err
		}
		if err := h.Sgemm(cublas.OpN, cublas.OpN, m, n, k, 1, da, m, db, k, 0, dc, m); err != nil {
			return err
		}
		if err := cudadrv.CopyFromDevice(got[:m*n], dc); err != nil {
			return err
		}
		check("Sgemm", got[:m*n], ref[:m*n])

		if err := cudadrv.MemsetD32(dc, 0x7fc00000, len(ref)); err != nil {
			return err
		}
		if err := h.GemmStridedBatchedEx(cublas.OpN, cublas.OpN, m, n, k, 1,
			da, cublas.R32F, m, m*k, db, cublas.R32F, k, k*n, 0,
			dc, cublas.R32F, m, m*n, batch, cublas.Compute32F, cublas.GemmDefault); err != nil {
			return err
		}
		if err := cudadrv.CopyFromDevice(got, dc); err != nil {
			return err
		}
		check("GemmStridedBatchedEx", got, ref)

		// A bad leading dimension is a typed error, not a crash.
		err = h.Sgemm(cublas.OpN, cublas.OpN, m, n, k, 1, da, 1, db, k, 0, dc, m)
		if !errors.Is(err, cublas.ErrInvalidValue) {
			t.Errorf("Sgemm with lda < m = %v, want ErrInvalidValue", err)
		} else {
			t.Logf("lda < m: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
