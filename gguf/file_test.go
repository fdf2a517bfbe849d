package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sharedGGUFs lists every GGUF of the shared test data (see
// fixture.SharedGlob for what happens when there is none).
func sharedGGUFs(t testing.TB) []string {
	t.Helper()
	return fixture.SharedGlob(t, "*/*.gguf")
}

// raw builds GGUF bytes field by field, so that tests can write files the
// Writer would refuse to produce.
type raw struct{ bytes.Buffer }

func (r *raw) u32(v uint32) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) u64(v uint64) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.WriteString(s); return r }
func (r *raw) header(version uint32, tensors, kvs uint64) *raw {
	r.WriteString(Magic)
	return r.u32(version).u64(tensors).u64(kvs)
}
func (r *raw) kvU32(key string, v uint32) *raw { return r.str(key).u32(uint32(ValueUint32)).u32(v) }
func (r *raw) tensor(name string, typ Type, off uint64, dims ...uint64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(d)
	}
	return r.u32(uint32(typ)).u64(off)
}
func (r *raw) padTo(align int) *raw {
	for r.Len()%align != 0 {
		r.WriteByte(0)
	}
	return r
}
func (r *raw) zeros(n int) *raw { r.Write(make([]byte, n)); return r }

func parse(b []byte) (*File, error) { return NewFile(bytes.NewReader(b), int64(len(b))) }

func TestOpenSharedModels(t *testing.T) {
	// Expected values from ../shared/testdata/README.md section 4.
	tests := []struct {
		file       string
		version    uint32
		kvs        int
		tensors    int
		dataOffset int64
		params     int64
		arch       string
	}{
		{"models/stories260K.gguf", 3, 19, 48, 14176, 292800, "llama"},
		{"models/tinyllamas-stories-260k-f32.gguf", 1, 18, 48, 11456, 292800, "llama"},
		{"models/tinyllamas-stories-260k-q8_0.gguf", 2, 20, 48, 14240, 292800, "llama"},
		{"models/llama-2-tiny-random.gguf", 3, 18, 12, 724416, 513048, "llama"},
		{"vocab/ggml-vocab-llama-spm.gguf", 3, 22, 0, 723872, 0, "llama"},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			f, err := Open(fixture.Shared(t, tt.file))
			require.NoError(t, err)
			defer f.Close()
			assert.True(t, f.Mapped())
			assert.Equal(t, tt.version, f.Version)
			assert.Equal(t, tt.kvs, f.Metadata.Len())
			assert.Len(t, f.Tensors, tt.tensors)
			assert.Equal(t, tt.dataOffset, f.DataOffset)
			assert.Equal(t, tt.params, f.ParameterCount())
			assert.Equal(t, tt.arch, f.Architecture())
			assert.EqualValues(t, 32, f.Alignment)
		})
	}
}

func TestStories260KTensors(t *testing.T) {
	bundledModel := fixture.BundledModel(t)
	f, err := Open(bundledModel)
	require.NoError(t, err)
	defer f.Close()

	emb, ok := f.Tensor("token_embd.weight")
	require.True(t, ok)
	assert.Equal(t, TypeF32, emb.Type)
	assert.Equal(t, []int64{64, 512}, emb.Dims)
	assert.EqualValues(t, 64*512*4, emb.Size)
	assert.EqualValues(t, 512, emb.Rows())

	k, ok := f.Tensor("blk.0.attn_k.weight")
	require.True(t, ok)
	assert.Equal(t, []int64{64, 32}, k.Dims)

	// output.weight is a stored copy of token_embd.weight in this file.
	out, ok := f.Tensor("output.weight")
	require.True(t, ok)
	a, err := f.TensorData(emb)
	require.NoError(t, err)
	b, err := f.TensorData(out)
	require.NoError(t, err)
	assert.Equal(t, a, b)

	md := &f.Metadata
	n, err := md.Uint("llama.block_count")
	require.NoError(t, err)
	assert.EqualValues(t, 5, n)
	eps, err := md.Float("llama.attention.layer_norm_rms_epsilon")
	require.NoError(t, err)
	assert.InDelta(t, 1e-5, eps, 1e-12)
	toks, err := md.Strings("tokenizer.ggml.tokens")
	require.NoError(t, err)
	assert.Len(t, toks, 512)
	assert.Equal(t, "<s>", toks[1])
	types, err := md.Int32s("tokenizer.ggml.token_type")
	require.NoError(t, err)
	assert.EqualValues(t, 3, types[1]) // control
	sep, err := md.Uint32("tokenizer.ggml.seperator_token_id")
	require.NoError(t, err)
	assert.Equal(t, uint32(math.MaxUint32), sep)
}

