package errclass

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/m40llm/m40llm/model/tokenizer"
	"github.com/stretchr/testify/assert"
)

func TestOf(t *testing.T) {
	_, paramErr := sample.New(sample.Params{TopP: 0})
	oom := &cudadrv.CallError{Func: "cuMemAlloc_v2", Result: cudadrv.ErrOutOfMemory}
	launch := &cudadrv.CallError{Func: "cuLaunchKernel", Result: cudadrv.ErrLaunchFailed}
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, Internal},
		{"unknown", errors.New("something"), Internal},
		{"cancelled", fmt.Errorf("generate: %w", context.Canceled), Canceled},
		{"deadline", context.DeadlineExceeded, Canceled},
		{"cancelled while the device failed", fmt.Errorf("%w: %w", context.Canceled, model.ErrBackendFailed), Canceled},
		{"backend failed", fmt.Errorf("%w: %w", model.ErrBackendFailed, errors.New("injected")), Device},
		{"backend failed after an allocation", fmt.Errorf("%w: %w", model.ErrBackendFailed, oom), Device},
		{"device OOM", fmt.Errorf("scratch: %w", oom), OutOfMemory},
		{"plan OOM", fmt.Errorf("load: %w", cudadrv.ErrOutOfMemory), OutOfMemory},
		{"host OOM", fmt.Errorf("%w: the KV cache", model.ErrOutOfMemory), OutOfMemory},
		{"context full", fmt.Errorf("eval: %w", model.ErrContextFull), ContextFull},
		{"no device", &cudadrv.CallError{Func: "cuInit", Result: cudadrv.ErrNoDevice}, NoDevice},
		{"no driver", &cudadrv.LoadError{Library: "libcuda.so.1"}, NoDevice},
		{"old driver", &cudadrv.DriverTooOldError{Version: 10000, Min: 11040}, NoDevice},
		{"stub", &cudadrv.CallError{Func: "cuInit", Result: cudadrv.ErrStubLibrary}, NoDevice},
		{"missing symbol", &cudadrv.SymbolError{Library: "libcuda.so.1", Symbol: "cuInit"}, NoDevice},
		{"platform", cudadrv.ErrNotSupported, NoDevice},
		{"architecture", fmt.Errorf("x: %w", &model.UnsupportedError{What: "architecture", Value: "mamba"}), Unsupported},
		{"tensor type", fmt.Errorf("loading tensor: %w", &model.UnsupportedError{What: "tensor type", Value: "IQ2_XXS", By: "cuda:0"}), Unsupported},
		{"tokenizer", &tokenizer.UnsupportedError{Key: "k", Value: "bert"}, Unsupported},
		{"format", &gguf.FormatError{Msg: "bad", Err: gguf.ErrNotGGUF}, Format},
		{"config", &model.ConfigError{Key: "k", Msg: "m"}, Format},
		{"tensor", fmt.Errorf("x: %w", &model.TensorError{Name: "t", Msg: "m"}), Format},
		{"tokenizer metadata", &tokenizer.MetadataError{Key: "k", Err: errors.New("x")}, Format},
		{"no file", &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}, IO},
		{"sampler", paramErr, Invalid},
		{"option", &model.OptionError{Option: "BatchSize", Msg: "m"}, Invalid},
		{"template", &chat.TemplateError{Message: "m"}, Invalid},
		{"token", fmt.Errorf("%w: 99999", model.ErrInvalidToken), Invalid},
		{"request", fmt.Errorf("%w: empty prompt", model.ErrInvalidRequest), Invalid},
		{"grammar dead end", fmt.Errorf("%w after 3 generated tokens (position 9 of the sequence)", model.ErrGrammarDeadEnd), Invalid},
		{"device ordinal", fmt.Errorf("cuda: device 3: %w", cudadrv.ErrInvalidDevice), Invalid},
		{"launch", launch, Device},
		{"cublas", &cublas.CallError{Func: "cublasGemmEx", Status: 13}, Device},
		{"closed context", cudadrv.ErrContextClosed, Device},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Of(tt.err), "%v", tt.err)
		})
	}
	for c := Internal; c <= Invalid; c++ {
		assert.NotEqual(t, "class(?)", c.String())
	}
}
