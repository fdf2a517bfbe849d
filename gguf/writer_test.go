package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRoundTripShared writes every shared GGUF back out: metadata and tensor
// bytes survive, and version-3 files come back byte for byte.
func TestRoundTripShared(t *testing.T) {
	for _, p := range append(sharedGGUFs(t), fixture.BundledModel(t)) {
		t.Run(filepath.Base(p), func(t *testing.T) {
			orig, err := os.ReadFile(p)
			require.NoError(t, err)
			f, err := parse(orig)
			require.NoError(t, err)
			var buf bytes.Buffer
			require.NoError(t, Copy(&buf, f))
			g, err := parse(buf.Bytes())
			require.NoError(t, err)
			assert.EqualValues(t, 3, g.Version)
			assert.Equal(t, f.Metadata.KVs(), g.Metadata.KVs())
			require.Len(t, g.Tensors, len(f.Tensors))
			for i := range f.Tensors {
				a, b := f.Tensors[i], g.Tensors[i]
				assert.Equal(t, a.Name, b.Name)
				assert.Equal(t, a.Type, b.Type)
				assert.Equal(t, a.Dims, b.Dims)
				da, err := f.TensorData(&a)
				require.NoError(t, err)
				db, err := g.TensorData(&b)
				require.NoError(t, err)
				require.Equal(t, da, db, a.Name)
			}
			if f.Version == 3 {
				assert.True(t, bytes.Equal(orig, buf.Bytes()), "v3 file not reproduced byte for byte")
			}
		})
	}
}

func TestWriterAllValueTypes(t *testing.T) {
	var md Metadata
	vals := []any{
		uint8(200), int8(-100), uint16(60000), int16(-30000), uint32(4000000000), int32(-2000000000),
		float32(1.5), true, "héllo", uint64(1 << 63), int64(-1 << 62), 2.25,
		[]uint8{1, 2}, []int8{-1}, []uint16{3}, []int16{-3}, []uint32{4}, []int32{-4}, []float32{0.5},
		[]bool{true, false}, []string{"a", "", "ccc"}, []uint64{5}, []int64{-5}, []float64{0.125},
		[]Array{{ValueInt32, []int32{1, 2}}, {ValueString, []string{"x"}}, {ValueArray, []Array{{ValueUint8, []uint8{9}}}}},
		[]string{},
	}
	for i, v := range vals {
		require.NoError(t, md.SetAny(string(rune('a'+i)), v))
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, &md, nil)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	f, err := parse(buf.Bytes())
	require.NoError(t, err)
	assert.Equal(t, md.KVs(), f.Metadata.KVs())
}

func TestWriterStreamsAcrossTensors(t *testing.T) {
	var md Metadata
	require.NoError(t, md.SetAny(KeyAlignment, uint32(64)))
	specs := []TensorSpec{
		{"a", TypeF32, []int64{3}},      // 12 bytes, padded to 64
		{"b", TypeF16, []int64{5, 2}},   // 20 bytes
		{"c", TypeQ8_0, []int64{32, 2}}, // 68 bytes
	}
	payload := make([]byte, 12+20+68)
	for i := range payload {
		payload[i] = byte(i + 1)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, &md, specs)
	require.NoError(t, err)
	// Chunks that straddle tensor boundaries.
	for _, chunk := range [][]byte{payload[:7], payload[7:40], payload[40:]} {
		n, err := w.Write(chunk)
		require.NoError(t, err)
		require.Equal(t, len(chunk), n)
	}
	require.NoError(t, w.Close())

	f, err := parse(buf.Bytes())
	require.NoError(t, err)
	assert.EqualValues(t, 64, f.Alignment)
	assert.Zero(t, f.DataOffset%64)
	offsets := []int64{0, 64, 128}
	bounds := [][2]int{{0, 12}, {12, 32}, {32, 100}}
	for i := range specs {
		ti := &f.Tensors[i]
		assert.Equal(t, offsets[i], ti.Offset, ti.Name)
		data, err := f.TensorData(ti)
		require.NoError(t, err)
		assert.Equal(t, payload[bounds[i][0]:bounds[i][1]], data, ti.Name)
	}
}

func TestWriterErrors(t *testing.T) {
	var md Metadata
	newW := func(specs ...TensorSpec) (*Writer, error) {
		return NewWriter(&bytes.Buffer{}, &md, specs)
	}
	_, err := newW(TensorSpec{"a", TypeF32, []int64{2}}, TensorSpec{"a", TypeF32, []int64{2}})
	assert.ErrorContains(t, err, "duplicate")
	_, err = newW(TensorSpec{"a", TypeQ4_0, []int64{31}})
	assert.ErrorContains(t, err, "whole number of blocks")
	_, err = newW(TensorSpec{"a", TypeF32, []int64{1, 1, 1, 1, 1}})
	assert.ErrorContains(t, err, "dimensions")
	_, err = newW(TensorSpec{"a", TypeF32, []int64{0}})
	assert.ErrorContains(t, err, "invalid dimensions")

	w, err := newW(TensorSpec{"a", TypeF32, []int64{2}}, TensorSpec{"b", TypeF32, []int64{1}})
	require.NoError(t, err)
	assert.ErrorIs(t, w.WriteTensor("b", make([]byte, 4)), ErrWriterState)
	assert.ErrorIs(t, w.WriteTensor("a", make([]byte, 4)), ErrWriterState)
	require.NoError(t, w.WriteTensor("a", make([]byte, 8)))
	assert.ErrorIs(t, w.Close(), ErrWriterState) // b missing
	require.NoError(t, w.WriteTensor("b", make([]byte, 4)))
	_, err = w.Write([]byte{1})
	assert.ErrorIs(t, err, ErrWriterState)

	bad := Metadata{}
	bad.Set(KeyAlignment, MustValue("32"))
	_, err = NewWriter(&bytes.Buffer{}, &bad, nil)
	assert.ErrorContains(t, err, KeyAlignment)
	mismatched := Metadata{}
	mismatched.Set("x", Value{ValueArray, Array{ValueInt32, []string{"no"}}})
	_, err = NewWriter(&bytes.Buffer{}, &mismatched, nil)
	assert.ErrorContains(t, err, "array declared as i32")
}