// TestOpenMatchesNewFile checks that the mapped and the ReaderAt paths agree.
func TestOpenMatchesNewFile(t *testing.T) {
	bundledModel := fixture.BundledModel(t)
	data, err := os.ReadFile(bundledModel)
	require.NoError(t, err)
	mapped, err := Open(bundledModel)
	require.NoError(t, err)
	defer mapped.Close()
	plain, err := parse(data)
	require.NoError(t, err)
	assert.False(t, plain.Mapped())
	assert.Equal(t, mapped.Metadata.KVs(), plain.Metadata.KVs())
	assert.Equal(t, mapped.Tensors, plain.Tensors)
	for i := range plain.Tensors {
		a, err := mapped.TensorData(&mapped.Tensors[i])
		require.NoError(t, err)
		b, err := plain.TensorData(&plain.Tensors[i])
		require.NoError(t, err)
		require.Equal(t, a, b, plain.Tensors[i].Name)
	}
}

func TestMetadataAccessorErrors(t *testing.T) {
	var md Metadata
	require.NoError(t, md.SetAny("s", "text"))
	require.NoError(t, md.SetAny("neg", int32(-3)))
	require.NoError(t, md.SetAny("big", uint64(1)<<40))
	require.NoError(t, md.SetAny("f", float32(0.5)))
	require.NoError(t, md.SetAny("ints", []int32{1, 2}))

	_, err := md.String("missing")
	assert.ErrorIs(t, err, ErrKeyNotFound)
	var ke *KeyError
	_, err = md.Uint("s")
	require.ErrorAs(t, err, &ke)
	assert.Equal(t, ValueString, ke.Got)
	assert.NotErrorIs(t, err, ErrKeyNotFound)
	_, err = md.Uint("neg")
	assert.ErrorContains(t, err, "negative")
	_, err = md.Uint32("big")
	assert.ErrorContains(t, err, "32 bits")
	i, err := md.Int("neg")
	require.NoError(t, err)
	assert.EqualValues(t, -3, i)
	_, err = md.Float("s")
	assert.Error(t, err)
	_, err = md.Strings("ints")
	assert.ErrorContains(t, err, "array of i32")
	f, err := md.Float("f")
	require.NoError(t, err)
	assert.Equal(t, 0.5, f)

	md.Delete("neg")
	assert.False(t, md.Has("neg"))
	assert.Equal(t, []string{"s", "big", "f", "ints"}, keys(&md))
}

func keys(md *Metadata) []string {
	var ks []string
	for _, kv := range md.KVs() {
		ks = append(ks, kv.Key)
	}
	return ks
}

// validTiny returns a minimal valid file: one F32 tensor of 8 elements.
func validTiny() []byte {
	r := new(raw).header(3, 1, 1).kvU32("general.alignment", 32)
	r.tensor("w", TypeF32, 0, 8)
	r.padTo(32)
	for i := range 8 {
		binary.Write(&r.Buffer, binary.LittleEndian, float32(i))
	}
	return r.Bytes()
}

func TestValidTiny(t *testing.T) {
	f, err := parse(validTiny())
	require.NoError(t, err)
	w, ok := f.Tensor("w")
	require.True(t, ok)
	v, err := f.Float32s(w)
	require.NoError(t, err)
	assert.Equal(t, []float32{0, 1, 2, 3, 4, 5, 6, 7}, v)
}

