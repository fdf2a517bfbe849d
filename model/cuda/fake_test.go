package cuda

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/gputest"
	"github.com/m40llm/m40llm/ptx"
)

// fakeDevice is a device without a GPU, on which the backend's recording
// path runs in CI: allocations get distinct addresses (nothing is behind
// them), copies and memsets only check that they stay inside live
// allocations, page-locked host memory is Go memory, and run checks that
// every address a record names lies in a live allocation — failing like
// the GPU, with CUDA_ERROR_ILLEGAL_ADDRESS, when one does not (the fault of
// InjectFault, or a record naming a freed buffer) — and runs nothing.
type fakeDevice struct {
	next cudadrv.DevicePtr
	live map[cudadrv.DevicePtr]int // device blocks and their sizes
	used int                       // bytes of device and host memory held
	// limit, when positive, is the memory the fake has: an allocation
	// past it fails with cudadrv.ErrOutOfMemory.
	limit   int
	runs    int   // steps run
	fail    error // when set, run fails with it
	blasCap int   // elements of the emulated cuBLAS scratch
	// trusted skips run's check of the records' addresses, which
	// allocates (for allocation counts).
	trusted bool
	copies  []fakeCopy // the device-to-device copies, in order
}

// fakeCopy is one copyDevice call.
type fakeCopy struct {
	dst, src cudadrv.DevicePtr
	bytes    int
}

var _ device = (*fakeDevice)(nil)

// fakeTotal is the memory the fake reports without a limit.
const fakeTotal = 64 << 30

func newFakeDevice() *fakeDevice {
	return &fakeDevice{next: 1 << 40, live: map[cudadrv.DevicePtr]int{}}
}

// newFake returns a backend on a fake device and the device.
func newFake(t testing.TB, opts Options) (*Backend, *fakeDevice) {
	d := newFakeDevice()
	info := cudadrv.DeviceInfo{Name: "fake device", Major: 5, Minor: 2, SMs: 24, TotalMem: fakeTotal}
	b := newBackend(opts, info, d)
	b.mode, b.blasLn = "fake", "none (fake device)"
	t.Cleanup(func() { b.Close() })
	return b, d
}

func (d *fakeDevice) take(bytes int) error {
	if bytes <= 0 {
		return fmt.Errorf("fake alloc of %d bytes: %w", bytes, cudadrv.ErrInvalidValue)
	}
	if d.limit > 0 && d.used+bytes > d.limit {
		return fmt.Errorf("fake alloc of %d bytes: %w", bytes, cudadrv.ErrOutOfMemory)
	}
	d.used += bytes
	return nil
}

func (d *fakeDevice) alloc(bytes int) (cudadrv.DevicePtr, error) {
	if err := d.take(bytes); err != nil {
		return 0, err
	}
	p := d.next
	d.next += cudadrv.DevicePtr((bytes + 2*allocAlign - 1) &^ (allocAlign - 1)) // a gap after each block
	d.live[p] = bytes
	return p, nil
}

func (d *fakeDevice) free(p cudadrv.DevicePtr) error {
	if p == 0 {
		return nil
	}
	n, ok := d.live[p]
	if !ok {
		return fmt.Errorf("fake free of %#x, not a live block: %w", p, cudadrv.ErrInvalidValue)
	}
	delete(d.live, p)
	d.used -= n
	return nil
}

// inside reports whether [p, p+bytes) lies in one live block.
func (d *fakeDevice) inside(p cudadrv.DevicePtr, bytes int) bool {
	for base, n := range d.live {
		if p >= base && p+cudadrv.DevicePtr(bytes) <= base+cudadrv.DevicePtr(n) {
			return true
		}
	}
	return false
}

func (d *fakeDevice) check(what string, p cudadrv.DevicePtr, bytes int) error {
	if !d.inside(p, bytes) {
		return fmt.Errorf("fake %s of %d bytes at %#x, outside every live block: %w", what, bytes, p, cudadrv.ErrInvalidValue)
	}
	return nil
}

func (d *fakeDevice) memInfo() (uint64, uint64, error) {
	total := fakeTotal
	if d.limit > 0 {
		total = d.limit
	}
	return uint64(total - d.used), uint64(total), nil
}

// fakeHost is Go memory standing in for page-locked memory.
type fakeHost struct {
	d *fakeDevice
	b []byte
}

func (h *fakeHost) Ptr() unsafe.Pointer { return unsafe.Pointer(&h.b[0]) }
func (h *fakeHost) Len() int            { return len(h.b) }
func (h *fakeHost) Free() error {
	if h.b != nil {
		h.d.used -= len(h.b)
		h.b = nil
	}
	return nil
}

func (d *fakeDevice) allocHost(bytes int) (hostBuf, error) {
	if err := d.take(bytes); err != nil {
		return nil, err
	}
	return &fakeHost{d: d, b: make([]byte, bytes)}, nil
}

