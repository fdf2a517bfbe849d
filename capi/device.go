package main

/*
#include "capi.h"
*/
import "C"

import (
	"fmt"

	"github.com/m40llm/m40llm/cudadrv"
)

// initDriver loads the CUDA driver (once it has succeeded, later calls are
// free). The library reads no environment variables: it searches the
// standard places for libcuda.so.1.
func initDriver() error { return cudadrv.Init(cudadrv.Options{}) }

//export capiDeviceCount
func capiDeviceCount(count *C.int32_t) (st status) {
	defer recoverPanic(&st)
	if count == nil {
		return failArg(argErrorf("count is NULL"))
	}
	*count = 0
	if err := initDriver(); err != nil {
		return fail(fmt.Errorf("no usable CUDA GPU: %w", err), stNoDevice)
	}
	n, err := cudadrv.DeviceCount()
	if err != nil {
		return fail(err, stNoDevice)
	}
	if n == 0 {
		return fail(errorf(stNoDevice, "the CUDA driver reports no device"), stNoDevice)
	}
	*count = C.int32_t(n)
	return stOK
}

//export capiDeviceInfo
func capiDeviceInfo(index C.int32_t, props *C.m40llm_device_props) (st status) {
	defer recoverPanic(&st)
	if props == nil {
		return failArg(argErrorf("props is NULL"))
	}
	if index < 0 {
		return failArg(argErrorf("device index %d is negative", int32(index)))
	}
	sys, err := cudadrv.Discover(cudadrv.Options{})
	if err != nil && len(sys.Devices) <= int(index) {
		return fail(fmt.Errorf("no usable CUDA GPU: %w", err), stNoDevice)
	}
	if int(index) >= len(sys.Devices) {
		return failArg(argErrorf("device index %d: there are %d device(s)", int32(index), len(sys.Devices)))
	}
	d := sys.Devices[index]
	var p C.m40llm_device_props
	copyCString(p.name[:], d.Name)
	p.ordinal = C.int32_t(d.Ordinal)
	p.compute_major = C.int32_t(d.Major)
	p.compute_minor = C.int32_t(d.Minor)
	p.multiprocessors = C.int32_t(d.SMs)
	p.total_memory = C.uint64_t(d.TotalMem)
	p.free_memory = C.uint64_t(d.FreeMem)
	p.bandwidth = C.double(d.Bandwidth())
	p.pci_bus_id = C.int32_t(d.PCIBusID)
	p.driver_version = C.int32_t(sys.DriverVersion)
	p.native_code = C.bool(d.NativeCode())
	*props = p
	return stOK
}
