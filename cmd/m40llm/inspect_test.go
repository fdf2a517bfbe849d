package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInspectSharedFiles checks inspect's summary of every shared GGUF
// against the tables of ../shared/testdata/README.md (section 4) where it
// gives them, and that every file is summarised.
func TestInspectSharedFiles(t *testing.T) {
	files := fixture.SharedGlob(t, "*/*.gguf")
	want := map[string]struct {
		version          float64
		kvs, tensors     int
		dataOffset, prms float64
		types            map[string]int
	}{
		"stories260K.gguf":                  {3, 19, 48, 14176, 292800, map[string]int{"F32": 48}},
		"tinyllamas-stories-260k-f32.gguf":  {1, 18, 48, 11456, 292800, map[string]int{"F32": 48}},
		"tinyllamas-stories-260k-q8_0.gguf": {2, 20, 48, 14240, 292800, map[string]int{"Q8_0": 37, "F32": 11}},
		"llama-2-tiny-random.gguf":          {3, 18, 12, 724416, 513048, map[string]int{"F16": 9, "F32": 3}},
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errs, code := runCLI(t, "", "inspect", "--json", f)
			require.Equal(t, 0, code, errs)
			var got struct {
				Version    float64 `json:"version"`
				DataOffset float64 `json:"data_offset"`
				Parameters float64 `json:"parameters"`
				Metadata   []any   `json:"metadata"`
				Tensors    []struct {
					Type string `json:"type"`
				} `json:"tensors"`
				Tokenizer *struct {
					Tokens int `json:"tokens"`
				} `json:"tokenizer"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &got))
			require.NotNil(t, got.Tokenizer, "every shared file has a vocabulary")
			assert.Greater(t, got.Tokenizer.Tokens, 0)
			w, ok := want[filepath.Base(f)]
			if !ok {
				assert.Empty(t, got.Tensors, "vocabulary-only files have no tensors")
				return
			}
			assert.Equal(t, w.version, got.Version)
			assert.Len(t, got.Metadata, w.kvs)
			assert.Len(t, got.Tensors, w.tensors)
			assert.Equal(t, w.dataOffset, got.DataOffset)
			assert.Equal(t, w.prms, got.Parameters)
			types := map[string]int{}
			for _, tt := range got.Tensors {
				types[tt.Type]++
			}
			assert.Equal(t, w.types, types)

			text, _, code := runCLI(t, "", "inspect", f)
			require.Equal(t, 0, code)
			assert.Contains(t, text, "architecture:  llama")
		})
	}
}

func TestInspectRejectsBadFiles(t *testing.T) {
	data, err := os.ReadFile(fixture.BundledModel(t))
	require.NoError(t, err)
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.gguf")
	require.NoError(t, os.WriteFile(truncated, data[:len(data)/2], 0o644))
	for f, want := range map[string]int{truncated: 4, "../../README.md": 4, filepath.Join(dir, "missing.gguf"): 3} {
		out, errs, code := runCLI(t, "", "inspect", f)
		assert.Equal(t, want, code, "%s: 4 for a malformed file, 3 for one that cannot be read", f)
		assert.Empty(t, out)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		assert.Len(t, lines, 1, "one-line reason: %q", errs)
		assert.True(t, strings.HasPrefix(errs, "m40llm: "), errs)
	}
	_, errs, code := runCLI(t, "", "inspect", truncated)
	assert.Equal(t, 4, code)
	assert.Contains(t, errs, "runs past the end of the file")
	_, errs, _ = runCLI(t, "", "inspect", "../../README.md")
	assert.Contains(t, errs, "not a GGUF file")
}
