package model_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withMetadata writes a copy of the bundled model with the metadata keys
// set to the given values (nil deletes the key) and returns its path.
func withMetadata(t testing.TB, set map[string]any) string {
	t.Helper()
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer f.Close()
	for k, v := range set {
		if v == nil {
			f.Metadata.Delete(k)
			continue
		}
		require.NoError(t, f.Metadata.SetAny(k, v))
	}
	path := filepath.Join(t.TempDir(), "hostile.gguf")
	out, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, gguf.Copy(out, f))
	require.NoError(t, out.Close())
	return path
}

// TestHugeBlockCount: a block_count of 2^31 used to pass the range check
// and allocate a Layer for each (about 481 GB) before any layer tensor was
// looked at: "fatal error: runtime: out of memory". It is a TensorError
// naming the first layer the file lacks.
func TestHugeBlockCount(t *testing.T) {
	for _, n := range []uint32{1 << 31, 6, 1000} {
		path := withMetadata(t, map[string]any{"llama.block_count": n})
		_, err := model.Load(path, cpu.New(cpu.Options{}), model.Options{CtxSize: 16})
		var te *model.TensorError
		require.True(t, errors.As(err, &te), "%d layers: %v", n, err)
		assert.Equal(t, "blk.5.attn_norm.weight", te.Name)
		assert.Contains(t, err.Error(), "the file has tensors of 5")
	}
}

// TestCPUContextTooLarge: a context the machine cannot hold (--ctx-size
// 400000000: a 512 GB KV cache on the CPU) used to end the process in the
// runtime ("fatal error: runtime: out of memory"); the CPU backend's plan
// refuses it with ErrOutOfMemory, saying what it needs and what is free.
func TestCPUContextTooLarge(t *testing.T) {
	_, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{}), model.Options{CtxSize: 400_000_000})
	require.ErrorIs(t, err, model.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "is available")
	t.Log(err)
}
