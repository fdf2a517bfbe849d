package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/m40llm/m40llm/model/tokenizer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatusOf(t *testing.T) {
	_, pmErr := sample.New(sample.Params{TopP: 0})
	tests := []struct {
		name string
		err  error
		want status
	}{
		{"api error", argErrorf("x"), stInvalidArg},
		{"wrapped api error", fmt.Errorf("y: %w", errorf(stBusy, "x")), stBusy},
		{"context full", fmt.Errorf("eval: %w", model.ErrContextFull), stContextFull},
		{"no file", &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}, stIO},
		{"format", &gguf.FormatError{Msg: "bad", Err: gguf.ErrNotGGUF}, stFormat},
		{"config", &model.ConfigError{Key: "k", Msg: "m"}, stFormat},
		{"tensor", fmt.Errorf("x: %w", &model.TensorError{Name: "t", Msg: "m"}), stFormat},
		{"tokenizer metadata", &tokenizer.MetadataError{Key: "k", Err: errors.New("x")}, stFormat},
		{"architecture", fmt.Errorf("%w: mamba", model.ErrUnsupportedArch), stUnsupported},
		{"tokenizer", &tokenizer.UnsupportedError{Key: "k", Value: "bert"}, stUnsupported},
		{"sampler", pmErr, stInvalidArg},
		{"no device", &cudadrv.CallError{Func: "cuInit", Result: cudadrv.ErrNoDevice}, stNoDevice},
		{"no driver", &cudadrv.LoadError{Library: "libcuda.so.1"}, stNoDevice},
		{"old driver", &cudadrv.DriverTooOldError{Version: 10000, Min: 11040}, stNoDevice},
		{"stub", &cudadrv.CallError{Func: "cuInit", Result: cudadrv.ErrStubLibrary}, stNoDevice},
		{"device OOM", fmt.Errorf("alloc: %w", &cudadrv.CallError{Func: "cuMemAlloc_v2", Result: cudadrv.ErrOutOfMemory}), stOutOfMemory},
		{"launch", &cudadrv.CallError{Func: "cuLaunchKernel", Result: cudadrv.ErrLaunchFailed}, stCUDA},
		{"cublas", &cublas.CallError{Func: "cublasGemmEx", Status: 13}, stCUDA},
		{"closed context", cudadrv.ErrContextClosed, stCUDA},
		{"unknown", errors.New("something"), stInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Error(t, tt.err)
			assert.Equal(t, tt.want, statusOf(tt.err, stInternal))
		})
	}
	assert.Equal(t, stUnsupported, statusOf(errors.New("x"), stUnsupported), "fallback")
}

func TestFailSetsLastError(t *testing.T) {
	assert.Equal(t, stIO, fail(&fs.PathError{Op: "open", Path: "/x.gguf", Err: fs.ErrNotExist}, stInternal))
	assert.Equal(t, "open /x.gguf: file does not exist", lastError())
	assert.Equal(t, stOK, fail(nil, stInternal))

	// Long messages are cut at 2047 bytes, not inside a UTF-8 sequence.
	fail(errors.New(strings.Repeat("é", 2000)), stInternal)
	msg := lastError()
	assert.Len(t, msg, 2046)
	assert.True(t, strings.HasPrefix(strings.Repeat("é", 2000), msg))
}

// panicky panics the way a bug in an entry point would.
func panicky() (st status) {
	defer recoverPanic(&st)
	var s []int
	i := len(os.Args) + 2
	s[i]++
	return stOK
}

func TestRecoverPanic(t *testing.T) {
	assert.Equal(t, stInternal, panicky())
	msg := lastError()
	assert.Contains(t, msg, "internal error: panic: runtime error: index out of range")
	assert.Contains(t, msg, "capi.panicky errors_test.go:")
}

// TestEveryExportRecovers checks the rule that keeps panics from crossing
// into C: every //export function has a named result st and defers
// recoverPanic(&st) first.
func TestEveryExportRecovers(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	n := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		require.NoError(t, err)
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Doc == nil || !hasExport(fn.Doc) {
				continue
			}
			n++
			pos := fset.Position(fn.Pos())
			res := fn.Type.Results
			require.True(t, res != nil && len(res.List) == 1 && len(res.List[0].Names) == 1 && res.List[0].Names[0].Name == "st",
				"%s: %s must have the named result st", pos, fn.Name.Name)
			require.NotEmpty(t, fn.Body.List, "%s: %s is empty", pos, fn.Name.Name)
			def, ok := fn.Body.List[0].(*ast.DeferStmt)
			ok = ok && len(def.Call.Args) == 1
			if ok {
				id, isIdent := def.Call.Fun.(*ast.Ident)
				arg, isUnary := def.Call.Args[0].(*ast.UnaryExpr)
				ok = isIdent && id.Name == "recoverPanic" && isUnary && arg.Op == token.AND
			}
			assert.True(t, ok, "%s: %s must start with defer recoverPanic(&st)", pos, fn.Name.Name)
		}
	}
	assert.Greater(t, n, 25, "exported functions found")
}

// hasExport reports whether a doc comment holds a //export line (go/ast
// drops directives from Text).
func hasExport(g *ast.CommentGroup) bool {
	for _, c := range g.List {
		if strings.HasPrefix(c.Text, "//export ") {
			return true
		}
	}
	return false
}

func TestGuard(t *testing.T) {
	var g guard
	require.NoError(t, g.enter("x"))
	err := g.close("x", nil)
	assert.Equal(t, stBusy, statusOf(err, stInternal))
	g.exit()
	err = g.close("x", func() error { return errorf(stBusy, "sessions") })
	assert.EqualError(t, err, "sessions")
	require.NoError(t, g.close("x", nil))
	assert.Equal(t, stInvalidHandle, statusOf(g.enter("x"), stInternal))
	assert.Equal(t, stInvalidHandle, statusOf(g.close("x", nil), stInternal))
}

func TestMulBytes(t *testing.T) {
	assert.Equal(t, int64(24), mulBytes(4, 2, 3))
	assert.Equal(t, int64(0), mulBytes(4, 0, 1<<62))
	assert.Equal(t, int64(-1), mulBytes(4, 1<<31, 1<<31, 4))
	assert.Equal(t, int64(-1), mulBytes(2, -1))
}

// TestNoEnvironmentReads: the library reads no environment variables (only
// cmd/m40llm does).
func TestNoEnvironmentReads(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		b, err := os.ReadFile(name)
		require.NoError(t, err)
		assert.NotContains(t, string(b), "os.Getenv", name)
		assert.NotContains(t, string(b), "os.LookupEnv", name)
	}
}
