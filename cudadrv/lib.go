package cudadrv

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/m40llm/m40llm/internal/dl"
)

// Library is the soname of the driver API. The toolkit's stubs/libcuda.so
// exists only for linking and fails every call with CUDA_ERROR_STUB_LIBRARY.
const Library = "libcuda.so.1"

// MinDriverVersion is the oldest driver API this package accepts, as
// cuDriverGetVersion reports it (1000*major + 10*minor): CUDA 11.4, the
// first with cuGraphInstantiateWithFlags. The embedded sm_52 code (nvcc 11.8)
// loads on any CUDA 11 driver; JIT-compiling the embedded PTX (ISA 7.8) for
// a newer GPU needs CUDA 11.8 ([PTXDriverVersion]).
const MinDriverVersion = 11040

// PTXDriverVersion is the oldest driver that JIT-compiles the embedded PTX
// (ISA 7.8, nvcc 11.8); older drivers return ErrUnsupportedPTXVersion on GPUs
// newer than Maxwell.
const PTXDriverVersion = 11080

// driverDirs are searched, in order, after the plain dlopen search for
// Library has failed: distribution library folders, NVIDIA container
// toolkit mounts and WSL.
var driverDirs = []string{
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu",
	"/usr/lib64",
	"/usr/lib",
	"/usr/local/nvidia/lib64",
	"/usr/lib/wsl/lib",
	"/run/opengl-driver/lib",
}

// Options configures Init.
type Options struct {
	// LibraryPath, when set, is the only driver library tried (m40llm reads
	// it from M40LLM_LIBCUDA).
	LibraryPath string
}

// Attempt is one library path tried and why it failed.
type Attempt = dl.Attempt

// LoadError reports that no driver library could be opened.
type LoadError struct {
	Library string    // soname looked for
	Tried   []Attempt // every path, in order
}

// Error implements error.
func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s not found; tried:", e.Library)
	for _, a := range e.Tried {
		fmt.Fprintf(&b, "\n  %s: %v", a.Path, a.Err)
	}
	return b.String()
}

// SymbolError reports a missing entry point in a loaded library.
type SymbolError = dl.SymbolError

// DriverTooOldError reports a driver older than MinDriverVersion.
type DriverTooOldError struct {
	Version int // as cuDriverGetVersion reports it
	Min     int
}

// Error implements error.
func (e *DriverTooOldError) Error() string {
	return fmt.Sprintf("NVIDIA driver supports CUDA %s, need CUDA %s or newer; update the driver",
		FormatVersion(e.Version), FormatVersion(e.Min))
}

