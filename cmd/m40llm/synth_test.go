package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSynthMix writes a one-layer qwen3 shape with stories260K's 512-token
// vocabulary as Q4_K_M: tied embeddings take Q6_K, general.file_type is
// llama.cpp's 15, and generate runs on it.
func TestSynthMix(t *testing.T) {
	out := filepath.Join(t.TempDir(), "q.gguf")
	_, errs, code := runCLI(t, "", "synth", "--preset", "qwen3-0.6b", "--layers", "1", "--vocab-from", fixture.BundledModel(t),
		"--type", "q4_k_m", out)
	require.Equal(t, 0, code, errs)
	assert.Contains(t, errs, "Q4_K_M weights")

	f, err := gguf.Open(out)
	require.NoError(t, err)
	defer f.Close()
	ftype, err := f.Metadata.Uint32("general.file_type")
	require.NoError(t, err)
	assert.Equal(t, uint32(15), ftype)
	types := map[string]gguf.Type{}
	for _, ti := range f.Tensors {
		types[ti.Name] = ti.Type
	}
	assert.Equal(t, gguf.TypeQ6_K, types["token_embd.weight"], "tied: the output rule")
	assert.Equal(t, gguf.TypeQ6_K, types["blk.0.attn_v.weight"], "the last layer of one takes more bits")
	assert.Equal(t, gguf.TypeQ4_K, types["blk.0.attn_q.weight"])

	_, errs, code = runCLI(t, "", "generate", "-m", out, "-p", "Once", "-n", "2", "--temp", "0", "--backend", "cpu", "-c", "32")
	assert.Equal(t, 0, code, errs)
}

func TestSynthTypeError(t *testing.T) {
	out, errs, code := runCLI(t, "", "synth", "--type", "Q9_K", filepath.Join(t.TempDir(), "x.gguf"))
	assert.Equal(t, 2, code)
	assert.Empty(t, out)
	assert.Contains(t, errs, `--type "Q9_K"`)
	for _, name := range []string{"F16", "Q4_1", "IQ4_NL", "Q6_K", "Q4_K_M", "Q5_K_M"} {
		assert.True(t, strings.Contains(errs, name), "lists %s: %s", name, errs)
	}
}
