package model_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/errclass"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/synth"
)

// loadCounter is a backend that counts the weights it was asked to load.
type loadCounter struct {
	model.Backend
	loads int
}

func (b *loadCounter) LoadWeight(ti *gguf.TensorInfo, data []byte) (model.Weight, error) {
	b.loads++
	return b.Backend.LoadWeight(ti, data)
}

// TestUnsupportedTensorType: a file with one tensor of a type no backend
// runs (IQ2_XXS) is refused with one line naming the tensor and the type,
// classified as unsupported, before any weight is loaded.
func TestUnsupportedTensorType(t *testing.T) {
	p := synth.Presets["tinyllama"]
	p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Vocab = 1, 256, 8, 4, 512, 300
	var buf bytes.Buffer
	require.NoError(t, synth.Write(&buf, p, synth.Options{Type: gguf.TypeQ4_K, Seed: 1}))
	src := filepath.Join(t.TempDir(), "src.gguf")
	require.NoError(t, os.WriteFile(src, buf.Bytes(), 0o644))
	f, err := gguf.Open(src)
	require.NoError(t, err)
	defer f.Close()

	const bad = "blk.0.ffn_down.weight"
	specs := make([]gguf.TensorSpec, len(f.Tensors))
	for i, ti := range f.Tensors {
		specs[i] = gguf.TensorSpec{Name: ti.Name, Type: ti.Type, Dims: ti.Dims}
		if ti.Name == bad {
			specs[i].Type = gguf.TypeIQ2_XXS
		}
	}
	out := filepath.Join(t.TempDir(), "iq2.gguf")
	o, err := os.Create(out)
	require.NoError(t, err)
	w, err := gguf.NewWriter(o, &f.Metadata, specs)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		data, err := f.TensorData(ti)
		require.NoError(t, err)
		if ti.Name == bad {
			n, ok := gguf.TypeIQ2_XXS.RowSize(ti.Elements())
			require.True(t, ok)
			data = make([]byte, n)
			for j := range data {
				data[j] = byte(r.Uint32())
			}
		}
		require.NoError(t, w.WriteTensor(ti.Name, data))
	}
	require.NoError(t, w.Close())
	require.NoError(t, o.Close())

	be := &loadCounter{Backend: cpu.New(cpu.Options{})}
	_, err = model.Load(out, be, model.Options{CtxSize: 16})
	require.Error(t, err)
	msg := err.Error()
	assert.NotContains(t, msg, "\n")
	assert.Contains(t, msg, bad)
	assert.Contains(t, msg, "IQ2_XXS")
	assert.True(t, errors.Is(err, model.ErrUnsupported), "errors.Is(err, ErrUnsupported): %v", err)
	assert.Equal(t, errclass.Unsupported, errclass.Of(err))
	assert.Zero(t, be.loads, "weights loaded before the refusal")
	assert.False(t, strings.HasPrefix(msg, "loading tensor"), "refused while loading, not before: %s", msg)
	t.Log(msg)
}
