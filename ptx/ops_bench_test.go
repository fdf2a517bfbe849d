package ptx

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
)

// graphBench times replays of a graph that runs launch(i) for i <
// perGraph on a private stream, and reports the time per launch. Weights
// are rotated by the caller over more memory than the L2 cache holds, so
// that every launch reads them from DRAM, as a decode step does.
func graphBench(b *testing.B, ctx *cudadrv.Context, perGraph int, launch func(s cudadrv.Stream, i int) error) float64 {
	b.Helper()
	var sec float64
	err := ctx.Do(func() error {
		s, err := cudadrv.NewStream()
		if err != nil {
			return err
		}
		defer s.Destroy()
		exec, err := s.Capture(func() error {
			for i := range perGraph {
				if err := launch(s, i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		defer exec.Destroy()
		if err := exec.Launch(s); err != nil { // warm-up
			return err
		}
		if err := s.Synchronize(); err != nil {
			return err
		}
		start, _ := cudadrv.NewEvent()
		end, _ := cudadrv.NewEvent()
		defer start.Destroy()
		defer end.Destroy()
		b.ResetTimer()
		start.Record(s)
		for range b.N {
			if err := exec.Launch(s); err != nil {
				return err
			}
		}
		end.Record(s)
		if err := end.Synchronize(); err != nil {
			return err
		}
		b.StopTimer()
		d, err := cudadrv.Elapsed(start, end)
		sec = d.Seconds() / float64(b.N*perGraph)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return sec
}

// randomHalves fills n FP16 values in [-1, 1] at p.
func randomHalves(p cudadrv.DevicePtr, n int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 1))
	h := make([]uint16, n)
	for i := range h {
		h[i] = gguf.F32ToF16(2*r.Float32() - 1)
	}
	return cudadrv.CopyToDevice(p, h)
}

func randomFloats(p cudadrv.DevicePtr, n int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 2))
	f := make([]float32, n)
	for i := range f {
		f[i] = 2*r.Float32() - 1
	}
	return cudadrv.CopyToDevice(p, f)
}

// BenchmarkMatVec times the decode products (MatVec and GateUp) in CUDA
// graphs, on the shapes of Llama 2 7B and TinyLlama, for one row of X and
// for batches. GB/s counts the
// weight bytes (the activations are a few KB); compare with the card's
// bandwidth (Tesla M40: 288 GB/s; H100 80GB HBM3: 3352 GB/s).
func BenchmarkMatVec(b *testing.B) {
	ctx, k := testKernels(b)
	shapes := []struct {
		name    string
		n, m, k int
		gateup  bool
	}{
		{"7b-qkv", 1, 12288, 4096, false}, {"7b-wo", 1, 4096, 4096, false},
		{"7b-gateup", 1, 11008, 4096, true}, {"7b-down", 1, 4096, 11008, false},
		{"7b-output", 1, 32000, 4096, false},
		{"tiny-qkv", 1, 2560, 2048, false}, {"tiny-wo", 1, 2048, 2048, false},
		{"tiny-gateup", 1, 5632, 2048, true}, {"tiny-down", 1, 2048, 5632, false},
		// Batched decode (the server's continuous batching): one step of n
		// sequences reads the same weights as one sequence.
		{"7b-wo", 2, 4096, 4096, false}, {"7b-wo", 4, 4096, 4096, false},
		{"7b-wo", 8, 4096, 4096, false}, {"7b-wo", 16, 4096, 4096, false},
		{"7b-qkv", 8, 12288, 4096, false}, {"7b-gateup", 8, 11008, 4096, true},
		{"7b-gateup", 16, 11008, 4096, true}, {"7b-down", 8, 4096, 11008, false},
		{"tiny-qkv", 8, 2560, 2048, false}, {"tiny-wo", 8, 2048, 2048, false},
		{"tiny-gateup", 8, 5632, 2048, true}, {"tiny-down", 8, 2048, 5632, false},
	}
	for _, sh := range shapes {
		b.Run(fmt.Sprintf("%s/n=%d,m=%d,k=%d", sh.name, sh.n, sh.m, sh.k), func(b *testing.B) {
			mats := 1
			if sh.gateup {
				mats = 2
			}
			wbytes := 2 * sh.m * sh.k * mats
			copies := max(2, int(math.Ceil(256e6/float64(wbytes))))
			var w, x, y, y2 cudadrv.DevicePtr
			err := ctx.Do(func() error {
				var err error
				if w, err = cudadrv.MemAlloc(wbytes * copies); err != nil {
					return err
				}
				if x, err = cudadrv.MemAlloc(4 * sh.n * sh.k); err != nil {
					return err
				}
				if y, err = cudadrv.MemAlloc(4 * sh.n * sh.m); err != nil {
					return err
				}
				if y2, err = cudadrv.MemAlloc(4 * sh.n * sh.m); err != nil {
					return err
				}
				if err := randomHalves(w, wbytes/2, 1); err != nil {
					return err
				}
				for c := 1; c < copies; c++ {
					if err := cudadrv.MemcpyDtoD(w.Offset(c*wbytes), w, wbytes); err != nil {
						return err
					}
				}
				return randomFloats(x, sh.n*sh.k, 2)
			})
			if err != nil {
				b.Fatal(err)
			}
			defer ctx.Do(func() error {
				for _, p := range []cudadrv.DevicePtr{w, x, y, y2} {
					cudadrv.MemFree(p)
				}
				return nil
			})
			sec := graphBench(b, ctx, copies, func(s cudadrv.Stream, i int) error {
				wi := w.Offset(i * wbytes)
				if sh.gateup {
					return k.GateUp(s, y, y2, x, wi, wi.Offset(wbytes/2), sh.n, sh.m, sh.k)
				}
				return k.MatVec(s, x, sh.n, sh.k, MatVecOut{Y: y, W: wi, M: sh.m})
			})
			b.ReportMetric(sec*1e6, "µs/op")
			b.ReportMetric(float64(wbytes)/sec/1e9, "GB/s")
		})
	}
}

// BenchmarkAttnDecode times split-KV decode attention for one query row at
// a given position.
func BenchmarkAttnDecode(b *testing.B) {
	ctx, k := testKernels(b)
	cases := []struct {
		name                     string
		heads, kv, hd, ctxLen, p int
	}{
		{"7b", 32, 32, 128, 512, 128}, {"7b", 32, 32, 128, 4096, 4000},
		{"tiny", 32, 4, 64, 512, 128}, {"tiny", 32, 4, 64, 2048, 2000},
		{"llama3-8b", 32, 8, 128, 8192, 8000},
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("%s/ctx=%d,pos=%d", c.name, c.ctxLen, c.p), func(b *testing.B) {
			a := &Attention{Heads: c.heads, KVHeads: c.kv, HeadDim: c.hd, ValueDim: c.hd, Scale: 0.1,
				Cache: KVCache{Ctx: c.ctxLen, KCols: c.kv * c.hd, VCols: c.kv * c.hd}}
			plan := a.PlanDecode(1, 132)
			cacheElems := c.ctxLen * c.kv * c.hd
			var kc, vc, q, dst, part, cnt, meta cudadrv.DevicePtr
			err := ctx.Do(func() error {
				var err error
				for _, al := range []struct {
					p     *cudadrv.DevicePtr
					bytes int
				}{{&kc, 2 * cacheElems}, {&vc, 2 * cacheElems}, {&q, 4 * c.heads * c.hd}, {&dst, 4 * c.heads * c.hd},
					{&part, 4 * a.PartialElems(1, plan)}, {&cnt, 4 * a.Counters(1, plan)}, {&meta, 8}} {
					if *al.p, err = cudadrv.MemAlloc(al.bytes); err != nil {
						return err
					}
				}
				if err := randomHalves(kc, cacheElems, 3); err != nil {
					return err
				}
				if err := randomHalves(vc, cacheElems, 4); err != nil {
					return err
				}
				if err := randomFloats(q, c.heads*c.hd, 5); err != nil {
					return err
				}
				if err := cudadrv.MemsetD8(cnt, 0, 4*a.Counters(1, plan)); err != nil {
					return err
				}
				return cudadrv.CopyToDevice(meta, []int32{0, int32(c.p)}) // seq, pos
			})
			if err != nil {
				b.Fatal(err)
			}
			defer ctx.Do(func() error {
				for _, p := range []cudadrv.DevicePtr{kc, vc, q, dst, part, cnt, meta} {
					cudadrv.MemFree(p)
				}
				return nil
			})
			a.Cache.K, a.Cache.V = kc, vc
			sec := graphBench(b, ctx, 20, func(s cudadrv.Stream, _ int) error {
				return k.AttnDecode(s, a, plan, dst, part, cnt, q, meta, meta.Offset(4), 1)
			})
			kvBytes := 2 * 2 * (c.p + 1) * c.kv * c.hd
			b.ReportMetric(sec*1e6, "µs/op")
			b.ReportMetric(float64(kvBytes)/sec/1e9, "GB/s")
			b.ReportMetric(float64(plan.Splits), "splits")
		})
	}
}

// BenchmarkMatVecQ times the quantized products on 7B shapes (the weights
// rotated through copies larger than the L2, random bytes: every quant and
// scale is as costly as any other) and reports the bytes of weights read
// per second. Every type runs the one-row shapes; the common ones (Q4_0,
// Q8_0, Q4_K, Q5_K, Q6_K) the batched ones too.
func BenchmarkMatVecQ(b *testing.B) {
	ctx, k := testKernels(b)
	for qt := range numQuantTypes {
		common := qt == QuantQ4_0 || qt == QuantQ8_0 || qt == QuantQ4_K || qt == QuantQ5_K || qt == QuantQ6_K
		for _, sh := range []struct {
			name    string
			n, m, k int
		}{
			{"7b-wo", 1, 4096, 4096}, {"7b-up", 1, 11008, 4096}, {"7b-down", 1, 4096, 11008},
			{"7b-output", 1, 32000, 4096}, {"7b-wo", 4, 4096, 4096}, {"7b-wo", 8, 4096, 4096}, {"7b-wo", 16, 4096, 4096},
			{"7b-gateup", 1, 11008, 4096}, {"7b-gateup", 8, 11008, 4096},
		} {
			gateUp := sh.name == "7b-gateup"
			if (sh.n > 1 || gateUp) && !common {
				continue
			}
			if sh.k%qt.BlockSize() != 0 {
				continue
			}
			b.Run(fmt.Sprintf("%s/%s/n=%d,m=%d,k=%d", qt, sh.name, sh.n, sh.m, sh.k), func(b *testing.B) {
				sizes := qt.PlaneBytes(int64(sh.m), int64(sh.k))
				var offs [3]int
				wbytes := 0
				for j, n := range sizes {
					offs[j] = wbytes
					wbytes += (int(n) + 255) &^ 255
				}
				copies := max(2, int(math.Ceil(256e6/float64(wbytes))))
				var q, x, y cudadrv.DevicePtr
				err := ctx.Do(func() error {
					var err error
					if q, err = cudadrv.MemAlloc(wbytes * copies); err != nil {
						return err
					}
					if x, err = cudadrv.MemAlloc(4 * sh.n * sh.k); err != nil {
						return err
					}
					if y, err = cudadrv.MemAlloc(4 * sh.n * sh.m); err != nil {
						return err
					}
					// Random halves are finite scales and arbitrary quants.
					if err := randomHalves(q, wbytes*copies/2, 1); err != nil {
						return err
					}
					return randomFloats(x, sh.n*sh.k, 2)
				})
				if err != nil {
					b.Fatal(err)
				}
				defer ctx.Do(func() error {
					for _, p := range []cudadrv.DevicePtr{q, x, y} {
						cudadrv.MemFree(p)
					}
					return nil
				})
				var used int64
				for _, n := range sizes {
					used += n
				}
				weight := func(i int) *QuantWeight {
					w := &QuantWeight{Type: qt, M: sh.m, K: sh.k}
					for j, n := range sizes {
						if n > 0 {
							w.Planes[j] = q.Offset(i%copies*wbytes + offs[j])
						}
					}
					return w
				}
				var y2 cudadrv.DevicePtr
				if gateUp {
					// The gate and up matrices are consecutive copies; SwiGLU
					// on the way out (the FP16 gateup's work).
					used *= 2
					if err := ctx.Do(func() (err error) { y2, err = cudadrv.MemAlloc(4 * sh.n * sh.m); return err }); err != nil {
						b.Fatal(err)
					}
					defer ctx.Do(func() error { return cudadrv.MemFree(y2) })
				}
				sec := graphBench(b, ctx, copies, func(s cudadrv.Stream, i int) error {
					if gateUp {
						return k.GateUpQ(s, y, y2, x, weight(i), weight(i+1), sh.n)
					}
					return k.MatVecQ(s, x, sh.n, sh.k, QuantOut{Y: y, W: *weight(i)})
				})
				b.ReportMetric(sec*1e6, "µs/op")
				b.ReportMetric(float64(used)/sec/1e9, "GB/s")
			})
		}
	}
}
