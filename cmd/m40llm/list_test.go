package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestList(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(fixture.BundledModel(t))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b-story.gguf"), data, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a-story.gguf"), data, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broken.gguf"), []byte("not a model"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644))

	out, errs, code := runCLI(t, "", "list", dir)
	require.Equal(t, 0, code, errs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	assert.Equal(t, []string{"NAME", "ARCH", "PARAMS", "TYPE", "SIZE", "CONTEXT", "ERROR"}, strings.Fields(lines[0]))
	for i, name := range []string{"a-story", "b-story"} {
		row := lines[i+1]
		assert.True(t, strings.HasPrefix(row, name+" "), row)
		assert.Contains(t, row, " llama ")
		assert.Contains(t, row, "292.80 K")
		assert.Contains(t, row, "all F32")
		assert.Contains(t, row, " 2048 ", "the training context")
	}
	assert.True(t, strings.HasPrefix(lines[3], "broken "), lines[3])
	assert.Contains(t, lines[3], "gguf", "the error column says why")

	// M40LLM_MODELS is the default directory.
	t.Setenv("M40LLM_MODELS", dir)
	out2, errs, code := runCLI(t, "", "list")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, out, out2)

	_, errs, code = runCLI(t, "", "list", filepath.Join(dir, "missing"))
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errs, "missing")
	_, _, code = runCLI(t, "", "list", dir, dir)
	assert.Equal(t, 2, code)
}

func TestServeModelsFlags(t *testing.T) {
	_, errs, code := runCLI(t, "", "serve", "--models", filepath.Join(t.TempDir(), "nope"))
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "not a directory")
	_, errs, code = runCLI(t, "", "serve")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "--models DIR")
	assert.Equal(t, 1, defaultMaxModels("auto"))
	assert.Equal(t, 2, defaultMaxModels("cpu"))
	n, err := estimateModel(fixture.BundledModel(t), 0, 2)
	require.NoError(t, err)
	st, err := os.Stat(fixture.BundledModel(t))
	require.NoError(t, err)
	assert.Greater(t, n, st.Size(), "the file plus its KV cache")
	_, err = estimateModel(filepath.Join(t.TempDir(), "x.gguf"), 0, 1)
	assert.Error(t, err)
}
