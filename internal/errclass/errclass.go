// Package errclass sorts the errors of every layer (GGUF parsing, model
// loading, the backends, generation) into the few classes that the front
// ends answer differently. It is the one place that knows which error
// means what; the command line maps a Class to an exit status, the server
// to an HTTP status and the C API to an m40llm_status, each with one
// table.
package errclass

import (
	"context"
	"errors"
	"io/fs"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/m40llm/m40llm/model/tokenizer"
)

// Class is what kind of failure an error is, from its caller's side.
type Class int

// The classes, in the order Of tests them.
const (
	// Internal: a bug, or a failure no class describes.
	Internal Class = iota
	// Canceled: the caller gave up (its context was cancelled or timed
	// out).
	Canceled
	// Device: the GPU or its libraries failed a call, or the backend has
	// become unusable (model.ErrBackendFailed).
	Device
	// OutOfMemory: the device (or host) memory does not suffice.
	OutOfMemory
	// ContextFull: the sequence does not fit in the context.
	ContextFull
	// NoDevice: no usable GPU: no driver, no device, a driver too old, a
	// missing symbol, a stub library.
	NoDevice
	// Unsupported: a well-formed model that this build cannot run (an
	// architecture, a tensor type, a tokenizer).
	Unsupported
	// Format: the model file is malformed (bad GGUF, bad hyper-parameters,
	// missing or misshapen tensors, bad tokenizer metadata).
	Format
	// IO: a file cannot be read (missing, no permission).
	IO
	// Invalid: a bad argument: a sampling parameter, a token outside the
	// vocabulary, an option that cannot work, a chat template that refuses
	// the messages, a grammar that the vocabulary cannot follow
	// (model.ErrGrammarDeadEnd: it needs text no token spells).
	Invalid
)

var names = [...]string{
	Internal: "internal", Canceled: "canceled", Device: "device", OutOfMemory: "out of memory",
	ContextFull: "context full", NoDevice: "no device", Unsupported: "unsupported", Format: "format",
	IO: "io", Invalid: "invalid",
}

// String names the class.
func (c Class) String() string {
	if c >= 0 && int(c) < len(names) {
		return names[c]
	}
	return "class(?)"
}

// Of returns the class of err (Internal for nil and for errors no class
// describes). The first class that matches wins, in the order of the
// constants: a request cancelled while the device failed is Canceled, a
// device fault caused by an allocation is Device.
func Of(err error) Class {
	if err == nil {
		return Internal
	}
	var (
		res  cudadrv.Result
		call *cudadrv.CallError
		modE *cudadrv.ModuleError
		blas cublas.Status
		bc   *cublas.CallError
		bl   *cublas.LoadError
		bu   *cublas.UnsupportedDeviceError
		le   *cudadrv.LoadError
		old  *cudadrv.DriverTooOldError
		se   *cudadrv.SymbolError
		fe   *gguf.FormatError
		ce   *model.ConfigError
		te   *model.TensorError
		me   *tokenizer.MetadataError
		pe   *fs.PathError
		pme  *sample.ParamError
		oe   *model.OptionError
		tpl  *chat.TemplateError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Canceled
	case errors.Is(err, model.ErrBackendFailed):
		return Device
	case errors.Is(err, cudadrv.ErrOutOfMemory), errors.Is(err, model.ErrOutOfMemory):
		return OutOfMemory
	case errors.Is(err, model.ErrContextFull):
		return ContextFull
	case errors.Is(err, cudadrv.ErrNoDevice), errors.Is(err, cudadrv.ErrStubLibrary), errors.Is(err, cudadrv.ErrNotSupported),
		errors.As(err, &le), errors.As(err, &old), errors.As(err, &se):
		return NoDevice
	case errors.Is(err, model.ErrUnsupported), errors.Is(err, model.ErrUnsupportedArch), errors.Is(err, tokenizer.ErrUnsupported):
		return Unsupported
	case errors.As(err, &fe), errors.As(err, &ce), errors.As(err, &te), errors.As(err, &me):
		return Format
	case errors.As(err, &pe):
		return IO
	case errors.As(err, &pme), errors.As(err, &oe), errors.As(err, &tpl), errors.Is(err, model.ErrInvalidToken),
		errors.Is(err, model.ErrInvalidRequest), errors.Is(err, cudadrv.ErrInvalidDevice), errors.Is(err, model.ErrGrammarDeadEnd):
		return Invalid
	case errors.As(err, &call), errors.As(err, &res), errors.As(err, &modE), errors.As(err, &blas), errors.As(err, &bc),
		errors.As(err, &bl), errors.As(err, &bu), errors.Is(err, cudadrv.ErrContextClosed):
		return Device
	}
	return Internal
}
