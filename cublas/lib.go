package cublas

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/m40llm/m40llm/internal/dl"
)

// Sonames are tried in this order. cuBLAS 12 is first because it is the
// newest release that still supports Maxwell (the Tesla M40, compute 5.2) and
// runs on current (CUDA 13) drivers; cuBLAS 11 also supports Maxwell. cuBLAS
// 13 dropped every architecture before compute 7.5, so it is last and only
// accepted on such GPUs.
var Sonames = []string{"libcublas.so.12", "libcublas.so.11", "libcublas.so.13"}

// minCompute13 is the oldest compute capability (10*major + minor) cuBLAS 13
// supports.
const minCompute13 = 75

// defaultDirs are searched after the dlopen search and Options.Dirs.
var defaultDirs = []string{
	"/usr/local/cuda/lib64",
	"/usr/local/cuda-12/lib64",
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu",
	"/usr/lib64",
	"/usr/lib",
}

// Options configures Load.
type Options struct {
	// Path, when set, is the only library tried (m40llm reads it from
	// M40LLM_LIBCUBLAS).
	Path string
	// Dirs are searched after the dlopen search (which honours
	// LD_LIBRARY_PATH) and before the built-in folders; m40llm passes
	// $CONDA_PREFIX/lib.
	Dirs []string
	// ComputeMajor and ComputeMinor describe the GPU the library will
	// serve; cuBLAS 13 is refused below compute 7.5. Zero means unknown.
	ComputeMajor, ComputeMinor int
}

// ErrNotFound is wrapped by the *LoadError Load returns when no cuBLAS
// library could be opened.
var ErrNotFound = errors.New("cuBLAS not found")

// LoadError lists the paths Load tried.
type LoadError struct {
	Tried []dl.Attempt
}

// Error implements error.
func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (looked for %s); tried:", ErrNotFound, strings.Join(Sonames, ", "))
	for _, a := range e.Tried {
		fmt.Fprintf(&b, "\n  %s: %v", a.Path, a.Err)
	}
	return b.String()
}

// Unwrap returns ErrNotFound.
func (e *LoadError) Unwrap() error { return ErrNotFound }

// UnsupportedDeviceError reports a cuBLAS too new for the GPU.
type UnsupportedDeviceError struct {
	Path         string
	Version      int // cuBLAS major version
	Major, Minor int // device compute capability
}

// Error implements error.
func (e *UnsupportedDeviceError) Error() string {
	return fmt.Sprintf("%s is cuBLAS %d, which does not support compute capability %d.%d; "+
		"install cuBLAS 12 (for example the nvidia-cublas-cu12 wheel or conda's libcublas 12) "+
		"and point M40LLM_LIBCUBLAS at its libcublas.so.12; the built-in GEMM kernels are used meanwhile",
		e.Path, e.Version, e.Major, e.Minor)
}

// Library is a loaded cuBLAS.
type Library struct {
	path                string
	major, minor, patch int
	cublasCreate        func(h *uintptr) Status
	cublasDestroy       func(h uintptr) Status
	cublasSetStream     func(h uintptr, s uintptr) Status
	cublasGetProperty   func(prop int32, v *int32) Status
	cublasGemmEx        func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uintptr, atype int32, lda int32, b uintptr, btype int32, ldb int32, beta *float32, c uintptr, ctype int32, ldc int32, compute int32, algo int32) Status
}

// Load opens cuBLAS: Options.Path alone if set; otherwise, for each of
// Sonames in turn, the dlopen search and then Options.Dirs and the usual
// CUDA and distribution folders. On a GPU older than compute 7.5 cuBLAS 13
// is refused with an *UnsupportedDeviceError (and the search goes on).
//
// Failures: a *LoadError (errors.Is ErrNotFound) listing every path tried
// when none opened; the *UnsupportedDeviceError when the only library found
// was too new; an error naming the entry point when the first library that
// opens lacks one of the bound functions, or the *CallError of
// cublasGetProperty (the search stops at that library); and, outside
// linux, an error saying dynamic loading is not supported.
func Load(opts Options) (*Library, error) {
	if runtime.GOOS != "linux" {
		return nil, dl.ErrNotSupported
	}
	cc := 10*opts.ComputeMajor + opts.ComputeMinor
	old := cc != 0 && cc < minCompute13
	var tried []dl.Attempt
	var refused *UnsupportedDeviceError
	for _, cand := range candidates(opts) {
		h, path, t := dl.Open([]string{cand})
		tried = append(tried, t...)
		if h == 0 {
			continue
		}
		lib, err := bindLibrary(h, path)
		if err != nil {
			return nil, err
		}
		if old && lib.major >= 13 {
			// Keep looking: an older cuBLAS may be further down the list.
			refused = &UnsupportedDeviceError{Path: path, Version: lib.major, Major: opts.ComputeMajor, Minor: opts.ComputeMinor}
			tried = append(tried, dl.Attempt{Path: path, Err: refused})
			continue
		}
		return lib, nil
	}
	if refused != nil {
		return nil, refused
	}
	return nil, &LoadError{Tried: tried}
}

func candidates(opts Options) []string {
	if opts.Path != "" {
		return []string{opts.Path}
	}
	dirs := append(append([]string(nil), opts.Dirs...), defaultDirs...)
	var c []string
	for _, so := range Sonames {
		c = append(c, so)
		for _, d := range dirs {
			c = append(c, filepath.Join(d, so))
		}
	}
	return c
}

// libraryPropertyType values.
const (
	propMajor = 0
	propMinor = 1
	propPatch = 2
)

func bindLibrary(h uintptr, path string) (*Library, error) {
	l := &Library{path: path}
	syms := []dl.Symbol{
		{Name: "cublasCreate_v2", Fn: &l.cublasCreate},
		{Name: "cublasDestroy_v2", Fn: &l.cublasDestroy},
		{Name: "cublasSetStream_v2", Fn: &l.cublasSetStream},
		{Name: "cublasGetProperty", Fn: &l.cublasGetProperty},
		{Name: "cublasGemmEx", Fn: &l.cublasGemmEx},
	}
	if err := dl.Bind(h, path, syms); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		prop int32
		dst  *int
	}{{propMajor, &l.major}, {propMinor, &l.minor}, {propPatch, &l.patch}} {
		var v int32
		if err := check("cublasGetProperty", l.cublasGetProperty(p.prop, &v)); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		*p.dst = int(v)
	}
	return l, nil
}

// Path returns the file that was loaded.
func (l *Library) Path() string { return l.path }

// Version returns the library's major, minor and patch version.
func (l *Library) Version() (major, minor, patch int) { return l.major, l.minor, l.patch }
