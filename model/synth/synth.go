// Package synth writes random-weight GGUF models of realistic shapes, for
// benchmarks and tests that need a 7B-sized file without downloading one.
//
// Weights are drawn from N(0, 0.02), norms are 1, and everything is derived
// from a seed, so the same options give the same bytes whatever the number
// of workers. Tensor data is generated in chunks by parallel workers and
// streamed to the output while the next chunk is generated: memory stays at
// a few chunks, whatever the model size.
package synth

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"

	"github.com/m40llm/m40llm/gguf"
)

// Preset is a model shape.
type Preset struct {
	Name      string
	Arch      string // llama, qwen2, qwen3
	Dim       int
	Layers    int
	Heads     int
	KVHeads   int
	HeadDim   int // 0: Dim/Heads
	FFN       int
	Vocab     int
	Ctx       int
	RopeBase  float32
	NormEps   float32
	RopeFreqs bool // Llama 3 rope_freqs.weight
	Tied      bool // no output.weight
}

// Presets are the shapes of well-known models.
var Presets = map[string]Preset{
	"tinyllama":    {Name: "TinyLlama 1.1B", Arch: "llama", Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, FFN: 5632, Vocab: 32000, Ctx: 2048, RopeBase: 10000, NormEps: 1e-5},
	"llama2-7b":    {Name: "Llama 2 7B", Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 32, FFN: 11008, Vocab: 32000, Ctx: 4096, RopeBase: 10000, NormEps: 1e-5},
	"llama3-8b":    {Name: "Llama 3 8B", Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, FFN: 14336, Vocab: 128256, Ctx: 8192, RopeBase: 500000, NormEps: 1e-5, RopeFreqs: true},
	"qwen2.5-0.5b": {Name: "Qwen2.5 0.5B", Arch: "qwen2", Dim: 896, Layers: 24, Heads: 14, KVHeads: 2, FFN: 4864, Vocab: 151936, Ctx: 32768, RopeBase: 1000000, NormEps: 1e-6, Tied: true},
	"qwen3-0.6b":   {Name: "Qwen3 0.6B", Arch: "qwen3", Dim: 1024, Layers: 28, Heads: 16, KVHeads: 8, HeadDim: 128, FFN: 3072, Vocab: 151936, Ctx: 40960, RopeBase: 1000000, NormEps: 1e-6, Tied: true},
}

// Options configures Write.
type Options struct {
	// Type of every 2-D weight, when Mix is NoMix: any type in
	// WeightNames (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K,
	// IQ4_NL). A K-quant falls back as in a mix (see Mix) for tensors
	// whose rows are not whole 256-element super-blocks. Norms, biases
	// and RoPE factors are always F32.
	Type gguf.Type
	// Mix, when not NoMix, gives each 2-D weight the type llama.cpp's
	// quantize tool gives it in that mix (see Mix); Type is then ignored.
	Mix Mix
	// Vocab, when not nil, supplies the tokenizer.* keys; its vocabulary
	// size replaces the preset's. Otherwise a synthetic byte-fallback
	// SentencePiece vocabulary of the preset's size is written.
	Vocab *gguf.Metadata
	Seed  uint64
	// Workers generating data in parallel; 0 means GOMAXPROCS.
	Workers int
	// Progress, when set, is called after each chunk with bytes written
	// and the total.
	Progress func(done, total int64)
}

// tensor is one tensor to write: its spec and how to fill it.
type tensor struct {
	spec gguf.TensorSpec
	ones bool // norm weights: all 1
}

func (p *Preset) headDim() int {
	if p.HeadDim > 0 {
		return p.HeadDim
	}
	return p.Dim / p.Heads
}

