// Package gputest lets GPU tests tell the truth about what ran: without a
// usable GPU they skip with the reason, and with M40LLM_REQUIRE_GPU=1 the
// same condition fails the test, so a run on a GPU machine cannot pass
// without running them.
//
// Tests may also point the loaders at specific libraries with
// M40LLM_LIBCUDA and M40LLM_LIBCUBLAS, as the m40llm command does. A test
// that breaks the GPU for its process (a device fault) runs in a process of
// its own through Isolate.
package gputest

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
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

// childEnv names the test that a child process of Isolate runs.
const childEnv = "M40LLM_GPUTEST_CHILD"

// Isolate runs the calling test in a process of its own, for a test that
// leaves the GPU unusable in its process (a device fault corrupts the CUDA
// context, and CUDA recovers from that only in a new process). In that
// child process, a copy of the test binary running only this test, it
// returns true and the test goes on. In the calling process it waits for
// the child, logs its output, fails when the child failed or did not run
// the test, skips when the child skipped it (t.Fatal there under
// M40LLM_REQUIRE_GPU=1, which the child inherits), and returns false.
func Isolate(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	cmd := exec.Command(os.Args[0], "-test.run="+strings.Join(parts, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("%s in its own process:\n%s", t.Name(), out)
	switch {
	case err != nil:
		t.Fatalf("%s failed in its own process: %v", t.Name(), err)
	case bytes.Contains(out, []byte("--- SKIP: "+t.Name()+" (")):
		t.Skipf("%s skipped in its own process (see above)", t.Name())
	case !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" (")):
		t.Fatalf("%s did not run in its own process", t.Name())
	}
	return false
}
