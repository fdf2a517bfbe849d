// Package dl opens shared libraries and binds their functions through
// purego, without cgo, for packages cudadrv and cublas. It never panics on a
// missing library or symbol: both become errors that name what was missing.
package dl

import (
	"errors"
	"fmt"
)

// ErrNotSupported is returned outside linux.
var ErrNotSupported = errors.New("dynamic loading of CUDA libraries is not supported on this platform")

// Attempt is one library path tried and why it failed.
type Attempt struct {
	Path string
	Err  error
}

// Symbol pairs a C entry point with a pointer to the Go func variable it is
// bound to.
type Symbol struct {
	Name string
	Fn   any
}

// SymbolError reports a missing entry point in a loaded library.
type SymbolError struct {
	Library string
	Symbol  string
	Err     error
}

// Error implements error.
func (e *SymbolError) Error() string {
	return fmt.Sprintf("%s: missing symbol %s: %v", e.Library, e.Symbol, e.Err)
}

// Unwrap returns the dlsym error.
func (e *SymbolError) Unwrap() error { return e.Err }