// Validate checks that the shape is usable.
func (p *Preset) Validate() error {
	switch {
	case p.Dim <= 0 || p.Layers <= 0 || p.Heads <= 0 || p.KVHeads <= 0 || p.FFN <= 0 || p.Vocab <= 0:
		return fmt.Errorf("synth: preset %q has a non-positive dimension", p.Name)
	case p.Heads%p.KVHeads != 0:
		return fmt.Errorf("synth: %d heads are not a multiple of %d KV heads", p.Heads, p.KVHeads)
	case p.HeadDim == 0 && p.Dim%p.Heads != 0:
		return fmt.Errorf("synth: dim %d is not a multiple of %d heads", p.Dim, p.Heads)
	case p.Arch != "llama" && p.Arch != "qwen2" && p.Arch != "qwen3":
		return fmt.Errorf("synth: architecture %q is not supported", p.Arch)
	}
	return nil
}

// metadata returns the model's keys, tokenizer included.
func (p *Preset) metadata(opts *Options) (*gguf.Metadata, int, error) {
	var md gguf.Metadata
	var err error
	set := func(k string, v any) {
		if err == nil {
			err = md.SetAny(k, v)
		}
	}
	a := p.Arch
	hd := p.headDim()
	set("general.architecture", a)
	set("general.name", "synthetic "+p.Name)
	set(a+".context_length", uint32(p.Ctx))
	set(a+".embedding_length", uint32(p.Dim))
	set(a+".block_count", uint32(p.Layers))
	set(a+".feed_forward_length", uint32(p.FFN))
	set(a+".attention.head_count", uint32(p.Heads))
	set(a+".attention.head_count_kv", uint32(p.KVHeads))
	set(a+".attention.layer_norm_rms_epsilon", p.NormEps)
	set(a+".rope.freq_base", p.RopeBase)
	set(a+".rope.dimension_count", uint32(hd))
	if p.HeadDim > 0 {
		set(a+".attention.key_length", uint32(hd))
		set(a+".attention.value_length", uint32(hd))
	}
	ftype := pureFileTypes[opts.Type]
	if opts.Mix != NoMix {
		ftype = opts.Mix.FileType()
	}
	set("general.file_type", ftype)
	set("general.alignment", uint32(32))
	vocab := p.Vocab
	if opts.Vocab != nil {
		toks, terr := opts.Vocab.Strings("tokenizer.ggml.tokens")
		if terr != nil {
			return nil, 0, fmt.Errorf("synth: vocabulary: %w", terr)
		}
		vocab = len(toks)
		for _, kv := range opts.Vocab.KVs() {
			if len(kv.Key) > 10 && kv.Key[:10] == "tokenizer." {
				md.Set(kv.Key, kv.Value)
			}
		}
	} else {
		tokens, scores, types := syntheticVocab(vocab)
		set("tokenizer.ggml.model", "llama")
		set("tokenizer.ggml.tokens", tokens)
		set("tokenizer.ggml.scores", scores)
		set("tokenizer.ggml.token_type", types)
		set("tokenizer.ggml.bos_token_id", uint32(1))
		set("tokenizer.ggml.eos_token_id", uint32(2))
		set("tokenizer.ggml.unknown_token_id", uint32(0))
	}
	return &md, vocab, err
}

// syntheticVocab returns a SentencePiece-style vocabulary of n tokens:
// <unk>, <s>, </s>, the 256 byte tokens, then pieces "▁t<i>".
func syntheticVocab(n int) ([]string, []float32, []int32) {
	tokens := make([]string, n)
	scores := make([]float32, n)
	types := make([]int32, n)
	for i := range tokens {
		switch {
		case i == 0:
			tokens[i], types[i] = "<unk>", 2
		case i <= 2:
			tokens[i], types[i] = []string{"", "<s>", "</s>"}[i], 3
		case i < 3+256:
			tokens[i], types[i] = fmt.Sprintf("<0x%02X>", i-3), 6
		default:
			tokens[i], types[i] = fmt.Sprintf("\u2581t%d", i), 1
			scores[i] = -float32(i)
		}
	}
	return tokens, scores, types
}

