package gguf

import (
	"errors"
	"fmt"
)

// ErrNotGGUF is matched (errors.Is) by the *FormatError for a file that does
// not start with the GGUF magic.
var ErrNotGGUF = errors.New("not a GGUF file")

// ErrTruncated is matched by a *FormatError for a file that ends before the
// structure it describes.
var ErrTruncated = errors.New("truncated file")

// FormatError reports malformed GGUF input at a byte offset.
type FormatError struct {
	Off int64  // byte offset in the file where the problem was found
	Msg string // what is wrong
	Val any    // the offending value, if any
	// Err is an optional sentinel (ErrNotGGUF, ErrTruncated) for errors.Is.
	Err error
}

func (e *FormatError) Error() string {
	msg := e.Msg
	if e.Val != nil {
		msg += fmt.Sprintf(" '%v'", e.Val)
	}
	return fmt.Sprintf("gguf: %s at byte offset %d", msg, e.Off)
}

// Unwrap returns the sentinel, if any.
func (e *FormatError) Unwrap() error { return e.Err }

func formatErr(off int64, msg string, val any) *FormatError {
	return &FormatError{Off: off, Msg: msg, Val: val}
}
