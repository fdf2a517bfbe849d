package ptx

import (
	"fmt"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/internal/gputest"
)

// benchInputs keeps the random problems across the benchmark's calls.
var benchInputs = map[[3]int]*matmulInputs{}

// BenchmarkMatMulF16 times Y[n, m] = X[n, k] · W[m, k]ᵀ with FP16 W. GB/s
// counts the bytes the product must move at least (W once, X once, Y once:
// 2mk + 4nk + 4nm), the same for every implementation; compare it with the
// card's bandwidth (Tesla M40: 288 GB/s).
func BenchmarkMatMulF16(b *testing.B) {
	ctx, k := testKernels(b)
	impls := []struct {
		name string
		mm   func() (GEMM, func(), error)
	}{
		{"kernels", func() (GEMM, func(), error) { return k, func() {}, nil }},
		{"cublas", func() (GEMM, func(), error) {
			lib := gputest.BLAS(b, ctx)
			var blas *BLAS
			err := ctx.Do(func() error {
				h, err := lib.NewHandle()
				if err != nil {
					return err
				}
				blas = NewBLAS(k, h)
				return nil
			})
			return blas, func() {
				ctx.Do(func() error {
					blas.Close()
					return blas.h.Destroy()
				})
			}, err
		}},
	}
	shapes := []struct{ n, m, k int }{
		{4096, 4096, 4096},
		{1, 4096, 11008},
		{1, 11008, 4096},
	}
	for _, impl := range impls {
		for _, sh := range shapes {
			b.Run(fmt.Sprintf("%s/n=%d,m=%d,k=%d", impl.name, sh.n, sh.m, sh.k), func(b *testing.B) {
				mm, done, err := impl.mm()
				if err != nil {
					b.Fatal(err)
				}
				defer done()
				key := [3]int{sh.n, sh.m, sh.k}
				in := benchInputs[key]
				if in == nil {
					in = newInputs(sh.n, sh.m, sh.k, 7, false)
					benchInputs[key] = in
				}
				var d *device
				if err := ctx.Do(func() error {
					var err error
					if d, err = upload(in); err != nil {
						return err
					}
					// Warm up: module JIT, cuBLAS heuristics, scratch.
					if err := mm.MatMulF16(0, d.y, d.x, d.w, sh.n, sh.m, sh.k); err != nil {
						return err
					}
					return cudadrv.Stream(0).Synchronize()
				}); err != nil {
					b.Fatal(err)
				}
				defer ctx.Do(func() error { d.free(); return nil })
				b.ResetTimer()
				err = ctx.Do(func() error {
					for i := 0; i < b.N; i++ {
						if err := mm.MatMulF16(0, d.y, d.x, d.w, sh.n, sh.m, sh.k); err != nil {
							return err
						}
					}
					return cudadrv.Stream(0).Synchronize()
				})
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				sec := b.Elapsed().Seconds() / float64(b.N)
				flops := 2 * float64(sh.n) * float64(sh.m) * float64(sh.k)
				bytes := 2*float64(sh.m)*float64(sh.k) + 4*float64(sh.n)*float64(sh.k) + 4*float64(sh.n)*float64(sh.m)
				b.ReportMetric(flops/sec/1e9, "GFLOP/s")
				b.ReportMetric(bytes/sec/1e9, "GB/s")
			})
		}
	}
}