// tensors lists the model's tensors in llama.cpp's order, each 2-D weight
// with the type opts give it (see Options.Type and Mix).
func (p *Preset) tensors(vocab int, opts *Options) ([]tensor, error) {
	hd := p.headDim()
	q, kv := p.Heads*hd, p.KVHeads*hd
	var err error
	// mat is the 2-D weight role (ne=[cols, rows]) of layer l, or a
	// whole-model weight for l < 0.
	mat := func(l int, role string, rows, cols int) tensor {
		name := role + ".weight"
		if l >= 0 {
			name = fmt.Sprintf("blk.%d.%s", l, name)
		}
		t := opts.Type
		if opts.Mix != NoMix {
			t = p.mixType(opts.Mix, role, l, int64(cols))
		}
		ft, ok := fallback(t, int64(cols))
		if !ok && err == nil {
			err = fmt.Errorf("synth: tensor %s has rows of %d elements, not whole %s blocks of %d", name, cols, t, t.BlockSize())
		}
		return tensor{spec: gguf.TensorSpec{Name: name, Type: ft, Dims: []int64{int64(cols), int64(rows)}}}
	}
	vec := func(name string, n int, ones bool) tensor {
		return tensor{spec: gguf.TensorSpec{Name: name, Type: gguf.TypeF32, Dims: []int64{int64(n)}}, ones: ones}
	}
	ts := []tensor{mat(-1, "token_embd", vocab, p.Dim), vec("output_norm.weight", p.Dim, true)}
	if !p.Tied {
		ts = append(ts, mat(-1, "output", vocab, p.Dim))
	}
	if p.RopeFreqs {
		ts = append(ts, vec("rope_freqs.weight", hd/2, true))
	}
	for l := range p.Layers {
		b := fmt.Sprintf("blk.%d.", l)
		ts = append(ts, vec(b+"attn_norm.weight", p.Dim, true),
			mat(l, "attn_q", q, p.Dim), mat(l, "attn_k", kv, p.Dim), mat(l, "attn_v", kv, p.Dim))
		if p.Arch == "qwen2" {
			ts = append(ts, vec(b+"attn_q.bias", q, false), vec(b+"attn_k.bias", kv, false), vec(b+"attn_v.bias", kv, false))
		}
		if p.Arch == "qwen3" {
			ts = append(ts, vec(b+"attn_q_norm.weight", hd, true), vec(b+"attn_k_norm.weight", hd, true))
		}
		ts = append(ts, mat(l, "attn_output", p.Dim, q), vec(b+"ffn_norm.weight", p.Dim, true),
			mat(l, "ffn_gate", p.FFN, p.Dim), mat(l, "ffn_up", p.FFN, p.Dim), mat(l, "ffn_down", p.Dim, p.FFN))
	}
	return ts, err
}

// size returns the number of bytes of the tensor's data.
func (t *tensor) size() int64 {
	n := int64(1)
	for _, d := range t.spec.Dims {
		n *= d
	}
	sz, _ := t.spec.Type.RowSize(n)
	return sz
}

// check validates the weight choice of o.
func (o *Options) check() error {
	if o.Mix != NoMix {
		if !o.Mix.valid() {
			return fmt.Errorf("synth: unknown mix %s", o.Mix)
		}
		return nil
	}
	if _, ok := pureFileTypes[o.Type]; !ok || !o.Type.CanQuantize() {
		return fmt.Errorf("synth: weight type %s not supported (want one of %s)", o.Type, strings.Join(WeightNames(), ", "))
	}
	return nil
}

// chunkElems is the number of elements generated per chunk (a multiple of
// every block size), split across the workers.
const chunkElems = 1 << 22

