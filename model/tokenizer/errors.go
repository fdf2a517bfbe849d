package tokenizer

import (
	"errors"
	"fmt"
)

// ErrUnsupported is matched (errors.Is) by the *UnsupportedError that New
// returns for a tokenizer model or pre-tokenizer this package does not
// implement.
var ErrUnsupported = errors.New("tokenizer: unsupported")

// UnsupportedError reports a tokenizer.ggml.model or tokenizer.ggml.pre
// value that is known to exist but is not implemented here, or that is not
// known at all.
type UnsupportedError struct {
	Key    string // "tokenizer.ggml.model" or "tokenizer.ggml.pre"
	Value  string // the value found in the metadata
	Reason string // what it is, e.g. "WordPiece (BERT) tokenizer"
}

// Error describes what is unsupported and why.
func (e *UnsupportedError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("tokenizer: unsupported %s %q", e.Key, e.Value)
	}
	return fmt.Sprintf("tokenizer: unsupported %s %q: %s", e.Key, e.Value, e.Reason)
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// MetadataError reports tokenizer metadata that is missing or malformed.
// Err, when set, is the underlying *gguf.KeyError.
type MetadataError struct {
	Key string
	Msg string
	Err error
}

// Error names the key and the problem.
func (e *MetadataError) Error() string {
	switch {
	case e.Msg != "" && e.Err != nil:
		return fmt.Sprintf("tokenizer: %s: %s: %v", e.Key, e.Msg, e.Err)
	case e.Err != nil:
		return fmt.Sprintf("tokenizer: %v", e.Err)
	}
	return fmt.Sprintf("tokenizer: %s: %s", e.Key, e.Msg)
}

// Unwrap returns the underlying error, if any.
func (e *MetadataError) Unwrap() error { return e.Err }
