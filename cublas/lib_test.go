package cublas

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestStatusError(t *testing.T) {
	err := fmt.Errorf("matmul: %w", &CallError{Func: "cublasGemmEx", Status: ErrNotSupported})
	if !errors.Is(err, ErrNotSupported) || errors.Is(err, ErrArchMismatch) {
		t.Fatalf("errors.Is on %v", err)
	}
	for _, want := range []string{"cublasGemmEx", "CUBLAS_STATUS_NOT_SUPPORTED", "(15)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if got := Status(99).Error(); got != "cublasStatus(99) (99)" {
		t.Errorf("unknown status: %q", got)
	}
}

// cuBLAS 12 comes first (newest with Maxwell support), 13 last.
func TestCandidatesOrder(t *testing.T) {
	c := candidates(Options{Dirs: []string{"/opt/conda/lib"}})
	if c[0] != "libcublas.so.12" {
		t.Errorf("first candidate %q", c[0])
	}
	if c[1] != "/opt/conda/lib/libcublas.so.12" {
		t.Errorf("second candidate %q, want the conda folder", c[1])
	}
	last12, first13 := -1, -1
	for i, p := range c {
		if strings.HasSuffix(p, ".so.12") {
			last12 = i
		}
		if strings.HasSuffix(p, ".so.13") && first13 < 0 {
			first13 = i
		}
	}
	if first13 < last12 {
		t.Errorf("cuBLAS 13 tried before every cuBLAS 12 path: %v", c)
	}
	if got := candidates(Options{Path: "/x/libcublas.so.12"}); len(got) != 1 {
		t.Errorf("an explicit Path must be the only candidate: %v", got)
	}
}

func TestLoadMissing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	bogus := filepath.Join(t.TempDir(), "libcublas.so.12")
	_, err := Load(Options{Path: bogus})
	var le *LoadError
	if !errors.As(err, &le) || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), bogus) {
		t.Fatalf("Load(%s) = %v", bogus, err)
	}
}

func TestUnsupportedDeviceMessage(t *testing.T) {
	msg := (&UnsupportedDeviceError{Path: "/usr/lib/libcublas.so.13", Version: 13, Major: 5, Minor: 2}).Error()
	for _, want := range []string{"cuBLAS 13", "5.2", "cuBLAS 12", "M40LLM_LIBCUBLAS", "built-in GEMM"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
}
