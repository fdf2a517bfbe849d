package cudadrv

import (
	"fmt"
	"unsafe"
)

// DevicePtr is a CUdeviceptr: an address in device memory. It is a plain
// integer, never a Go pointer. Call the memory functions (allocation,
// copies, memsets) inside Context.Do.
type DevicePtr uintptr

// Offset returns p advanced by bytes.
func (p DevicePtr) Offset(bytes int) DevicePtr { return p + DevicePtr(bytes) }

// MemAlloc allocates bytes of device memory (256-byte aligned).
func MemAlloc(bytes int) (DevicePtr, error) {
	d, err := get("cuMemAlloc_v2")
	if err != nil {
		return 0, err
	}
	if bytes <= 0 {
		return 0, fmt.Errorf("cuMemAlloc_v2: %d bytes: %w", bytes, ErrInvalidValue)
	}
	var p DevicePtr
	if err := check("cuMemAlloc_v2", d.cuMemAlloc(&p, uintptr(bytes))); err != nil {
		return 0, fmt.Errorf("%w (%d bytes)", err, bytes)
	}
	return p, nil
}

// MemFree frees memory from MemAlloc. Freeing 0 is a no-op.
func MemFree(p DevicePtr) error {
	if p == 0 {
		return nil
	}
	d, err := get("cuMemFree_v2")
	if err != nil {
		return err
	}
	return check("cuMemFree_v2", d.cuMemFree(p))
}

// MemGetInfo returns the free and total memory of the current context's device.
func MemGetInfo() (free, total uint64, err error) {
	d, err := get("cuMemGetInfo_v2")
	if err != nil {
		return 0, 0, err
	}
	err = check("cuMemGetInfo_v2", d.cuMemGetInfo(&free, &total))
	return free, total, err
}

// The synchronous copies and memsets below run on the default stream, and
// the driver may return from them before the device is done (a memset of
// device memory always; a copy from pageable host memory once it is
// staged; a device-to-device copy at once). Streams from NewStream do not
// wait for the default stream, so each of these functions waits for it
// before it returns: when they return, the memory holds what they wrote,
// for work on any stream.

// MemsetD8 sets n bytes at p to v and returns when they are set.
func MemsetD8(p DevicePtr, v uint8, n int) error {
	d, err := get("cuMemsetD8_v2")
	if err != nil {
		return err
	}
	if err := check("cuMemsetD8_v2", d.cuMemsetD8(p, v, uintptr(n))); err != nil {
		return err
	}
	return Stream(0).Synchronize()
}

// MemsetD32 sets n 32-bit words at p (4-byte aligned) to v and returns
// when they are set; use math.Float32bits to fill float32 buffers, for
// example with NaN.
func MemsetD32(p DevicePtr, v uint32, n int) error {
	d, err := get("cuMemsetD32_v2")
	if err != nil {
		return err
	}
	if err := check("cuMemsetD32_v2", d.cuMemsetD32(p, v, uintptr(n))); err != nil {
		return err
	}
	return Stream(0).Synchronize()
}

// MemsetD32Async is MemsetD32 ordered on stream s.
func MemsetD32Async(p DevicePtr, v uint32, n int, s Stream) error {
	d, err := get("cuMemsetD32Async")
	if err != nil {
		return err
	}
	return check("cuMemsetD32Async", d.cuMemsetD32Async(p, v, uintptr(n), s))
}

// MemcpyHtoD copies bytes from host memory src to dst and returns when the
// copy is done (see above). src may be Go memory.
func MemcpyHtoD(dst DevicePtr, src unsafe.Pointer, bytes int) error {
	d, err := get("cuMemcpyHtoD_v2")
	if err != nil {
		return err
	}
	if err := check("cuMemcpyHtoD_v2", d.cuMemcpyHtoD(dst, src, uintptr(bytes))); err != nil {
		return err
	}
	return Stream(0).Synchronize()
}

