package cudadrv

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// Module is a loaded CUmodule. Call its methods inside Context.Do.
type Module struct {
	h uintptr
	// JITLog is the driver's info log from loading (empty for native code).
	JITLog string
}

// ModuleError is a failed cuModuleLoadDataEx with the JIT error log.
type ModuleError struct {
	Err error  // the *CallError
	Log string // JIT error and info log, possibly empty
}

// Error implements error.
func (e *ModuleError) Error() string {
	if e.Log == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + "\nJIT log:\n" + e.Log
}

// Unwrap returns the *CallError, so errors.Is(err, ErrUnsupportedPTXVersion) works.
func (e *ModuleError) Unwrap() error { return e.Err }

// cuJIT options (CUjit_option).
const (
	jitInfoLogBuffer          = 3
	jitInfoLogBufferSizeBytes = 4
	jitErrorLogBuffer         = 5
	jitErrorLogBufferSize     = 6
)

const jitLogSize = 16 << 10

// ModuleLoadData loads a fatbin, cubin or PTX image (PTX needs no trailing
// NUL; one is added). The driver picks native code for the device when the
// image has it and JIT-compiles the PTX otherwise. On failure the returned
// *ModuleError carries the JIT error log.
func ModuleLoadData(image []byte) (*Module, error) {
	d, err := get("cuModuleLoadDataEx")
	if err != nil {
		return nil, err
	}
	if len(image) == 0 {
		return nil, &CallError{Func: "cuModuleLoadDataEx", Result: ErrInvalidImage}
	}
	// An 8-byte aligned copy with a trailing NUL: fatbin headers hold
	// 64-bit fields, and PTX text must be terminated.
	buf := make([]uint64, len(image)/8+1)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*8), image)

	infoLog := make([]byte, jitLogSize)
	errLog := make([]byte, jitLogSize)
	opts := []int32{jitInfoLogBuffer, jitInfoLogBufferSizeBytes, jitErrorLogBuffer, jitErrorLogBufferSize}
	vals := []uintptr{
		uintptr(unsafe.Pointer(&infoLog[0])), jitLogSize,
		uintptr(unsafe.Pointer(&errLog[0])), jitLogSize,
	}
	var pin runtime.Pinner
	pin.Pin(&infoLog[0])
	pin.Pin(&errLog[0])
	pin.Pin(&buf[0])
	var h uintptr
	r := d.cuModuleLoadDataEx(&h, unsafe.Pointer(&buf[0]), uint32(len(opts)), &opts[0], &vals[0])
	pin.Unpin()
	info := cString(infoLog)
	if err := check("cuModuleLoadDataEx", r); err != nil {
		log := strings.TrimSpace(cString(errLog) + "\n" + info)
		return nil, &ModuleError{Err: err, Log: log}
	}
	return &Module{h: h, JITLog: info}, nil
}

// cString returns b up to its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Function looks up a kernel by its (extern "C") name.
func (m *Module) Function(name string) (Function, error) {
	d, err := get("cuModuleGetFunction")
	if err != nil {
		return 0, err
	}
	var f Function
	if err := check("cuModuleGetFunction", d.cuModuleGetFunction(&f, m.h, name)); err != nil {
		return 0, fmt.Errorf("kernel %s: %w", name, err)
	}
	return f, nil
}

// Unload unloads the module; its Functions become invalid.
func (m *Module) Unload() error {
	if m.h == 0 {
		return nil
	}
	d, err := get("cuModuleUnload")
	if err != nil {
		return err
	}
	err = check("cuModuleUnload", d.cuModuleUnload(m.h))
	m.h = 0
	return err
}

// Function is a CUfunction, a kernel in a loaded Module.
type Function uintptr

// FunctionAttribute is a CUfunction_attribute.
type FunctionAttribute int32

// Function attributes used by this module (values from cuda.h).
const (
	// FuncPTXVersion is the PTX virtual architecture the function was
	// compiled for, 10*major + minor (52).
	FuncPTXVersion FunctionAttribute = 5
	// FuncBinaryVersion is the architecture of the code that runs, 10*major
	// + minor: 52 for the embedded Maxwell code, 90 after JIT on an H100.
	FuncBinaryVersion FunctionAttribute = 6
)

// Attribute returns one function attribute.
func (f Function) Attribute(a FunctionAttribute) (int, error) {
	d, err := get("cuFuncGetAttribute")
	if err != nil {
		return 0, err
	}
	var v int32
	if err := check("cuFuncGetAttribute", d.cuFuncGetAttribute(&v, a, f)); err != nil {
		return 0, err
	}
	return int(v), nil
}

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z uint32 }

// Launch enqueues f on stream s (0: the legacy default stream) with
// sharedMem bytes of dynamic shared memory. Each arg is one kernel
// parameter, passed by value: DevicePtr or uintptr (8 bytes), int32, uint32,
// float32 (4 bytes), int64, uint64, float64 (8 bytes). Plain int is refused
// because its C width is ambiguous. Parameters are copied by the driver
// before Launch returns. Launch does not wait for the kernel; launch
// failures that happen on the device surface at the next synchronization.
func (f Function) Launch(grid, block Dim3, sharedMem int, s Stream, args ...any) error {
	d, err := get("cuLaunchKernel")
	if err != nil {
		return err
	}
	// One 8-byte slot per parameter, and the array of pointers to the slots
	// that cuLaunchKernel reads; both pinned for the call.
	slots := make([]uint64, len(args)+1)
	params := make([]unsafe.Pointer, len(args)+1)
	for i, a := range args {
		switch v := a.(type) {
		case DevicePtr:
			slots[i] = uint64(v)
		case uintptr:
			slots[i] = uint64(v)
		case int32:
			slots[i] = uint64(uint32(v))
		case uint32:
			slots[i] = uint64(v)
		case float32:
			slots[i] = uint64(*(*uint32)(unsafe.Pointer(&v)))
		case int64:
			slots[i] = uint64(v)
		case uint64:
			slots[i] = v
		case float64:
			slots[i] = *(*uint64)(unsafe.Pointer(&v))
		default:
			return fmt.Errorf("cuLaunchKernel: parameter %d has unsupported type %T", i, a)
		}
		params[i] = unsafe.Pointer(&slots[i])
	}
	var pin runtime.Pinner
	pin.Pin(&slots[0])
	pin.Pin(&params[0])
	r := d.cuLaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, uint32(sharedMem), s, &params[0], nil)
	pin.Unpin()
	return check("cuLaunchKernel", r)
}