func (d *fakeDevice) do(fn func() error) error { return fn() }
func (d *fakeDevice) upload(dst cudadrv.DevicePtr, ti *gguf.TensorInfo, _ []byte) error {
	return d.check("upload", dst, 2*int(ti.Rows())*int(ti.Dims[0]))
}
func (d *fakeDevice) uploadQuant(dsts [3]cudadrv.DevicePtr, qt ptx.QuantType, data []byte) error {
	blocks := len(data) / qt.GGUF().TypeSize()
	for j, p := range dsts {
		if n := qt.PlaneBlockBytes(j); n > 0 {
			if err := d.check("upload", p, blocks*n); err != nil {
				return err
			}
		}
	}
	return nil
}
func (d *fakeDevice) finishUploads() error { return nil }
func (d *fakeDevice) waitUploads() error   { return nil }
func (d *fakeDevice) zero(p cudadrv.DevicePtr, bytes int) error {
	return d.check("memset", p, bytes)
}
func (d *fakeDevice) copyIn(dst cudadrv.DevicePtr, _ unsafe.Pointer, bytes int) error {
	return d.check("copy to the device", dst, bytes)
}
func (d *fakeDevice) copyOut(_ unsafe.Pointer, src cudadrv.DevicePtr, bytes int) error {
	return d.check("copy from the device", src, bytes)
}
func (d *fakeDevice) copyDevice(dst, src cudadrv.DevicePtr, bytes int) error {
	if err := d.check("copy from the device", src, bytes); err != nil {
		return err
	}
	if err := d.check("copy to the device", dst, bytes); err != nil {
		return err
	}
	d.copies = append(d.copies, fakeCopy{dst, src, bytes})
	return nil
}
func (d *fakeDevice) copyInAsync(dst cudadrv.DevicePtr, src hostBuf, bytes int) error {
	if src.Len() < bytes {
		return fmt.Errorf("fake copy of %d bytes from %d: %w", bytes, src.Len(), cudadrv.ErrInvalidValue)
	}
	return d.check("copy to the device", dst, bytes)
}
func (d *fakeDevice) copyOutAsync(dst hostBuf, src cudadrv.DevicePtr, bytes int) error {
	if dst.Len() < bytes {
		return fmt.Errorf("fake copy of %d bytes into %d: %w", bytes, dst.Len(), cudadrv.ErrInvalidValue)
	}
	return d.check("copy from the device", src, bytes)
}

// run checks every address the records name (0 stands for an optional
// operand that is absent) and counts the step.
func (d *fakeDevice) run(_ int, ops []op) error {
	if d.fail != nil {
		return d.fail
	}
	for i, o := range ops {
		if d.trusted {
			break
		}
		for _, p := range operands(o) {
			if p != 0 && !d.inside(p, 1) {
				return fmt.Errorf("fake run: op %d of %d (%s) names %#x, outside every live block: %w",
					i, len(ops), o.kernel(), p, cudadrv.ErrIllegalAddress)
			}
		}
	}
	d.runs++
	return nil
}

func (d *fakeDevice) sync() error                                        { return nil }
func (d *fakeDevice) warmUpBLAS(int, map[[2]int]cudadrv.DevicePtr) error { return nil }
func (d *fakeDevice) graphs() int                                        { return 0 }
func (d *fakeDevice) close() error                                       { return nil }

// reserveBLAS takes memory as ptx.BLAS.Reserve does: the old scratch is
// freed, then the new one allocated.
func (d *fakeDevice) reserveBLAS(elems int) error {
	if elems <= d.blasCap {
		return nil
	}
	d.used -= 2 * d.blasCap
	d.blasCap = 0
	if err := d.take(2 * elems); err != nil {
		return fmt.Errorf("fake cuBLAS scratch: %w", err)
	}
	d.blasCap = elems
	return nil
}

// operands returns the device addresses a record names, in any of its
// fields (nested structs and arrays included).
func operands(o op) []cudadrv.DevicePtr {
	var ps []cudadrv.DevicePtr
	ptr := reflect.TypeFor[cudadrv.DevicePtr]()
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch {
		case v.Type() == ptr:
			ps = append(ps, cudadrv.DevicePtr(v.Uint()))
		case v.Kind() == reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case v.Kind() == reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		}
	}
	walk(reflect.ValueOf(o))
	return ps
}

// stepLog is a device that keeps a copy of every step it runs (the spy
// of the kernel-count tests, on the fake and on the GPU).
type stepLog struct {
	device
	steps [][]op
	off   bool // keep nothing (for allocation counts)
}

func (l *stepLog) run(n int, ops []op) error {
	if !l.off {
		l.steps = append(l.steps, slices.Clone(ops))
	}
	return l.device.run(n, ops)
}

// logSteps makes b's device keep its steps; call it before b records
// anything.
func logSteps(b *Backend) *stepLog {
	l := &stepLog{device: b.dev}
	b.dev, b.mem.dev = l, l
	return l
}

// testDevices are the devices the recording tests run on: the fake one
// always, the GPU where there is one (skipped without, failed under
// M40LLM_REQUIRE_GPU=1).
var testDevices = []struct {
	name string
	new  func(t *testing.T, opts Options) *Backend
}{
	{"fake", func(t *testing.T, opts Options) *Backend {
		b, _ := newFake(t, opts)
		return b
	}},
	{"gpu", newTestGPU},
}

// newTestGPU returns a backend on GPU 0 with the libraries named by
// M40LLM_LIBCUDA and M40LLM_LIBCUBLAS, closed at the end of the test, or
// ends the test through gputest.Unavailable.
func newTestGPU(t *testing.T, opts Options) *Backend {
	t.Helper()
	opts.Driver = gputest.DriverOptions()
	opts.BLAS = cublas.Options{Path: os.Getenv("M40LLM_LIBCUBLAS")}
	b, err := New(opts)
	if err != nil {
		gputest.Unavailable(t, "no usable CUDA GPU: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
