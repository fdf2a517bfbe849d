package cudadrv_test

import (
	"errors"
	"math"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/internal/gputest"
)

// testPTX is hand-written so that these tests do not depend on package ptx.
const testPTX = `
.version 6.0
.target sm_52
.address_size 64

.visible .entry add_u32(.param .u64 p_ptr, .param .u32 p_v, .param .u32 p_n)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd1, [p_ptr];
	ld.param.u32 %r1, [p_v];
	ld.param.u32 %r2, [p_n];
	mov.u32 %r3, %ctaid.x;
	mov.u32 %r4, %ntid.x;
	mov.u32 %r5, %tid.x;
	mad.lo.s32 %r6, %r3, %r4, %r5;
	setp.ge.s32 %p1, %r6, %r2;
	@%p1 bra $Ldone;
	cvta.to.global.u64 %rd2, %rd1;
	mul.wide.s32 %rd3, %r6, 4;
	add.s64 %rd2, %rd2, %rd3;
	ld.global.u32 %r7, [%rd2];
	add.s32 %r7, %r7, %r1;
	st.global.u32 [%rd2], %r7;
$Ldone:
	ret;
}

.visible .entry scale_f32(.param .u64 q_ptr, .param .f32 q_a, .param .u32 q_n)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd1, [q_ptr];
	ld.param.f32 %f1, [q_a];
	ld.param.u32 %r2, [q_n];
	mov.u32 %r3, %ctaid.x;
	mov.u32 %r4, %ntid.x;
	mov.u32 %r5, %tid.x;
	mad.lo.s32 %r6, %r3, %r4, %r5;
	setp.ge.s32 %p1, %r6, %r2;
	@%p1 bra $Lend;
	cvta.to.global.u64 %rd2, %rd1;
	mul.wide.s32 %rd3, %r6, 4;
	add.s64 %rd2, %rd2, %rd3;
	ld.global.f32 %f2, [%rd2];
	mul.f32 %f3, %f2, %f1;
	st.global.f32 [%rd2], %f3;
$Lend:
	ret;
}
`

type testKernels struct {
	mod   *cudadrv.Module
	add   cudadrv.Function
	scale cudadrv.Function
}

func loadTestKernels(t *testing.T, ctx *cudadrv.Context) *testKernels {
	t.Helper()
	k := &testKernels{}
	err := ctx.Do(func() error {
		var err error
		if k.mod, err = cudadrv.ModuleLoadData([]byte(testPTX)); err != nil {
			return err
		}
		if k.add, err = k.mod.Function("add_u32"); err != nil {
			return err
		}
		k.scale, err = k.mod.Function("scale_f32")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx.Do(k.mod.Unload) })
	return k
}

func grid(n int) (cudadrv.Dim3, cudadrv.Dim3) {
	return cudadrv.Dim3{X: uint32((n + 255) / 256), Y: 1, Z: 1}, cudadrv.Dim3{X: 256, Y: 1, Z: 1}
}

