//go:build linux

package dl

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ebitengine/purego"
)

// Open tries each candidate in turn with RTLD_NOW|RTLD_GLOBAL. A candidate
// without a slash goes through the normal dlopen search (LD_LIBRARY_PATH, the
// linker cache); one with a slash must exist. Open returns the first handle,
// the opened file's path (resolved through /proc/self/maps for a bare
// soname), and every failed attempt before it.
func Open(candidates []string) (handle uintptr, path string, tried []Attempt) {
	for _, c := range candidates {
		if strings.Contains(c, "/") {
			if _, err := os.Stat(c); err != nil {
				tried = append(tried, Attempt{Path: c, Err: err})
				continue
			}
		}
		h, err := purego.Dlopen(c, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			tried = append(tried, Attempt{Path: c, Err: err})
			continue
		}
		path = c
		if !strings.Contains(c, "/") {
			if p := mappedPath(c); p != "" {
				path = p
			}
		}
		return h, path, tried
	}
	return 0, "", tried
}

// mappedPath finds the file a soname resolved to in /proc/self/maps: the
// soname's stem ("libcuda.so" of "libcuda.so.1") followed by a version, as
// in libcuda.so.580.95.05.
func mappedPath(soname string) string {
	stem := soname
	if i := strings.Index(stem, ".so"); i >= 0 {
		stem = stem[:i+3]
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 6 {
			continue
		}
		p := fields[len(fields)-1]
		base := filepath.Base(p)
		if base == stem || strings.HasPrefix(base, stem+".") {
			return p
		}
	}
	return ""
}

// Bind resolves each symbol with Dlsym and binds it with RegisterFunc (never
// RegisterLibFunc, which panics on a missing symbol). lib names the library
// in errors.
func Bind(h uintptr, lib string, syms []Symbol) error {
	for _, s := range syms {
		p, err := purego.Dlsym(h, s.Name)
		if err != nil {
			return &SymbolError{Library: lib, Symbol: s.Name, Err: err}
		}
		purego.RegisterFunc(s.Fn, p)
	}
	return nil
}

// Close drops a handle from Open, so that a library that failed to
// initialise does not shadow the next one with the same soname.
func Close(h uintptr) { purego.Dlclose(h) }

// Has reports whether h exports name.
func Has(h uintptr, name string) bool {
	_, err := purego.Dlsym(h, name)
	return err == nil
}

// Gettid returns the calling OS thread's id.
func Gettid() int { return syscall.Gettid() }
