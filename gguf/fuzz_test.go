package gguf

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
)

// shrink rewrites a parsed file as a small seed with the same structure:
// every key with its type (arrays cut to a few elements) and every tensor
// with its name and type, but one block of data each. Multi-megabyte seeds
// stall the fuzzer; these keep its coverage of each real file's layout.
func shrink(g *File) []byte {
	var md Metadata
	for _, kv := range g.Metadata.KVs() {
		v := kv.Value
		if a, ok := v.Array(); ok && a.Len() > 4 {
			v = MustValue(sliceArray(a, 4))
		}
		md.Set(kv.Key, v)
	}
	specs := make([]TensorSpec, len(g.Tensors))
	var data []byte
	for i, t := range g.Tensors {
		specs[i] = TensorSpec{Name: t.Name, Type: t.Type, Dims: []int64{int64(t.Type.BlockSize())}}
		b, _ := g.TensorData(&g.Tensors[i])
		data = append(data, b[:t.Type.TypeSize()]...)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, &md, specs)
	if err != nil {
		return nil
	}
	_, _ = w.Write(data)
	if w.Close() != nil {
		return nil
	}
	return buf.Bytes()
}

func sliceArray(a Array, n int) Array {
	switch d := a.Data.(type) {
	case []string:
		return Array{a.Type, d[:n]}
	case []float32:
		return Array{a.Type, d[:n]}
	case []int32:
		return Array{a.Type, d[:n]}
	case []uint32:
		return Array{a.Type, d[:n]}
	}
	return Array{a.Type, nil}
}

// FuzzOpen feeds arbitrary bytes to the parser. Every input must either
// parse or fail with a *FormatError; an input that parses must survive
// write → parse unchanged. Run it with
//
//	go test -run '^$' -fuzz=FuzzOpen -fuzztime=60s ./gguf
//
// It is seeded with every GGUF in the shared test data (shrunk, see shrink)
// and with the first 4 KiB of each, a realistic truncation.
func FuzzOpen(f *testing.F) {
	for _, p := range append(sharedGGUFs(f), fixture.BundledModel(f)) {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if g, err := parse(data); err == nil {
			if seed := shrink(g); seed != nil {
				f.Add(seed)
			}
		}
		f.Add(data[:min(len(data), 4096)])
	}
	f.Add(validTiny())
	var md Metadata
	md.Set("k", MustValue([]Array{{ValueString, []string{"s"}}}))
	md.Set("general.alignment", MustValue(uint32(16)))
	var buf bytes.Buffer
	if w, err := NewWriter(&buf, &md, []TensorSpec{{"t", TypeQ4_K, []int64{256}}, {"u", TypeF16, []int64{3, 2}}}); err == nil {
		_, _ = w.Write(make([]byte, 144+12))
		_ = w.Close()
		f.Add(buf.Bytes())
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := parse(data)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error is %T, not *FormatError: %v", err, err)
			}
			return
		}
		var out bytes.Buffer
		if err := Copy(&out, g); err != nil {
			t.Fatalf("parsed file does not write back: %v", err)
		}
		h, err := parse(out.Bytes())
		if err != nil {
			t.Fatalf("written file does not parse: %v", err)
		}
		if len(h.Tensors) != len(g.Tensors) || h.Metadata.Len() != g.Metadata.Len() {
			t.Fatalf("round trip changed counts")
		}
		for i := range g.Tensors {
			a, _ := g.TensorData(&g.Tensors[i])
			b, _ := h.TensorData(&h.Tensors[i])
			if !bytes.Equal(a, b) || g.Tensors[i].Name != h.Tensors[i].Name {
				t.Fatalf("round trip changed tensor %q", g.Tensors[i].Name)
			}
		}
		var again bytes.Buffer
		if err := Copy(&again, h); err != nil || !bytes.Equal(out.Bytes(), again.Bytes()) {
			t.Fatalf("write is not stable: %v", err)
		}
	})
}