func TestDevices(t *testing.T) {
	ctx := gputest.Context(t)
	n, err := cudadrv.DeviceCount()
	if err != nil || n < 1 {
		t.Fatalf("DeviceCount = %d, %v", n, err)
	}
	sys, err := cudadrv.Discover(gputest.DriverOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(sys.Devices) != n || sys.DriverVersion < cudadrv.MinDriverVersion || sys.LibraryPath == "" {
		t.Fatalf("Discover = %+v", sys)
	}
	for _, d := range sys.Devices {
		if d.Name == "" || d.Major < 5 || d.SMs <= 0 || d.TotalMem == 0 || d.FreeMem == 0 || d.FreeMem > d.TotalMem {
			t.Errorf("device %+v", d)
		}
		t.Logf("GPU %d: %s, compute %d.%d, %d SMs, %.1f GiB (%.1f free), %.0f GB/s theoretical, driver CUDA %s, %s",
			d.Ordinal, d.Name, d.Major, d.Minor, d.SMs, float64(d.TotalMem)/(1<<30), float64(d.FreeMem)/(1<<30),
			d.Bandwidth()/1e9, cudadrv.FormatVersion(sys.DriverVersion), sys.LibraryPath)
	}
	if ctx.Device() != sys.Devices[0].Device {
		t.Errorf("context device %d, Discover device %d", ctx.Device(), sys.Devices[0].Device)
	}
}

func TestMemory(t *testing.T) {
	ctx := gputest.Context(t)
	const n = 1 << 20
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(i) * 0.5
	}
	err := ctx.Do(func() error {
		a, err := cudadrv.MemAlloc(4 * n)
		if err != nil {
			return err
		}
		defer cudadrv.MemFree(a)
		b, err := cudadrv.MemAlloc(4 * n)
		if err != nil {
			return err
		}
		defer cudadrv.MemFree(b)

		if err := cudadrv.MemsetD32(b, math.Float32bits(float32(math.NaN())), n); err != nil {
			return err
		}
		if err := cudadrv.CopyToDevice(a, src); err != nil {
			return err
		}
		if err := cudadrv.MemcpyDtoD(b, a, 4*n); err != nil {
			return err
		}
		got := make([]float32, n)
		if err := cudadrv.CopyFromDevice(got, b); err != nil {
			return err
		}
		for i := range got {
			if got[i] != src[i] {
				t.Fatalf("sync round trip: [%d] = %v, want %v", i, got[i], src[i])
			}
		}

		// Asynchronous copies through pinned memory on a stream.
		s, err := cudadrv.NewStream()
		if err != nil {
			return err
		}
		defer s.Destroy()
		h, err := cudadrv.MemAllocHost(4 * n)
		if err != nil {
			return err
		}
		defer h.Free()
		pinned := unsafe.Slice((*float32)(h.Ptr()), n)
		for i := range pinned {
			pinned[i] = -float32(i)
		}
		// The poison and the copy run in stream order: b ends up with
		// the pinned values.
		if err := cudadrv.MemsetD32Async(b, 0x7fc00000, n, s); err != nil {
			return err
		}
		if err := cudadrv.MemcpyHtoDAsync(b, h.Ptr(), 4*n, s); err != nil {
			return err
		}
		// The host buffer is only rewritten once the stream has passed the
		// copy; the copy back then restores it from b.
		if err := s.Synchronize(); err != nil {
			return err
		}
		clear(pinned)
		if err := cudadrv.MemcpyDtoHAsync(h.Ptr(), b, 4*n, s); err != nil {
			return err
		}
		if err := s.Synchronize(); err != nil {
			return err
		}
		for i := range pinned {
			if pinned[i] != -float32(i) && !(i == 0 && pinned[i] == 0) {
				t.Fatalf("async round trip: [%d] = %v, want %v", i, pinned[i], -float32(i))
			}
		}
		free, total, err := cudadrv.MemGetInfo()
		if err != nil || free == 0 || free > total {
			t.Errorf("MemGetInfo = %d, %d, %v", free, total, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSyncWritesSeenByStreams: what MemcpyHtoD, MemsetD32 and MemcpyDtoD
// wrote is in place when they return, for a stream from NewStream (which
// does not wait for the default stream they run on) that reads it at once.
// The driver documents that it may return from these calls before the
// device is done; without the wait such a stream may read the old
// contents. (The race did not show in this test on an H200; model/cuda's
// op tests, which poison outputs with MemcpyHtoD, once read stale rows
// there.)
func TestSyncWritesSeenByStreams(t *testing.T) {
	ctx := gputest.Context(t)
	const n = 16 << 20 // 64 MiB of float32
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(i%1000) + 0.25
	}
	err := ctx.Do(func() error {
		s, err := cudadrv.NewStream()
		if err != nil {
			return err
		}
		defer s.Destroy()
		a, err := cudadrv.MemAlloc(4 * n)
		if err != nil {
			return err
		}
		defer cudadrv.MemFree(a)
		b, err := cudadrv.MemAlloc(4 * n)
		if err != nil {
			return err
		}
		defer cudadrv.MemFree(b)
		h, err := cudadrv.MemAllocHost(4 * n)
		if err != nil {
			return err
		}
		defer h.Free()
		got := unsafe.Slice((*float32)(h.Ptr()), n)
		readBack := func(p cudadrv.DevicePtr) error {
			clear(got)
			if err := cudadrv.MemcpyDtoHAsync(h.Ptr(), p, 4*n, s); err != nil {
				return err
			}
			return s.Synchronize()
		}
		for round := range 3 {
			if err := cudadrv.MemsetD32(a, math.Float32bits(-1), n); err != nil {
				return err
			}
			if err := readBack(a); err != nil {
				return err
			}
			if got[n-1] != -1 {
				t.Fatalf("round %d: MemsetD32 not in place for the stream: [%d] = %v", round, n-1, got[n-1])
			}
			if err := cudadrv.CopyToDevice(a, src); err != nil {
				return err
			}
			if err := readBack(a); err != nil {
				return err
			}
			for _, i := range []int{0, n / 2, n - 1} {
				if got[i] != src[i] {
					t.Fatalf("round %d: MemcpyHtoD not in place for the stream: [%d] = %v, want %v", round, i, got[i], src[i])
				}
			}
			if err := cudadrv.MemcpyDtoD(b, a, 4*n); err != nil {
				return err
			}
			if err := readBack(b); err != nil {
				return err
			}
			if got[n-1] != src[n-1] {
				t.Fatalf("round %d: MemcpyDtoD not in place for the stream: [%d] = %v", round, n-1, got[n-1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOutOfMemory(t *testing.T) {
	ctx := gputest.Context(t)
	err := ctx.Do(func() error {
		p, err := cudadrv.MemAlloc(1 << 50)
		cudadrv.MemFree(p)
		return err
	})
	if !errors.Is(err, cudadrv.ErrOutOfMemory) {
		t.Fatalf("MemAlloc(1 PiB) = %v, want ErrOutOfMemory", err)
	}
	t.Log(err)
}

func TestLaunch(t *testing.T) {
	ctx := gputest.Context(t)
	k := loadTestKernels(t, ctx)
	const n = 1000
	err := ctx.Do(func() error {
		p, err := cudadrv.MemAlloc(4 * n)
		if err != nil {
			return err
		}
		defer cudadrv.MemFree(p)
		in := make([]float32, n)
		for i := range in {
			in[i] = float32(i) + 1
		}
		if err := cudadrv.CopyToDevice(p, in); err != nil {
			return err
		}
		g, b := grid(n)
		if err := k.scale.Launch(g, b, 0, 0, p, float32(-2.5), int32(n)); err != nil {
			return err
		}
		out := make([]float32, n)
		if err := cudadrv.CopyFromDevice(out, p); err != nil {
			return err
		}
		for i := range out {
			if out[i] != in[i]*-2.5 {
				t.Fatalf("scale_f32: [%d] = %v, want %v", i, out[i], in[i]*-2.5)
			}
		}
		if err := k.scale.Launch(g, b, 0, 0, p, 1); err == nil {
			t.Error("Launch accepted a plain int parameter")
		}
		v, err := k.add.Attribute(cudadrv.FuncBinaryVersion)
		t.Logf("add_u32 binary version %d (%v)", v, err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestModuleErrorLog(t *testing.T) {
	ctx := gputest.Context(t)
	err := ctx.Do(func() error {
		m, err := cudadrv.ModuleLoadData([]byte(".version 6.0\n.target sm_52\n.address_size 64\n.visible .entry broken( {\n"))
		if err == nil {
			m.Unload()
		}
		return err
	})
	var me *cudadrv.ModuleError
	if !errors.As(err, &me) {
		t.Fatalf("loading broken PTX: %v, want *ModuleError", err)
	}
	var ce *cudadrv.CallError
	if !errors.As(err, &ce) || me.Log == "" {
		t.Fatalf("ModuleError without CallError or log: %v", err)
	}
	t.Logf("%v", err)
}

// A captured graph replays the recorded launches; events time it.
func TestGraph(t *testing.T) {
	ctx := gputest.Context(t)
	k := loadTestKernels(t, ctx)
	const n, launches, replays = 4096, 100, 3
	err := ctx.Do(func() error {
		p, err := cudadrv.MemAlloc(4 * n)
		if err != nil {
			return err
		}
		defer cudadrv.MemFree(p)
		if err := cudadrv.MemsetD32(p, 7, n); err != nil {
			return err
		}
		s, err := cudadrv.NewStream()
		if err != nil {
			return err
		}
		defer s.Destroy()
		g, b := grid(n)
		exec, err := s.Capture(func() error {
			for i := 0; i < launches; i++ {
				if err := k.add.Launch(g, b, 0, s, p, uint32(1), int32(n)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		defer exec.Destroy()
		start, err := cudadrv.NewEvent()
		if err != nil {
			return err
		}
		defer start.Destroy()
		end, err := cudadrv.NewEvent()
		if err != nil {
			return err
		}
		defer end.Destroy()
		if err := start.Record(s); err != nil {
			return err
		}
		for i := 0; i < replays; i++ {
			if err := exec.Launch(s); err != nil {
				return err
			}
		}
		if err := end.Record(s); err != nil {
			return err
		}
		if err := end.Synchronize(); err != nil {
			return err
		}
		d, err := cudadrv.Elapsed(start, end)
		if err != nil {
			return err
		}
		t.Logf("%d graph replays of %d kernels: %v (%.2f µs per kernel)", replays, launches, d,
			float64(d.Microseconds())/(replays*launches))
		out := make([]uint32, n)
		if err := cudadrv.CopyFromDevice(out, p); err != nil {
			return err
		}
		for i, v := range out {
			if v != 7+launches*replays {
				t.Fatalf("[%d] = %d, want %d", i, v, 7+launches*replays)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Driver calls outside Do run on a thread without the context.
func TestOutsideDo(t *testing.T) {
	gputest.Context(t)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // a fresh thread: no context was ever current on it
		p, err := cudadrv.MemAlloc(16)
		cudadrv.MemFree(p)
		errc <- err
	}()
	if err := <-errc; !errors.Is(err, cudadrv.ErrInvalidContext) {
		t.Fatalf("MemAlloc outside Do = %v, want ErrInvalidContext", err)
	}
}

// Many goroutines share one context through Do.
func TestConcurrentDo(t *testing.T) {
	ctx := gputest.Context(t)
	k := loadTestKernels(t, ctx)
	const goroutines, iters, n = 32, 25, 3000
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for gi := 0; gi < goroutines; gi++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := make([]uint32, n)
			out := make([]uint32, n)
			for it := 0; it < iters; it++ {
				for i := range in {
					in[i] = uint32(gi*1000000 + it*1000 + i)
				}
				err := ctx.Do(func() error {
					p, err := cudadrv.MemAlloc(4 * n)
					if err != nil {
						return err
					}
					defer cudadrv.MemFree(p)
					if err := cudadrv.CopyToDevice(p, in); err != nil {
						return err
					}
					g, b := grid(n)
					if err := k.add.Launch(g, b, 0, 0, p, uint32(gi+1), int32(n)); err != nil {
						return err
					}
					return cudadrv.CopyFromDevice(out, p)
				})
				if err != nil {
					errs <- err
					return
				}
				for i := range out {
					if out[i] != in[i]+uint32(gi+1) {
						errs <- errors.New("wrong result: another goroutine's data or a lost launch")
						return
					}
				}
				runtime.Gosched()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDoReentrantAndPanics(t *testing.T) {
	ctx := gputest.Context(t)
	inner := false
	err := ctx.Do(func() error {
		return ctx.Do(func() error {
			inner = true
			return ctx.Synchronize()
		})
	})
	if err != nil || !inner {
		t.Fatalf("nested Do: %v, ran %v", err, inner)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		ctx.Do(func() error { panic("boom") })
	}()
	// The owning thread survived the panic.
	if err := ctx.Synchronize(); err != nil {
		t.Fatal(err)
	}
}

func TestClose(t *testing.T) {
	shared := gputest.Context(t)
	c, err := cudadrv.NewContext(shared.Device())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(func() error { return nil }); !errors.Is(err, cudadrv.ErrContextClosed) {
		t.Fatalf("Do after Close = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	// The shared context (same primary context) still works.
	if err := shared.Synchronize(); err != nil {
		t.Fatal(err)
	}
}
