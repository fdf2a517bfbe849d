// Command hf2gguf converts a small Hugging Face LLaMA, Qwen2 or Qwen3
// checkpoint (config.json + one model.safetensors) to a GGUF file with the
// conventions of llama.cpp's converter: `llama` Q/K rows permuted for
// adjacent-pair RoPE, Llama 3 RoPE scaling as a rope_freqs.weight tensor,
// linear scaling as rope.scaling.* keys, tied embeddings without
// output.weight. The tokenizer is copied from another GGUF (--vocab-from).
//
// It exists to build test fixtures whose reference logits come from
// transformers (see tools/hffixtures); it is not a general converter.
//
//	go run ./tools/hf2gguf -in DIR -vocab-from testdata/stories260K.gguf -out model.gguf
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

type hfConfig struct {
	Architectures     []string `json:"architectures"`
	ModelType         string   `json:"model_type"`
	VocabSize         int      `json:"vocab_size"`
	HiddenSize        int      `json:"hidden_size"`
	IntermediateSize  int      `json:"intermediate_size"`
	Layers            int      `json:"num_hidden_layers"`
	Heads             int      `json:"num_attention_heads"`
	KVHeads           int      `json:"num_key_value_heads"`
	HeadDim           int      `json:"head_dim"`
	MaxPos            int      `json:"max_position_embeddings"`
	RMSNormEps        float64  `json:"rms_norm_eps"`
	RopeTheta         float64  `json:"rope_theta"`
	TieWordEmbeddings bool     `json:"tie_word_embeddings"`
	// RopeScaling is the transformers 4 key; transformers 5 writes
	// RopeParameters, which also holds rope_theta.
	RopeScaling    *ropeParams `json:"rope_scaling"`
	RopeParameters *ropeParams `json:"rope_parameters"`
}

type ropeParams struct {
	Type          string  `json:"rope_type"`
	Theta         float64 `json:"rope_theta"`
	Factor        float64 `json:"factor"`
	LowFreq       float64 `json:"low_freq_factor"`
	HighFreq      float64 `json:"high_freq_factor"`
	OriginalMaxPE float64 `json:"original_max_position_embeddings"`
}

type stTensor struct {
	DType   string  `json:"dtype"`
	Shape   []int64 `json:"shape"`
	Offsets [2]int  `json:"data_offsets"`
}

func main() {
	in := flag.String("in", "", "directory with config.json and model.safetensors")
	vocab := flag.String("vocab-from", "", "GGUF file whose tokenizer.* keys are copied")
	out := flag.String("out", "", "output GGUF path")
	flag.Parse()
	if *in == "" || *vocab == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := convert(*in, *vocab, *out); err != nil {
		fmt.Fprintln(os.Stderr, "hf2gguf:", err)
		os.Exit(1)
	}
}

