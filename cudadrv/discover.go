package cudadrv

import (
	"errors"
	"fmt"
	"runtime"
)

// System is what Discover found: the driver and its devices.
type System struct {
	LibraryPath   string // driver library opened ("" when none was)
	DriverVersion int    // 1000*major + 10*minor; 0 when unknown
	Devices       []DeviceInfo
}

// DeviceInfo describes one GPU.
type DeviceInfo struct {
	Ordinal      int
	Device       Device
	Name         string
	Major, Minor int    // compute capability
	SMs          int    // streaming multiprocessors
	TotalMem     uint64 // bytes
	FreeMem      uint64 // bytes free when Discover looked
	MemClockKHz  int    // memory clock; 0 when the driver does not report it
	BusWidthBits int    // memory bus width; 0 when unknown
	L2Bytes      int
	SharedPerSM  int // bytes of shared memory per multiprocessor
	PCIBusID     int
}

// Bandwidth returns the theoretical memory bandwidth in bytes per second:
// two transfers per memory clock (DDR) times the bus width. 0 when unknown.
// A Tesla M40 reports 3004 MHz × 384 bits: 288 GB/s.
func (d DeviceInfo) Bandwidth() float64 {
	return 2 * float64(d.MemClockKHz) * 1e3 * float64(d.BusWidthBits) / 8
}

// NativeCode reports whether the device is of the Tesla M40 class:
// second-generation Maxwell (GM20x, compute capability 5.2 or 5.3), the
// devices on which m40llm's embedded sm_52 code runs as is (SASS built for
// compute 5.2 runs on 5.x with x ≥ 2, and on nothing else). It is the one
// definition of "M40-class": package ptx reports native code with it and
// the m40llm command prefers such a device by default. Newer devices
// JIT-compile the embedded compute_52 PTX instead; older ones (compute 5.0
// and below) can run neither. NativeCode cannot fail; a DeviceInfo whose
// compute capability is unknown (zero) is not native.
func (d DeviceInfo) NativeCode() bool { return d.Major == 5 && d.Minor >= 2 }

// Discover calls Init and describes every device. When something fails it
// returns what it knows so far together with the error, so that callers can
// print both; see Init for the error types. Free memory needs a context,
// which Discover creates and releases for each device.
func Discover(opts Options) (*System, error) {
	err := Init(opts)
	sys := &System{LibraryPath: LibraryPath()}
	sys.DriverVersion, _ = DriverVersion()
	if err != nil {
		return sys, err
	}
	n, err := DeviceCount()
	if err != nil {
		return sys, err
	}
	if n == 0 {
		return sys, &CallError{Func: "cuDeviceGetCount", Result: ErrNoDevice}
	}
	for i := 0; i < n; i++ {
		info, err := describe(i)
		if err != nil {
			return sys, err
		}
		sys.Devices = append(sys.Devices, info)
	}
	return sys, nil
}

func describe(ordinal int) (DeviceInfo, error) {
	info := DeviceInfo{Ordinal: ordinal}
	dev, err := DeviceGet(ordinal)
	if err != nil {
		return info, err
	}
	info.Device = dev
	if info.Name, err = dev.Name(); err != nil {
		return info, err
	}
	if info.Major, info.Minor, err = dev.ComputeCapability(); err != nil {
		return info, err
	}
	if info.TotalMem, err = dev.TotalMem(); err != nil {
		return info, err
	}
	for _, a := range []struct {
		attr DeviceAttribute
		dst  *int
	}{
		{AttrMultiprocessorCount, &info.SMs},
		{AttrMemoryClockRate, &info.MemClockKHz},
		{AttrGlobalMemoryBusWidth, &info.BusWidthBits},
		{AttrL2CacheSize, &info.L2Bytes},
		{AttrMaxSharedMemoryPerSM, &info.SharedPerSM},
		{AttrPCIBusID, &info.PCIBusID},
	} {
		// Newer drivers may drop clock attributes; leave them 0.
		if v, err := dev.Attribute(a.attr); err == nil {
			*a.dst = v
		} else if !errors.Is(err, ErrInvalidValue) && !errors.Is(err, Result(801)) {
			return info, err
		}
	}
	info.FreeMem, err = freeMem(dev)
	if err != nil {
		return info, fmt.Errorf("device %d (%s): %w", ordinal, info.Name, err)
	}
	return info, nil
}

// freeMem retains the primary context on a locked thread just long enough
// for cuMemGetInfo.
func freeMem(dev Device) (uint64, error) {
	type result struct {
		free uint64
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		d := drv.Load()
		var h uintptr
		if err := check("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&h, dev)); err != nil {
			ch <- result{err: err}
			return
		}
		defer d.cuDevicePrimaryCtxRelease(dev)
		var prev uintptr
		d.cuCtxGetCurrent(&prev)
		if err := check("cuCtxSetCurrent", d.cuCtxSetCurrent(h)); err != nil {
			ch <- result{err: err}
			return
		}
		free, _, err := MemGetInfo()
		d.cuCtxSetCurrent(prev)
		ch <- result{free, err}
	}()
	r := <-ch
	return r.free, r.err
}
