package cudadrv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestResultIsError(t *testing.T) {
	err := fmt.Errorf("upload weights: %w", &CallError{Func: "cuMemAlloc_v2", Result: ErrOutOfMemory})
	if !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("errors.Is(%v, ErrOutOfMemory) = false", err)
	}
	if errors.Is(err, ErrNoDevice) {
		t.Fatalf("errors.Is(%v, ErrNoDevice) = true", err)
	}
	var ce *CallError
	if !errors.As(err, &ce) || ce.Func != "cuMemAlloc_v2" {
		t.Fatalf("errors.As: %v", err)
	}
	for _, want := range []string{"cuMemAlloc_v2", "CUDA_ERROR_OUT_OF_MEMORY", "(2)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if got := Result(12345).Name(); got != "CUresult(12345)" {
		t.Errorf("unknown name = %q", got)
	}
}

func TestFormatVersion(t *testing.T) {
	for v, want := range map[int]string{13000: "13.0", 12040: "12.4", 11080: "11.8"} {
		if got := FormatVersion(v); got != want {
			t.Errorf("FormatVersion(%d) = %q, want %q", v, got, want)
		}
	}
	msg := (&DriverTooOldError{Version: 11020, Min: MinDriverVersion}).Error()
	if !strings.Contains(msg, "11.2") || !strings.Contains(msg, "11.4") {
		t.Errorf("DriverTooOldError = %q", msg)
	}
}

func TestLoadMissingLibrary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	bogus := filepath.Join(t.TempDir(), "libcuda.so.1")
	_, err := load(Options{LibraryPath: bogus})
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("load(%s) = %v, want *LoadError", bogus, err)
	}
	if len(le.Tried) != 1 || le.Tried[0].Path != bogus || !strings.Contains(err.Error(), bogus) {
		t.Errorf("LoadError = %v", err)
	}
}

func TestLoadNotALibrary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	bogus := filepath.Join(t.TempDir(), "libcuda.so.1")
	if err := os.WriteFile(bogus, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := load(Options{LibraryPath: bogus})
	var le *LoadError
	if !errors.As(err, &le) || le.Tried[0].Err == nil {
		t.Fatalf("load(%s) = %v, want *LoadError with the dlopen error", bogus, err)
	}
	t.Log(err)
}

// The toolkit's stub library must be recognised, not mistaken for a driver.
func TestLoadStubLibrary(t *testing.T) {
	var stub string
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/stubs/libcuda.so", "/usr/local/cuda/lib64/stubs/libcuda.so"} {
		if _, err := os.Stat(p); err == nil {
			stub = p
			break
		}
	}
	if stub == "" {
		t.Skip("no CUDA toolkit stub libcuda.so on this machine")
	}
	_, err := load(Options{LibraryPath: stub})
	if !errors.Is(err, ErrStubLibrary) {
		t.Fatalf("load(%s) = %v, want ErrStubLibrary", stub, err)
	}
	if !strings.Contains(err.Error(), "CUDA_ERROR_STUB_LIBRARY") {
		t.Errorf("message %q lacks the error name", err)
	}
}

// Whatever this machine has, loading the default library either works or
// fails with one of the documented error types.
func TestLoadDefault(t *testing.T) {
	_, err := load(Options{})
	var (
		le  *LoadError
		old *DriverTooOldError
		ce  *CallError
	)
	switch {
	case err == nil:
		t.Log("driver loaded and initialised")
	case errors.As(err, &le), errors.As(err, &old), errors.As(err, &ce), errors.Is(err, ErrNotSupported):
		t.Logf("no usable driver: %v", err)
	default:
		t.Fatalf("load: unexpected error type %T: %v", err, err)
	}
}