// Write writes a random-weight model of shape p to w, with the weight
// types opts choose (see Options.Type and Mix). It fails before writing
// anything when the shape is invalid, the type or mix unknown, or a
// tensor's rows cannot hold its type even after the fallback (rows that
// are not whole 32-element blocks for a legacy type, IQ4_NL or, through
// the output rule, Q8_0).
func Write(w io.Writer, p Preset, opts Options) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if err := opts.check(); err != nil {
		return err
	}
	md, vocab, err := p.metadata(&opts)
	if err != nil {
		return err
	}
	ts, err := p.tensors(vocab, &opts)
	if err != nil {
		return err
	}
	specs := make([]gguf.TensorSpec, len(ts))
	var total int64
	for i, t := range ts {
		specs[i] = t.spec
		total += t.size()
	}
	gw, err := gguf.NewWriter(w, md, specs)
	if err != nil {
		return err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g := &generator{workers: workers, seed: opts.Seed}
	var done int64
	// Double buffering: one chunk is written while the next is generated.
	type chunk struct {
		data []byte
		err  error
	}
	chunks := make(chan chunk, 1)
	free := make(chan []byte, 2)
	free <- nil
	free <- nil
	go func() {
		defer close(chunks)
		for ti, t := range ts {
			n := int64(1)
			for _, d := range t.spec.Dims {
				n *= d
			}
			for start := int64(0); start < n; start += chunkElems {
				buf := <-free
				data, err := g.fill(buf, uint64(ti), t, start, min(chunkElems, n-start))
				chunks <- chunk{data, err}
				if err != nil {
					return
				}
			}
		}
	}()
	var werr error
	for c := range chunks {
		if werr == nil {
			werr = c.err
		}
		if werr == nil {
			_, werr = gw.Write(c.data)
			done += int64(len(c.data))
			if opts.Progress != nil {
				opts.Progress(done, total)
			}
		}
		free <- c.data
	}
	if werr != nil {
		return werr
	}
	return gw.Close()
}

// generator produces tensor data deterministically from (seed, tensor
// index, element offset), in parallel.
type generator struct {
	workers int
	seed    uint64
	f32     [][]float32
}

// fill generates elements [start, start+n) of tensor ti, encoded in its
// type, into buf (reallocated when too small).
func (g *generator) fill(buf []byte, ti uint64, t tensor, start, n int64) ([]byte, error) {
	typ := t.spec.Type
	size, ok := typ.RowSize(n)
	if !ok {
		return nil, errors.New("synth: chunk is not whole blocks")
	}
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if len(g.f32) < g.workers {
		g.f32 = make([][]float32, g.workers)
	}
	// Split into per-worker spans of whole 256-element groups, each with
	// its own RNG stream keyed by the span's element offset, so the output
	// does not depend on the number of workers.
	const group = 256
	groups := (n + group - 1) / group
	per := (groups + int64(g.workers) - 1) / int64(g.workers)
	var wg sync.WaitGroup
	errs := make([]error, g.workers)
	for wi := range g.workers {
		lo, hi := int64(wi)*per*group, min(int64(wi+1)*per*group, n)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if cap(g.f32[wi]) < int(hi-lo) {
				g.f32[wi] = make([]float32, hi-lo)
			}
			vals := g.f32[wi][:hi-lo]
			for off := lo; off < hi; off += group {
				end := min(off+group, hi)
				r := rand.New(rand.NewPCG(g.seed^0x9e3779b97f4a7c15*(ti+1), uint64(start+off)))
				for i := off; i < end; i++ {
					if t.ones {
						vals[i-lo] = 1
					} else {
						vals[i-lo] = float32(r.NormFloat64() * 0.02)
					}
				}
			}
			b0, _ := typ.RowSize(lo)
			b1, _ := typ.RowSize(hi)
			errs[wi] = gguf.Quantize(buf[b0:b1], vals, typ)
		}()
	}
	wg.Wait()
	return buf, errors.Join(errs...)
}

// Size returns the number of bytes of tensor data Write would produce for
// p with the weight types of opts (Type, Mix) and the given vocabulary
// size (0: the preset's). It returns 0 when Write would fail on the shape
// or the weight types.
func Size(p Preset, opts Options, vocab int) int64 {
	if vocab <= 0 {
		vocab = p.Vocab
	}
	if p.Validate() != nil || opts.check() != nil {
		return 0
	}
	ts, err := p.tensors(vocab, &opts)
	if err != nil {
		return 0
	}
	var total int64
	for _, t := range ts {
		total += t.size()
	}
	return total
}
