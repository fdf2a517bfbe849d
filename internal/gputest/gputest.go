// Package gputest lets GPU tests tell the truth about what ran: without a
// usable GPU they skip with the reason, and with M40LLM_REQUIRE_GPU=1 the
// same condition fails the test, so a run on a GPU machine cannot pass
// without running them.
//
// Tests may also point the loaders at specific libraries with
// M40LLM_LIBCUDA and M40LLM_LIBCUBLAS, as the m40llm command does.
package gputest

import (
	"os"
	"sync"
	"testing"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
)

// Required reports whether M40LLM_REQUIRE_GPU=1 is set.
func Required() bool { return os.Getenv("M40LLM_REQUIRE_GPU") == "1" }

// Unavailable ends the test: t.Skip normally, t.Fatal when a GPU is required.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("M40LLM_REQUIRE_GPU=1 but: "+format, args...)
	}
	t.Skipf(format, args...)
}

// DriverOptions returns the cudadrv options for tests.
func DriverOptions() cudadrv.Options {
	return cudadrv.Options{LibraryPath: os.Getenv("M40LLM_LIBCUDA")}
}

var (
	ctxOnce sync.Once
	ctx     *cudadrv.Context
	ctxErr  error
)

// Context returns a context on device 0, shared by the tests of one test
// binary and never closed, or ends the test through Unavailable.
func Context(t testing.TB) *cudadrv.Context {
	t.Helper()
	ctxOnce.Do(func() {
		if ctxErr = cudadrv.Init(DriverOptions()); ctxErr != nil {
			return
		}
		var dev cudadrv.Device
		if dev, ctxErr = cudadrv.DeviceGet(0); ctxErr != nil {
			return
		}
		ctx, ctxErr = cudadrv.NewContext(dev)
	})
	if ctxErr != nil {
		Unavailable(t, "no usable CUDA GPU: %v", ctxErr)
	}
	return ctx
}

// BLAS returns a cuBLAS library for ctx's device, or ends the test through
// Unavailable.
func BLAS(t testing.TB, ctx *cudadrv.Context) *cublas.Library {
	t.Helper()
	major, minor, err := ctx.Device().ComputeCapability()
	if err != nil {
		t.Fatal(err)
	}
	lib, err := cublas.Load(cublas.Options{
		Path:         os.Getenv("M40LLM_LIBCUBLAS"),
		ComputeMajor: major,
		ComputeMinor: minor,
	})
	if err != nil {
		Unavailable(t, "no usable cuBLAS: %v", err)
	}
	return lib
}