func TestMalformed(t *testing.T) {
	const huge = uint64(1) << 60
	tests := []struct {
		name    string
		data    []byte
		off     int64 // expected FormatError offset; -1: any
		wantErr error // optional sentinel
	}{
		{"empty", nil, 0, ErrNotGGUF},
		{"text file", []byte("# Test data\nhello\n"), 0, ErrNotGGUF},
		{"magic only", []byte("GGUF"), 4, ErrTruncated},
		{"wrong magic case", []byte("gguf\x03\x00\x00\x00"), 0, ErrNotGGUF},
		{"version 0", new(raw).header(0, 0, 0).Bytes(), 4, nil},
		{"version 4", new(raw).header(4, 0, 0).Bytes(), 4, nil},
		{"big-endian", func() []byte {
			r := new(raw)
			r.WriteString(Magic)
			binary.Write(r, binary.BigEndian, uint32(3))
			return r.u64(0).u64(0).Bytes()
		}(), 4, nil},
		{"tensor count 2^60", new(raw).header(3, huge, 0).Bytes(), 8, ErrTruncated},
		{"kv count 2^60", new(raw).header(3, 0, huge).Bytes(), 16, ErrTruncated},
		{"v1 kv count past end", func() []byte {
			r := new(raw)
			r.WriteString(Magic)
			return r.u32(1).u32(0).u32(1 << 30).Bytes()
		}(), 12, ErrTruncated},
		{"string length past end", new(raw).header(3, 0, 1).u64(1000).zeros(40).Bytes(), 24, ErrTruncated},
		{"string length 2^63", new(raw).header(3, 0, 1).u64(1 << 63).zeros(40).Bytes(), 24, ErrTruncated},
		{"array length 2^60", new(raw).header(3, 0, 1).str("a").u32(uint32(ValueArray)).u32(uint32(ValueUint8)).u64(huge).Bytes(), 41, ErrTruncated},
		{"string array length 2^60", new(raw).header(3, 0, 1).str("a").u32(uint32(ValueArray)).u32(uint32(ValueString)).u64(huge).zeros(64).Bytes(), 41, ErrTruncated},
		{"unknown value type", new(raw).header(3, 0, 1).str("a").u32(13).u32(0).Bytes(), 33, nil},
		{"unknown array element type", new(raw).header(3, 0, 1).str("a").u32(uint32(ValueArray)).u32(99).u64(0).Bytes(), 37, nil},
		{"duplicate key", new(raw).header(3, 0, 2).kvU32("a", 1).kvU32("a", 2).Bytes(), 41, nil},
		{"alignment zero", new(raw).header(3, 0, 1).kvU32("general.alignment", 0).Bytes(), -1, nil},
		{"alignment not a power of two", new(raw).header(3, 0, 1).kvU32("general.alignment", 48).Bytes(), -1, nil},
		{"alignment wrong type", new(raw).header(3, 0, 1).str("general.alignment").u32(uint32(ValueString)).str("32").Bytes(), -1, nil},
		{"five dimensions", new(raw).header(3, 1, 0).tensor("w", TypeF32, 0, 1, 1, 1, 1, 1).zeros(64).Bytes(), 33, nil},
		{"zero dimensions", new(raw).header(3, 1, 0).tensor("w", TypeF32, 0).zeros(64).Bytes(), 33, nil},
		{"zero-sized dimension", new(raw).header(3, 1, 0).tensor("w", TypeF32, 0, 4, 0).zeros(64).Bytes(), 45, nil},
		{"element count overflow", new(raw).header(3, 1, 0).tensor("w", TypeF32, 0, 1<<40, 1<<40).zeros(64).Bytes(), 45, nil},
		{"unknown tensor type", new(raw).header(3, 1, 0).tensor("w", Type(77), 0, 8).zeros(64).Bytes(), 45, nil},
		{"removed tensor type 4", new(raw).header(3, 1, 0).tensor("w", Type(4), 0, 32).zeros(64).Bytes(), 45, nil},
		{"partial block", new(raw).header(3, 1, 0).tensor("w", TypeQ8_0, 0, 33).zeros(64).Bytes(), 45, nil},
		{"misaligned offset", new(raw).header(3, 1, 0).tensor("w", TypeF32, 4, 8).padTo(32).zeros(64).Bytes(), 24, nil},
		{"data past end", new(raw).header(3, 1, 0).tensor("w", TypeF32, 0, 8).padTo(32).zeros(31).Bytes(), 24, ErrTruncated},
		{"offset 2^62", new(raw).header(3, 1, 0).tensor("w", TypeF32, 1<<62, 8).padTo(32).zeros(32).Bytes(), 24, ErrTruncated},
		{"offset above int64", new(raw).header(3, 1, 0).tensor("w", TypeF32, 1<<63, 8).padTo(32).zeros(32).Bytes(), 49, nil},
		{"overlapping tensors", new(raw).header(3, 2, 0).tensor("a", TypeF32, 0, 16).tensor("b", TypeF32, 32, 16).padTo(32).zeros(128).Bytes(), 57, nil},
		{"duplicate tensor name", new(raw).header(3, 2, 0).tensor("a", TypeF32, 0, 8).tensor("a", TypeF32, 32, 8).padTo(32).zeros(64).Bytes(), 57, nil},
		{"tensor count beyond the remaining bytes", new(raw).header(3, 1, 0).str("w").u32(1).Bytes(), 8, ErrTruncated},
		{"tensor dimension truncated", new(raw).header(3, 1, 0).str("tensor_name_").u32(2).u64(8).u32(1).Bytes(), 56, ErrTruncated},
		{"deeply nested arrays", func() []byte {
			r := new(raw).header(3, 0, 1).str("a").u32(uint32(ValueArray))
			for range 20 {
				r.u32(uint32(ValueArray)).u64(1)
			}
			return r.u32(uint32(ValueUint8)).u64(0).Bytes()
		}(), -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parse(tt.data)
			require.Error(t, err)
			assert.Nil(t, f)
			var fe *FormatError
			require.ErrorAs(t, err, &fe, "error %v is not a *FormatError", err)
			if tt.off >= 0 {
				assert.Equal(t, tt.off, fe.Off, "offset in %q", err)
			}
			assert.Contains(t, err.Error(), "byte offset")
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}

// TestTruncatedPrefixes feeds every prefix length (sampled) of a real model
// to the parser: each must fail with a *FormatError, never panic.
func TestTruncatedPrefixes(t *testing.T) {
	bundledModel := fixture.BundledModel(t)
	data, err := os.ReadFile(bundledModel)
	require.NoError(t, err)
	for n := 0; n < len(data); n += 1 + n/64 {
		_, err := parse(data[:n])
		var fe *FormatError
		require.ErrorAs(t, err, &fe, "prefix of %d bytes", n)
	}
}

// TestFlatBlocksAccepted documents the decision on tensors whose rows are
// not whole blocks (the Q8_0 stories260K file stores ffn_down with rows of
// 172 elements): they are accepted when the element count is a whole number
// of blocks, and RowAligned reports false.
func TestFlatBlocksAccepted(t *testing.T) {
	f, err := Open(fixture.Shared(t, "models/tinyllamas-stories-260k-q8_0.gguf"))
	require.NoError(t, err)
	defer f.Close()
	down, ok := f.Tensor("blk.0.ffn_down.weight")
	require.True(t, ok)
	assert.Equal(t, TypeQ8_0, down.Type)
	assert.Equal(t, []int64{172, 64}, down.Dims)
	assert.False(t, down.RowAligned())
	assert.EqualValues(t, 11008/32*34, down.Size)
	up, _ := f.Tensor("blk.0.ffn_up.weight")
	assert.True(t, up.RowAligned())
}

// TestOpenAllocations checks that opening the bundled model keeps tensor
// data out of the Go heap: the mapping is used in place.
func TestOpenAllocations(t *testing.T) {
	bundledModel := fixture.BundledModel(t)
	st, err := os.Stat(bundledModel)
	require.NoError(t, err)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, err := Open(bundledModel)
	require.NoError(t, err)
	for i := range f.Tensors {
		_, err := f.TensorData(&f.Tensors[i])
		require.NoError(t, err)
	}
	runtime.ReadMemStats(&after)
	require.NoError(t, f.Close())
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("Open + TensorData of a %d-byte model allocated %d bytes", st.Size(), allocated)
	assert.Less(t, allocated, uint64(st.Size()/10))
}

func BenchmarkOpen(b *testing.B) {
	bundledModel := fixture.BundledModel(b)
	b.ReportAllocs()
	for b.Loop() {
		f, err := Open(bundledModel)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func TestErrorsIsNotGGUF(t *testing.T) {
	_, err := Open("file_test.go")
	assert.True(t, errors.Is(err, ErrNotGGUF), "%v", err)
	_, err = Open("no-such-file.gguf")
	assert.ErrorIs(t, err, os.ErrNotExist)
}