// FormatVersion turns a driver API version (12040) into "12.4".
func FormatVersion(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// driver holds the bound entry points. Names follow the C functions; the
// versioned symbol each is bound to is in bind.
type driver struct {
	path    string
	version int

	cuInit                      func(flags uint32) Result
	cuDriverGetVersion          func(v *int32) Result
	cuGetErrorName              func(r Result, s **byte) Result
	cuGetErrorString            func(r Result, s **byte) Result
	cuDeviceGetCount            func(n *int32) Result
	cuDeviceGet                 func(d *Device, ordinal int32) Result
	cuDeviceGetName             func(name *byte, n int32, d Device) Result
	cuDeviceGetAttribute        func(v *int32, a DeviceAttribute, d Device) Result
	cuDeviceTotalMem            func(b *uint64, d Device) Result
	cuDevicePrimaryCtxRetain    func(c *uintptr, d Device) Result
	cuDevicePrimaryCtxRelease   func(d Device) Result
	cuCtxSetCurrent             func(c uintptr) Result
	cuCtxGetCurrent             func(c *uintptr) Result
	cuCtxSynchronize            func() Result
	cuMemGetInfo                func(free, total *uint64) Result
	cuMemAlloc                  func(p *DevicePtr, n uintptr) Result
	cuMemFree                   func(p DevicePtr) Result
	cuMemsetD8                  func(p DevicePtr, v uint8, n uintptr) Result
	cuMemsetD32                 func(p DevicePtr, v uint32, n uintptr) Result
	cuMemsetD32Async            func(p DevicePtr, v uint32, n uintptr, s Stream) Result
	cuMemcpyHtoD                func(dst DevicePtr, src unsafe.Pointer, n uintptr) Result
	cuMemcpyDtoH                func(dst unsafe.Pointer, src DevicePtr, n uintptr) Result
	cuMemcpyDtoD                func(dst, src DevicePtr, n uintptr) Result
	cuMemcpyHtoDAsync           func(dst DevicePtr, src unsafe.Pointer, n uintptr, s Stream) Result
	cuMemcpyDtoHAsync           func(dst unsafe.Pointer, src DevicePtr, n uintptr, s Stream) Result
	cuMemAllocHost              func(p *unsafe.Pointer, n uintptr) Result
	cuMemFreeHost               func(p unsafe.Pointer) Result
	cuModuleLoadDataEx          func(m *uintptr, image unsafe.Pointer, n uint32, opts *int32, vals *uintptr) Result
	cuModuleUnload              func(m uintptr) Result
	cuModuleGetFunction         func(f *Function, m uintptr, name string) Result
	cuFuncGetAttribute          func(v *int32, a FunctionAttribute, f Function) Result
	cuLaunchKernel              func(f Function, gx, gy, gz, bx, by, bz, shared uint32, s Stream, params *unsafe.Pointer, extra unsafe.Pointer) Result
	cuStreamCreate              func(s *Stream, flags uint32) Result
	cuStreamDestroy             func(s Stream) Result
	cuStreamSynchronize         func(s Stream) Result
	cuStreamBeginCapture        func(s Stream, mode int32) Result
	cuStreamEndCapture          func(s Stream, g *Graph) Result
	cuGraphInstantiateWithFlags func(e *GraphExec, g Graph, flags uint64) Result
	cuGraphLaunch               func(e GraphExec, s Stream) Result
	cuGraphExecDestroy          func(e GraphExec) Result
	cuGraphDestroy              func(g Graph) Result
	cuEventCreate               func(e *Event, flags uint32) Result
	cuEventRecord               func(e Event, s Stream) Result
	cuEventSynchronize          func(e Event) Result
	cuEventElapsedTime          func(ms *float32, start, end Event) Result
	cuEventDestroy              func(e Event) Result
}

// symbols lists every entry point with its versioned name. cuGetErrorName,
// cuGetErrorString and cuDriverGetVersion are bound first, in bindEarly.
func (d *driver) symbols() []dl.Symbol {
	return []dl.Symbol{
		{Name: "cuInit", Fn: &d.cuInit},
		{Name: "cuDeviceGetCount", Fn: &d.cuDeviceGetCount},
		{Name: "cuDeviceGet", Fn: &d.cuDeviceGet},
		{Name: "cuDeviceGetName", Fn: &d.cuDeviceGetName},
		{Name: "cuDeviceGetAttribute", Fn: &d.cuDeviceGetAttribute},
		{Name: "cuDeviceTotalMem_v2", Fn: &d.cuDeviceTotalMem},
		{Name: "cuDevicePrimaryCtxRetain", Fn: &d.cuDevicePrimaryCtxRetain},
		{Name: "cuDevicePrimaryCtxRelease_v2", Fn: &d.cuDevicePrimaryCtxRelease},
		{Name: "cuCtxSetCurrent", Fn: &d.cuCtxSetCurrent},
		{Name: "cuCtxGetCurrent", Fn: &d.cuCtxGetCurrent},
		{Name: "cuCtxSynchronize", Fn: &d.cuCtxSynchronize},
		{Name: "cuMemGetInfo_v2", Fn: &d.cuMemGetInfo},
		{Name: "cuMemAlloc_v2", Fn: &d.cuMemAlloc},
		{Name: "cuMemFree_v2", Fn: &d.cuMemFree},
		{Name: "cuMemsetD8_v2", Fn: &d.cuMemsetD8},
		{Name: "cuMemsetD32_v2", Fn: &d.cuMemsetD32},
		{Name: "cuMemsetD32Async", Fn: &d.cuMemsetD32Async},
		{Name: "cuMemcpyHtoD_v2", Fn: &d.cuMemcpyHtoD},
		{Name: "cuMemcpyDtoH_v2", Fn: &d.cuMemcpyDtoH},
		{Name: "cuMemcpyDtoD_v2", Fn: &d.cuMemcpyDtoD},
		{Name: "cuMemcpyHtoDAsync_v2", Fn: &d.cuMemcpyHtoDAsync},
		{Name: "cuMemcpyDtoHAsync_v2", Fn: &d.cuMemcpyDtoHAsync},
		{Name: "cuMemAllocHost_v2", Fn: &d.cuMemAllocHost},
		{Name: "cuMemFreeHost", Fn: &d.cuMemFreeHost},
		{Name: "cuModuleLoadDataEx", Fn: &d.cuModuleLoadDataEx},
		{Name: "cuModuleUnload", Fn: &d.cuModuleUnload},
		{Name: "cuModuleGetFunction", Fn: &d.cuModuleGetFunction},
		{Name: "cuFuncGetAttribute", Fn: &d.cuFuncGetAttribute},
		{Name: "cuLaunchKernel", Fn: &d.cuLaunchKernel},
		{Name: "cuStreamCreate", Fn: &d.cuStreamCreate},
		{Name: "cuStreamDestroy_v2", Fn: &d.cuStreamDestroy},
		{Name: "cuStreamSynchronize", Fn: &d.cuStreamSynchronize},
		{Name: "cuStreamBeginCapture_v2", Fn: &d.cuStreamBeginCapture},
		{Name: "cuStreamEndCapture", Fn: &d.cuStreamEndCapture},
		{Name: "cuGraphInstantiateWithFlags", Fn: &d.cuGraphInstantiateWithFlags},
		{Name: "cuGraphLaunch", Fn: &d.cuGraphLaunch},
		{Name: "cuGraphExecDestroy", Fn: &d.cuGraphExecDestroy},
		{Name: "cuGraphDestroy", Fn: &d.cuGraphDestroy},
		{Name: "cuEventCreate", Fn: &d.cuEventCreate},
		{Name: "cuEventRecord", Fn: &d.cuEventRecord},
		{Name: "cuEventSynchronize", Fn: &d.cuEventSynchronize},
		{Name: "cuEventElapsedTime", Fn: &d.cuEventElapsedTime},
		{Name: "cuEventDestroy_v2", Fn: &d.cuEventDestroy},
	}
}

var (
	drv      atomic.Pointer[driver] // set once Init has succeeded
	initMu   sync.Mutex
	initPath string // library last opened, also when cuInit failed
	initVer  int    // its driver version, also when cuInit failed
)

// Init loads the driver library and calls cuInit. Once it has succeeded,
// later calls return nil at once (and ignore opts); after a failure, a later
// call tries again.
//
// Failures: a *LoadError when no library opened (it lists the paths tried),
// a *SymbolError for a missing entry point, a *DriverTooOldError, or an
// error wrapping the *CallError from cuInit, for which errors.Is(err,
// ErrNoDevice) and errors.Is(err, ErrStubLibrary) are the common cases.
func Init(opts Options) error {
	initMu.Lock()
	defer initMu.Unlock()
	if drv.Load() != nil {
		return nil
	}
	d, err := load(opts)
	if d != nil {
		initPath, initVer = d.path, d.version
	}
	if err != nil {
		return err
	}
	drv.Store(d)
	return nil
}

// load opens and binds the driver and calls cuInit. It returns the driver,
// when one was opened, also together with an error; a library that failed
// is closed again.
func load(opts Options) (*driver, error) {
	if runtime.GOOS != "linux" {
		return nil, ErrNotSupported
	}
	var candidates []string
	if opts.LibraryPath != "" {
		candidates = []string{opts.LibraryPath}
	} else {
		candidates = append(candidates, Library)
		for _, dir := range driverDirs {
			candidates = append(candidates, filepath.Join(dir, Library))
		}
	}
	h, path, tried := dl.Open(candidates)
	if h == 0 {
		return nil, &LoadError{Library: Library, Tried: tried}
	}
	d := &driver{path: path}
	d, err := initDriver(h, d)
	if err != nil {
		dl.Close(h)
	}
	return d, err
}

func initDriver(h uintptr, d *driver) (*driver, error) {
	path := d.path
	early := []dl.Symbol{
		{Name: "cuDriverGetVersion", Fn: &d.cuDriverGetVersion},
		{Name: "cuGetErrorName", Fn: &d.cuGetErrorName},
		{Name: "cuGetErrorString", Fn: &d.cuGetErrorString},
	}
	if err := dl.Bind(h, path, early); err != nil {
		return d, err
	}
	var v int32
	if err := check("cuDriverGetVersion", d.cuDriverGetVersion(&v)); err != nil {
		return d, d.rendered(err)
	}
	d.version = int(v)
	if d.version < MinDriverVersion {
		return d, &DriverTooOldError{Version: d.version, Min: MinDriverVersion}
	}
	if err := dl.Bind(h, path, d.symbols()); err != nil {
		return d, err
	}
	if err := check("cuInit", d.cuInit(0)); err != nil {
		return d, d.rendered(err)
	}
	return d, nil
}

// rendered wraps a *CallError so that its message carries d's error names
// and strings even though d never becomes the package's driver.
func (d *driver) rendered(err error) error {
	var ce *CallError
	if !errors.As(err, &ce) {
		return err
	}
	msg := fmt.Sprintf("%s: %s (%d)", ce.Func, d.name(ce.Result), int32(ce.Result))
	if desc := d.description(ce.Result); desc != "" {
		msg += ": " + desc
	}
	return &renderedError{err: ce, msg: msg}
}

// renderedError is an error whose message was rendered by a driver.
type renderedError struct {
	err error
	msg string
}

func (e *renderedError) Error() string { return e.msg }
func (e *renderedError) Unwrap() error { return e.err }

// LibraryPath returns the driver library Init opened ("" before that). When
// it was found through the dlopen search, the path is read from
// /proc/self/maps where possible.
func LibraryPath() string {
	initMu.Lock()
	defer initMu.Unlock()
	return initPath
}

// DriverVersion returns the CUDA version the driver supports, as
// 1000*major + 10*minor (13000 for CUDA 13.0). It is known once Init has
// opened the library, also when cuInit then failed.
func DriverVersion() (int, error) {
	initMu.Lock()
	defer initMu.Unlock()
	if initVer == 0 {
		return 0, &CallError{Func: "cuDriverGetVersion", Result: ErrNotInitialized}
	}
	return initVer, nil
}

// get returns the bound driver, or an error naming fn when Init has not
// succeeded.
func get(fn string) (*driver, error) {
	if d := drv.Load(); d != nil {
		return d, nil
	}
	return nil, &CallError{Func: fn, Result: ErrNotInitialized}
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
