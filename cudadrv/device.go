package cudadrv

import "fmt"

// Device is a CUdevice, the driver's handle for one GPU.
type Device int32

// DeviceAttribute is a CUdevice_attribute.
type DeviceAttribute int32

// Device attributes used by this module (values from cuda.h).
const (
	AttrMultiprocessorCount    DeviceAttribute = 16
	AttrPCIBusID               DeviceAttribute = 33
	AttrMemoryClockRate        DeviceAttribute = 36 // kHz
	AttrGlobalMemoryBusWidth   DeviceAttribute = 37 // bits
	AttrL2CacheSize            DeviceAttribute = 38 // bytes
	AttrComputeCapabilityMajor DeviceAttribute = 75
	AttrComputeCapabilityMinor DeviceAttribute = 76
	AttrMaxSharedMemoryPerSM   DeviceAttribute = 81 // bytes
)

// DeviceCount returns the number of CUDA devices.
func DeviceCount() (int, error) {
	d, err := get("cuDeviceGetCount")
	if err != nil {
		return 0, err
	}
	var n int32
	if err := check("cuDeviceGetCount", d.cuDeviceGetCount(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// DeviceGet returns the device with the given ordinal (0 ≤ ordinal < DeviceCount).
func DeviceGet(ordinal int) (Device, error) {
	d, err := get("cuDeviceGet")
	if err != nil {
		return 0, err
	}
	var dev Device
	if err := check("cuDeviceGet", d.cuDeviceGet(&dev, int32(ordinal))); err != nil {
		return 0, fmt.Errorf("device %d: %w", ordinal, err)
	}
	return dev, nil
}

// Name returns the marketing name ("Tesla M40 24GB").
func (dev Device) Name() (string, error) {
	d, err := get("cuDeviceGetName")
	if err != nil {
		return "", err
	}
	var buf [256]byte
	if err := check("cuDeviceGetName", d.cuDeviceGetName(&buf[0], int32(len(buf)), dev)); err != nil {
		return "", err
	}
	return goString(&buf[0]), nil
}

// Attribute returns one device attribute.
func (dev Device) Attribute(a DeviceAttribute) (int, error) {
	d, err := get("cuDeviceGetAttribute")
	if err != nil {
		return 0, err
	}
	var v int32
	if err := check("cuDeviceGetAttribute", d.cuDeviceGetAttribute(&v, a, dev)); err != nil {
		return 0, fmt.Errorf("attribute %d: %w", a, err)
	}
	return int(v), nil
}

// ComputeCapability returns the major and minor compute capability
// (5, 2 for the Tesla M40).
func (dev Device) ComputeCapability() (major, minor int, err error) {
	if major, err = dev.Attribute(AttrComputeCapabilityMajor); err != nil {
		return 0, 0, err
	}
	if minor, err = dev.Attribute(AttrComputeCapabilityMinor); err != nil {
		return 0, 0, err
	}
	return major, minor, nil
}

// TotalMem returns the device memory in bytes.
func (dev Device) TotalMem() (uint64, error) {
	d, err := get("cuDeviceTotalMem_v2")
	if err != nil {
		return 0, err
	}
	var n uint64
	if err := check("cuDeviceTotalMem_v2", d.cuDeviceTotalMem(&n, dev)); err != nil {
		return 0, err
	}
	return n, nil
}
