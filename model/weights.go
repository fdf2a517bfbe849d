package model

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

// TensorError reports a tensor that is missing or has the wrong shape.
type TensorError struct {
	Name string
	Msg  string
}

func (e *TensorError) Error() string { return fmt.Sprintf("tensor %q: %s", e.Name, e.Msg) }

// Layer holds one transformer block's weights. Shapes are (rows, cols);
// q = Heads·HeadDim, kv = KVHeads·HeadDim, vd = KVHeads·ValueDim.
type Layer struct {
	AttnNorm Weight // (1, dim)
	Wq       Weight // (q, dim)
	Wk       Weight // (kv, dim)
	Wv       Weight // (vd, dim)
	Wo       Weight // (dim, Heads·ValueDim)
	Bq       Weight // (1, q), qwen2 only
	Bk       Weight // (1, kv), qwen2 only
	Bv       Weight // (1, vd), qwen2 only
	QNorm    Weight // (1, HeadDim), qwen3 only
	KNorm    Weight // (1, HeadDim), qwen3 only
	FFNNorm  Weight // (1, dim)
	WGate    Weight // (ffn, dim)
	WUp      Weight // (ffn, dim)
	WDown    Weight // (dim, ffn)
}

// Weights holds every parameter of a model on one backend.
type Weights struct {
	TokenEmbd  Weight // (vocab, dim)
	OutputNorm Weight // (1, dim)
	// Output is (vocab, dim); it is TokenEmbd when the file has no
	// output.weight (tied embeddings).
	Output Weight
	// RopeFreqs is (1, RopeDim/2) or nil (Llama 3 rope_freqs.weight).
	RopeFreqs Weight
	Layers    []Layer
	// Bytes is the size of the tensors as stored in the file.
	Bytes int64
}

// loader uploads tensors of f to a backend, checking each shape.
type loader struct {
	f        *gguf.File
	b        Backend
	progress func(done, total int64)
	done     int64
	total    int64
	bytes    int64
}

func (l *loader) load(name string, rows, cols int, optional bool) (Weight, error) {
	ti, ok := l.f.Tensor(name)
	if !ok {
		if optional {
			return nil, nil
		}
		return nil, &TensorError{Name: name, Msg: "missing from the model file"}
	}
	r, c := int64(1), ti.Dims[0]
	for _, d := range ti.Dims[1:] {
		r *= d
	}
	if r != int64(rows) || c != int64(cols) {
		return nil, &TensorError{Name: name, Msg: fmt.Sprintf("shape ne=%v, want (%d rows, %d cols): ne=[%d, %d]", ti.Dims, rows, cols, cols, rows)}
	}
	if !ti.Type.CanDequantize() {
		return nil, fmt.Errorf("tensor %q: %w", name, &UnsupportedError{What: "tensor type", Value: ti.Type.String(),
			Hint: "no backend runs it; convert the file with llama.cpp's llama-quantize"})
	}
	if l.b == nil {
		return nil, nil // checkShapes: the shape and type are all it wants
	}
	data, err := l.f.TensorData(ti)
	if err != nil {
		return nil, err
	}
	w, err := l.b.LoadWeight(ti, data)
	if err != nil {
		return nil, fmt.Errorf("loading tensor %q (%s %v) on %s: %w", name, ti.Type, ti.Dims, l.b.Name(), err)
	}
	l.done += ti.Size
	l.bytes += ti.Size
	if l.progress != nil {
		l.progress(l.done, l.total)
	}
	return w, nil
}

// checkShapes checks that every tensor the model needs is in the file with
// the shape the metadata implies and a type the backends run, without
// loading anything: the sizes a plan is made of are then the file's, not
// only the metadata's claims, and an unsupported type (an
// *UnsupportedError naming the tensor) is refused before any allocation.
func checkShapes(f *gguf.File, c *Config) error {
	_, err := loadWeights(f, c, nil, nil)
	return err
}

// loadWeights uploads the model's tensors, in file order of need, to b
// (with b nil, it only checks their shapes: checkShapes).
func loadWeights(f *gguf.File, c *Config, b Backend, progress func(done, total int64)) (*Weights, error) {
	l := &loader{f: f, b: b, progress: progress}
	for i := range f.Tensors {
		l.total += f.Tensors[i].Size
	}
	w := &Weights{Layers: make([]Layer, c.Layers)}
	var err error
	get := func(dst *Weight, name string, rows, cols int, optional bool) {
		if err == nil {
			*dst, err = l.load(name, rows, cols, optional)
		}
	}
	get(&w.TokenEmbd, "token_embd.weight", c.VocabSize, c.Dim, false)
	get(&w.OutputNorm, "output_norm.weight", 1, c.Dim, false)
	get(&w.Output, "output.weight", c.VocabSize, c.Dim, true)
	get(&w.RopeFreqs, "rope_freqs.weight", 1, c.RopeDim/2, true)
	q, kv, vd, att := c.QDim(), c.KVDim(), c.VDim(), c.Heads*c.ValueDim
	for i := range w.Layers {
		ly := &w.Layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		get(&ly.AttnNorm, p+"attn_norm.weight", 1, c.Dim, false)
		get(&ly.Wq, p+"attn_q.weight", q, c.Dim, false)
		get(&ly.Wk, p+"attn_k.weight", kv, c.Dim, false)
		get(&ly.Wv, p+"attn_v.weight", vd, c.Dim, false)
		get(&ly.Wo, p+"attn_output.weight", c.Dim, att, false)
		if c.QKVBias {
			get(&ly.Bq, p+"attn_q.bias", 1, q, false)
			get(&ly.Bk, p+"attn_k.bias", 1, kv, false)
			get(&ly.Bv, p+"attn_v.bias", 1, vd, false)
		}
		if c.QKNorm {
			get(&ly.QNorm, p+"attn_q_norm.weight", 1, c.HeadDim, false)
			get(&ly.KNorm, p+"attn_k_norm.weight", 1, c.HeadDim, false)
		}
		get(&ly.FFNNorm, p+"ffn_norm.weight", 1, c.Dim, false)
		get(&ly.WGate, p+"ffn_gate.weight", c.FFNDim, c.Dim, false)
		get(&ly.WUp, p+"ffn_up.weight", c.FFNDim, c.Dim, false)
		get(&ly.WDown, p+"ffn_down.weight", c.Dim, c.FFNDim, false)
	}
	if err != nil {
		return nil, err
	}
	if w.Output == nil {
		w.Output = w.TokenEmbd
	}
	w.Bytes = l.bytes
	return w, nil
}

// checkLayers checks the metadata's layer count against the file's tensors,
// before anything sized by it (the KV cache, a Layer each) is planned or
// allocated.
func checkLayers(f *gguf.File, c *Config) error {
	if have := layersInFile(f); c.Layers > have {
		return &TensorError{Name: fmt.Sprintf("blk.%d.attn_norm.weight", have),
			Msg: fmt.Sprintf("missing: %s.block_count says %d layers, the file has tensors of %d", c.Arch, c.Layers, have)}
	}
	return nil
}

// layersInFile returns one more than the highest N of the file's
// "blk.N.*" tensors (0 when there are none).
func layersInFile(f *gguf.File) int {
	n := 0
	for i := range f.Tensors {
		rest, ok := strings.CutPrefix(f.Tensors[i].Name, "blk.")
		if !ok {
			continue
		}
		num, _, ok := strings.Cut(rest, ".")
		if !ok {
			continue
		}
		if v, err := strconv.Atoi(num); err == nil && v >= n && v < len(f.Tensors) {
			n = v + 1
		}
	}
	return n
}
