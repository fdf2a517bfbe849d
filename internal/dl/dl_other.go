//go:build !linux

package dl

// Open reports every candidate as failed with ErrNotSupported.
func Open(candidates []string) (handle uintptr, path string, tried []Attempt) {
	for _, c := range candidates {
		tried = append(tried, Attempt{Path: c, Err: ErrNotSupported})
	}
	return 0, "", tried
}

// Bind returns ErrNotSupported.
func Bind(uintptr, string, []Symbol) error { return ErrNotSupported }

// Close does nothing.
func Close(uintptr) {}

// Has returns false.
func Has(uintptr, string) bool { return false }

// Gettid returns -1.
func Gettid() int { return -1 }
