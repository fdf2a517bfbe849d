package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// Without a driver library the command explains itself and exits 0.
func TestDevicesNoLibrary(t *testing.T) {
	bogus := filepath.Join(t.TempDir(), "libcuda.so.1")
	t.Setenv("M40LLM_LIBCUDA", bogus)
	var out, errb bytes.Buffer
	if code := run([]string{"m40llm", "devices"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	for _, want := range []string{"CUDA: not available", "libcuda.so.1 not found", bogus, "runs on the CPU"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// Whatever this machine has, the command succeeds and either lists GPUs or
// says why there are none.
func TestDevicesDefault(t *testing.T) {
	t.Setenv("M40LLM_LIBCUDA", "")
	var out, errb bytes.Buffer
	if code := run([]string{"m40llm", "devices"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	s := out.String()
	if !strings.Contains(s, "GPU 0:") && !strings.Contains(s, "CUDA: not available") {
		t.Fatalf("unexpected output:\n%s", s)
	}
	t.Log("\n" + s)
}

func TestDevicesRejectsArguments(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"m40llm", "devices", "extra"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
}
