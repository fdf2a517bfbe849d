package model

import (
	"errors"
	"fmt"
)

// ErrContextFull is returned when a sequence would grow past the KV cache.
var ErrContextFull = errors.New("context window is full")

// OptionError reports an Options value that cannot work.
type OptionError struct {
	Option string // the field: "BatchSize"
	Msg    string
}

// Error names the option and the problem.
func (e *OptionError) Error() string { return fmt.Sprintf("model: option %s: %s", e.Option, e.Msg) }

// ErrOutOfMemory is matched by the errors of an allocation that the
// memory left cannot hold, found before it was tried (a Planner's check):
// the process carries on.
var ErrOutOfMemory = errors.New("out of memory")

// ErrUnsupported is matched (errors.Is) by every *UnsupportedError: the
// model file is well formed but asks for something this build cannot run.
var ErrUnsupported = errors.New("unsupported")

// ErrUnsupportedArch is matched by the *UnsupportedError for a
// general.architecture this package does not run.
var ErrUnsupportedArch = errors.New("unsupported model architecture")

// UnsupportedError reports a feature of a well-formed model file that this
// build cannot run: an architecture, or a tensor type a backend has no
// kernels for.
type UnsupportedError struct {
	What  string // "architecture", "tensor type"
	Value string // the value found: "mamba", "IQ2_XXS"
	By    string // who cannot run it: "cpu backend", "cuda:0"; empty for the model itself
	Hint  string // what is supported, when that helps
}

// Error says what is unsupported, by whom, and what is.
func (e *UnsupportedError) Error() string {
	s := fmt.Sprintf("unsupported %s %q", e.What, e.Value)
	if e.By != "" {
		s += " on " + e.By
	}
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrUnsupported) true, and errors.Is(err,
// ErrUnsupportedArch) for an architecture.
func (e *UnsupportedError) Is(target error) bool {
	return target == ErrUnsupported || target == ErrUnsupportedArch && e.What == "architecture"
}

// ErrBackendFailed is matched by the errors of a model whose backend has
// become unusable (a device fault): every later forward pass fails the
// same way, and Model.Err reports it.
var ErrBackendFailed = errors.New("the backend has failed")

// failure marks err as a backend failure when the backend has been
// unusable since.
func (m *Model) failure(err error) error {
	if err != nil && m.be.Err() != nil && !errors.Is(err, ErrBackendFailed) {
		return fmt.Errorf("%w: %w", ErrBackendFailed, err)
	}
	return err
}
