package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sharedVocab returns a vocabulary of the shared test data (see
// fixture.Shared for what happens when it is missing).
func sharedVocab(t *testing.T, name string) string {
	t.Helper()
	return fixture.Shared(t, "vocab/ggml-vocab-"+name+".gguf")
}

// tokenizeIDs runs m40llm tokenize and decodes its JSON output.
func tokenizeIDs(t *testing.T, args ...string) []int32 {
	var out, errb bytes.Buffer
	code := run(append([]string{"m40llm", "tokenize"}, args...), &out, &errb)
	require.Equal(t, 0, code, "stderr: %s", errb.String())
	var ids []int32
	require.NoError(t, json.Unmarshal(out.Bytes(), &ids), "output %q", out.String())
	require.NotNil(t, ids, "output %q is an array", out.String())
	return ids
}

func TestTokenize(t *testing.T) {
	stories260K := fixture.BundledModel(t)
	spm := sharedVocab(t, "llama-spm")
	textFile := filepath.Join(t.TempDir(), "text.txt")
	require.NoError(t, os.WriteFile(textFile, []byte("Hello world"), 0o644))
	tests := []struct {
		name string
		args []string
		want []int32
	}{
		// SentencePiece ids of tok512 from stories260K.expected.json, after BOS.
		{"stories260K", []string{"-m", stories260K, "Once upon a time"}, []int32{1, 403, 407, 261, 378}},
		{"no bos", []string{"-m", stories260K, "--no-bos", "Once upon a time"}, []int32{403, 407, 261, 378}},
		{"special tokens parsed", []string{"-m", spm, "<s>hello</s>"}, []int32{1, 1, 22172, 2}},
		{"file", []string{"--model", spm, "-f", textFile}, []int32{1, 15043, 3186}},
		{"empty text", []string{"-m", spm, "--no-bos", ""}, []int32{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tokenizeIDs(t, tt.args...))
		})
	}
}

func TestTokenizeStdin(t *testing.T) {
	spm := sharedVocab(t, "llama-spm")
	in := filepath.Join(t.TempDir(), "stdin")
	require.NoError(t, os.WriteFile(in, []byte("Hello world"), 0o644))
	f, err := os.Open(in)
	require.NoError(t, err)
	defer f.Close()
	saved := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = saved }()
	assert.Equal(t, []int32{1, 15043, 3186}, tokenizeIDs(t, "-m", spm))
}

// TestTokenizeBook tokenizes War and Peace through the command; llama.cpp
// gives 792,623 tokens with the GPT-2 vocabulary (which adds no BOS).
func TestTokenizeBook(t *testing.T) {
	if testing.Short() {
		t.Skip("tokenizes a 3 MB book; skipped with -short")
	}
	book := fixture.Shared(t, "text/war-and-peace.txt")
	ids := tokenizeIDs(t, "-m", sharedVocab(t, "gpt-2"), "-f", book)
	assert.Len(t, ids, 792623)
}

func TestTokenizeErrors(t *testing.T) {
	spm := sharedVocab(t, "llama-spm")
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no model", []string{"hello"}, 2, "needs a model"},
		{"two texts", []string{"-m", spm, "a", "b"}, 2, "at most one TEXT"},
		{"text and file", []string{"-m", spm, "-f", spm, "a"}, 2, "not both"},
		{"unknown flag", []string{"-m", spm, "--bogus", "a"}, 2, "bogus"},
		{"missing model file", []string{"-m", filepath.Join(t.TempDir(), "none.gguf"), "a"}, 3, "no such file"},
		{"missing text file", []string{"-m", spm, "-f", filepath.Join(t.TempDir(), "none.txt")}, 3, "no such file"},
		{"unsupported vocabulary", []string{"-m", sharedVocab(t, "bert-bge"), "a"}, 5, "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"m40llm", "tokenize"}, tt.args...), &out, &errb)
			assert.Equal(t, tt.code, code)
			assert.Contains(t, errb.String(), tt.msg)
			assert.Empty(t, out.String())
		})
	}
}

// -f - reads standard input, keeping its trailing newline (llama.cpp's
// llama-tokenize keeps the text as it is).
func TestTokenizeFileDash(t *testing.T) {
	spm := sharedVocab(t, "llama-spm")
	out, errs, code := runCLI(t, "Hello world\n", "tokenize", "-m", spm, "-f", "-")
	require.Equal(t, 0, code, errs)
	var ids []int32
	require.NoError(t, json.Unmarshal([]byte(out), &ids))
	assert.Equal(t, []int32{1, 15043, 3186}, ids[:3])
	assert.Len(t, ids, 4, "the newline is a token")
}