// MemcpyDtoH copies bytes from src to host memory dst and returns when the
// copy is done. dst may be Go memory. It does not wait for work on streams
// from NewStream: synchronize the stream that wrote src first.
func MemcpyDtoH(dst unsafe.Pointer, src DevicePtr, bytes int) error {
	d, err := get("cuMemcpyDtoH_v2")
	if err != nil {
		return err
	}
	return check("cuMemcpyDtoH_v2", d.cuMemcpyDtoH(dst, src, uintptr(bytes)))
}

// MemcpyDtoD copies bytes between device buffers and returns when the
// copy is done.
func MemcpyDtoD(dst, src DevicePtr, bytes int) error {
	d, err := get("cuMemcpyDtoD_v2")
	if err != nil {
		return err
	}
	if err := check("cuMemcpyDtoD_v2", d.cuMemcpyDtoD(dst, src, uintptr(bytes))); err != nil {
		return err
	}
	return Stream(0).Synchronize()
}

// MemcpyHtoDAsync copies bytes from src to dst in stream order. src must be
// page-locked memory from MemAllocHost that stays valid until the stream has
// passed the copy; never pass Go memory.
func MemcpyHtoDAsync(dst DevicePtr, src unsafe.Pointer, bytes int, s Stream) error {
	d, err := get("cuMemcpyHtoDAsync_v2")
	if err != nil {
		return err
	}
	return check("cuMemcpyHtoDAsync_v2", d.cuMemcpyHtoDAsync(dst, src, uintptr(bytes), s))
}

// MemcpyDtoHAsync copies bytes from src to dst in stream order. dst must be
// page-locked memory from MemAllocHost; read it only after the stream has
// been synchronized.
func MemcpyDtoHAsync(dst unsafe.Pointer, src DevicePtr, bytes int, s Stream) error {
	d, err := get("cuMemcpyDtoHAsync_v2")
	if err != nil {
		return err
	}
	return check("cuMemcpyDtoHAsync_v2", d.cuMemcpyDtoHAsync(dst, src, uintptr(bytes), s))
}

// CopyToDevice copies src (Go memory) to dst synchronously. T must not
// contain pointers.
func CopyToDevice[T any](dst DevicePtr, src []T) error {
	if len(src) == 0 {
		return nil
	}
	n := len(src) * int(unsafe.Sizeof(src[0]))
	return MemcpyHtoD(dst, unsafe.Pointer(&src[0]), n)
}

// CopyFromDevice copies len(dst) elements from src into dst (Go memory)
// synchronously. T must not contain pointers.
func CopyFromDevice[T any](dst []T, src DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	n := len(dst) * int(unsafe.Sizeof(dst[0]))
	return MemcpyDtoH(unsafe.Pointer(&dst[0]), src, n)
}

// HostBuffer is page-locked host memory from MemAllocHost, usable by
// asynchronous copies. It is not Go memory: Free it explicitly.
type HostBuffer struct {
	p unsafe.Pointer
	n int
}

// MemAllocHost allocates bytes of page-locked host memory.
func MemAllocHost(bytes int) (*HostBuffer, error) {
	d, err := get("cuMemAllocHost_v2")
	if err != nil {
		return nil, err
	}
	if bytes <= 0 {
		return nil, fmt.Errorf("cuMemAllocHost_v2: %d bytes: %w", bytes, ErrInvalidValue)
	}
	var p unsafe.Pointer
	if err := check("cuMemAllocHost_v2", d.cuMemAllocHost(&p, uintptr(bytes))); err != nil {
		return nil, fmt.Errorf("%w (%d bytes)", err, bytes)
	}
	return &HostBuffer{p: p, n: bytes}, nil
}

// Ptr returns the buffer's address for asynchronous copies.
func (h *HostBuffer) Ptr() unsafe.Pointer { return h.p }

// Len returns the buffer's size in bytes.
func (h *HostBuffer) Len() int { return h.n }

// Free releases the buffer. Freeing twice is a no-op.
func (h *HostBuffer) Free() error {
	if h.p == nil {
		return nil
	}
	d, err := get("cuMemFreeHost")
	if err != nil {
		return err
	}
	err = check("cuMemFreeHost", d.cuMemFreeHost(h.p))
	h.p, h.n = nil, 0
	return err
}