func convert(dir, vocabPath, out string) error {
	var cfg hfConfig
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	arch := map[string]string{"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}[cfg.ModelType]
	if arch == "" {
		return fmt.Errorf("model_type %q is not supported", cfg.ModelType)
	}
	if rp := cfg.RopeParameters; rp != nil {
		if rp.Theta != 0 {
			cfg.RopeTheta = rp.Theta
		}
		if cfg.RopeScaling == nil {
			cfg.RopeScaling = rp
		}
	}
	if cfg.RopeTheta == 0 {
		cfg.RopeTheta = 10000
	}
	if cfg.KVHeads == 0 {
		cfg.KVHeads = cfg.Heads
	}
	headDim := cfg.HeadDim
	if headDim == 0 {
		headDim = cfg.HiddenSize / cfg.Heads
	}
	tensors, err := readSafetensors(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return err
	}

	vf, err := gguf.Open(vocabPath)
	if err != nil {
		return err
	}
	defer vf.Close()

	var md gguf.Metadata
	set := func(k string, v any) {
		if err == nil {
			err = md.SetAny(k, v)
		}
	}
	set("general.architecture", arch)
	set("general.name", filepath.Base(dir))
	set(arch+".context_length", uint32(cfg.MaxPos))
	set(arch+".embedding_length", uint32(cfg.HiddenSize))
	set(arch+".block_count", uint32(cfg.Layers))
	set(arch+".feed_forward_length", uint32(cfg.IntermediateSize))
	set(arch+".attention.head_count", uint32(cfg.Heads))
	set(arch+".attention.head_count_kv", uint32(cfg.KVHeads))
	set(arch+".rope.freq_base", float32(cfg.RopeTheta))
	set(arch+".attention.layer_norm_rms_epsilon", float32(cfg.RMSNormEps))
	if cfg.HeadDim != 0 && cfg.HeadDim != cfg.HiddenSize/cfg.Heads {
		set(arch+".attention.key_length", uint32(headDim))
		set(arch+".attention.value_length", uint32(headDim))
	}
	if arch == "llama" {
		set(arch+".rope.dimension_count", uint32(headDim))
	}
	set(arch+".vocab_size", uint32(cfg.VocabSize))
	var ropeFreqs []float32
	if rs := cfg.RopeScaling; rs != nil {
		switch rs.Type {
		case "", "default":
		case "linear":
			set(arch+".rope.scaling.type", "linear")
			set(arch+".rope.scaling.factor", float32(rs.Factor))
		case "llama3":
			ropeFreqs = llama3Factors(cfg.RopeTheta, headDim, rs.Factor, rs.LowFreq, rs.HighFreq, rs.OriginalMaxPE)
		default:
			return fmt.Errorf("rope_scaling type %q is not supported", rs.Type)
		}
	}
	for _, kv := range vf.Metadata.KVs() {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			md.Set(kv.Key, kv.Value)
		}
	}
	if err != nil {
		return err
	}

	type outTensor struct {
		spec gguf.TensorSpec
		data []float32
	}
	var ts []outTensor
	add := func(name string, rows, cols int64, v []float32) {
		dims := []int64{cols, rows}
		if rows == 1 {
			dims = []int64{cols}
		}
		ts = append(ts, outTensor{gguf.TensorSpec{Name: name, Type: gguf.TypeF32, Dims: dims}, v})
	}
	get := func(name string) (*tensorData, error) {
		t, ok := tensors[name]
		if !ok {
			return nil, fmt.Errorf("tensor %s missing from model.safetensors", name)
		}
		return t, nil
	}
	mapping := []struct{ hf, gg string }{
		{"input_layernorm.weight", "attn_norm.weight"},
		{"self_attn.q_proj.weight", "attn_q.weight"},
		{"self_attn.q_proj.bias", "attn_q.bias"},
		{"self_attn.k_proj.weight", "attn_k.weight"},
		{"self_attn.k_proj.bias", "attn_k.bias"},
		{"self_attn.v_proj.weight", "attn_v.weight"},
		{"self_attn.v_proj.bias", "attn_v.bias"},
		{"self_attn.o_proj.weight", "attn_output.weight"},
		{"self_attn.q_norm.weight", "attn_q_norm.weight"},
		{"self_attn.k_norm.weight", "attn_k_norm.weight"},
		{"post_attention_layernorm.weight", "ffn_norm.weight"},
		{"mlp.gate_proj.weight", "ffn_gate.weight"},
		{"mlp.up_proj.weight", "ffn_up.weight"},
		{"mlp.down_proj.weight", "ffn_down.weight"},
	}
	emb, err := get("model.embed_tokens.weight")
	if err != nil {
		return err
	}
	add("token_embd.weight", emb.rows, emb.cols, emb.values)
	norm, err := get("model.norm.weight")
	if err != nil {
		return err
	}
	add("output_norm.weight", 1, norm.cols, norm.values)
	if !cfg.TieWordEmbeddings {
		head, err := get("lm_head.weight")
		if err != nil {
			return err
		}
		add("output.weight", head.rows, head.cols, head.values)
	}
	if ropeFreqs != nil {
		add("rope_freqs.weight", 1, int64(len(ropeFreqs)), ropeFreqs)
	}
	for l := range cfg.Layers {
		for _, m := range mapping {
			t, ok := tensors[fmt.Sprintf("model.layers.%d.%s", l, m.hf)]
			if !ok {
				continue
			}
			v := t.values
			if arch == "llama" && m.gg == "attn_q.weight" {
				v = permute(v, t.rows, t.cols, cfg.Heads)
			}
			if arch == "llama" && m.gg == "attn_k.weight" {
				v = permute(v, t.rows, t.cols, cfg.KVHeads)
			}
			add(fmt.Sprintf("blk.%d.%s", l, m.gg), t.rows, t.cols, v)
		}
	}

	specs := make([]gguf.TensorSpec, len(ts))
	for i, t := range ts {
		specs[i] = t.spec
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := gguf.NewWriter(f, &md, specs)
	if err != nil {
		return err
	}
	for _, t := range ts {
		b := make([]byte, 4*len(t.data))
		for i, v := range t.data {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		if err := w.WriteTensor(t.spec.Name, b); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}

// permute reorders the rows of a Q or K projection (rows = heads·headDim)
// from the rotate-half layout of Hugging Face checkpoints to the
// adjacent-pair layout that llama.cpp's `llama` RoPE expects: within each
// head, row s·(d/2)+i moves to row 2i+s.
func permute(v []float32, rows, cols int64, heads int) []float32 {
	out := make([]float32, len(v))
	hd := rows / int64(heads)
	for h := range int64(heads) {
		for s := range int64(2) {
			for i := range hd / 2 {
				src := h*hd + s*(hd/2) + i
				dst := h*hd + 2*i + s
				copy(out[dst*cols:(dst+1)*cols], v[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

// llama3Factors computes the per-frequency divisors of Llama 3.1 RoPE
// scaling: long wavelengths are slowed by factor, short ones kept, and the
// band between blended smoothly.
func llama3Factors(theta float64, headDim int, factor, low, high, origCtx float64) []float32 {
	lowWavelen, highWavelen := origCtx/low, origCtx/high
	out := make([]float32, headDim/2)
	for j := range out {
		freq := 1 / math.Pow(theta, float64(2*j)/float64(headDim))
		wavelen := 2 * math.Pi / freq
		switch {
		case wavelen < highWavelen:
			out[j] = 1
		case wavelen > lowWavelen:
			out[j] = float32(factor)
		default:
			smooth := (origCtx/wavelen - low) / (high - low)
			out[j] = float32(1 / ((1-smooth)/factor + smooth))
		}
	}
	return out
}

type tensorData struct {
	rows, cols int64
	values     []float32
}

// readSafetensors reads every tensor of a .safetensors file as float32
// (F32, F16 and BF16 are accepted). 1-D tensors have rows 1.
func readSafetensors(path string) (map[string]*tensorData, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 8 {
		return nil, fmt.Errorf("%s: too short", path)
	}
	hlen := binary.LittleEndian.Uint64(data)
	if hlen > uint64(len(data)-8) {
		return nil, fmt.Errorf("%s: header length %d past the end", path, hlen)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+hlen], &header); err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	body := data[8+hlen:]
	out := map[string]*tensorData{}
	for name, raw := range header {
		if name == "__metadata__" {
			continue
		}
		var t stTensor
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		if t.Offsets[0] < 0 || t.Offsets[1] > len(body) || t.Offsets[0] > t.Offsets[1] {
			return nil, fmt.Errorf("%s: tensor %s: bad offsets %v", path, name, t.Offsets)
		}
		b := body[t.Offsets[0]:t.Offsets[1]]
		td := &tensorData{rows: 1}
		switch len(t.Shape) {
		case 1:
			td.cols = t.Shape[0]
		case 2:
			td.rows, td.cols = t.Shape[0], t.Shape[1]
		default:
			return nil, fmt.Errorf("%s: tensor %s: %d dimensions", path, name, len(t.Shape))
		}
		n := td.rows * td.cols
		td.values = make([]float32, n)
		var width int64
		switch t.DType {
		case "F32":
			width = 4
		case "F16", "BF16":
			width = 2
		default:
			return nil, fmt.Errorf("%s: tensor %s: dtype %s not supported", path, name, t.DType)
		}
		if int64(len(b)) != n*width {
			return nil, fmt.Errorf("%s: tensor %s: %d bytes for %d %s values", path, name, len(b), n, t.DType)
		}
		for i := range n {
			switch t.DType {
			case "F32":
				td.values[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			case "F16":
				td.values[i] = gguf.F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
			case "BF16":
				td.values[i] = gguf.BF16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
			}
		}
		out[name] = td
	}
	return out, nil
}
