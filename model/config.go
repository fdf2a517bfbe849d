// Package model holds the LLaMA-family architectures m40llm runs: their
// hyper-parameters (Config), their weights (Weights), the forward pass
// written once against a small Backend interface, and the generation loop.
//
// # Conventions
//
// In this package matrices are row-major (rows, cols), as in llama2.c: a
// weight W (d, n) maps an n-vector to a d-vector, out = W @ x. A GGUF tensor
// with ggml dims ne=[n, d] is such a (d, n) matrix: d rows of n contiguous
// elements. Activations for a batch of b tokens are (b, width) matrices.
package model

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

// ConfigError reports missing or invalid hyper-parameters.
type ConfigError struct {
	Key string // metadata key, when one is at fault
	Msg string
}

func (e *ConfigError) Error() string {
	if e.Key != "" {
		return fmt.Sprintf("model config: %s: %s", e.Key, e.Msg)
	}
	return "model config: " + e.Msg
}

// RopeStyle selects how rotary position embedding pairs up dimensions.
type RopeStyle int

const (
	// RopeNorm rotates adjacent pairs (x[2i], x[2i+1]): llama.cpp's
	// LLAMA_ROPE_TYPE_NORM, used by `llama` GGUF files, whose converter
	// permutes the Q and K rows to match.
	RopeNorm RopeStyle = iota
	// RopeNeoX rotates split halves (x[i], x[i+d/2]): LLAMA_ROPE_TYPE_NEOX,
	// used by qwen2 and qwen3.
	RopeNeoX
)

func (s RopeStyle) String() string {
	if s == RopeNeoX {
		return "neox"
	}
	return "norm"
}

// Config is the set of hyper-parameters of a model, read from the
// `{arch}.*` metadata keys.
type Config struct {
	Arch          string
	ContextLength int // trained context length
	Dim           int // embedding width (d_model)
	Layers        int
	FFNDim        int // SwiGLU hidden width
	Heads         int
	KVHeads       int // < Heads for grouped-query attention
	HeadDim       int // width of one query/key head
	ValueDim      int // width of one value head
	RopeDim       int // leading dims of each head that RoPE rotates (≤ HeadDim)
	RopeBase      float32
	// RopeFreqScale multiplies positions (linear RoPE scaling: 1/factor).
	RopeFreqScale float32
	RopeStyle     RopeStyle
	NormEps       float32
	VocabSize     int
	// QKVBias: attn_q/k/v carry biases (qwen2).
	QKVBias bool
	// QKNorm: per-head RMSNorm of Q and K before RoPE (qwen3).
	QKNorm bool
	// Pooling is the file's `{arch}.pooling_type` (an embedding model's
	// way of making one vector of a prompt), PoolingUnset without the key.
	Pooling Pooling
}

// QDim returns the width of all query heads together.
func (c *Config) QDim() int { return c.Heads * c.HeadDim }

// KVDim returns the width of all key heads together.
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// VDim returns the width of all value heads together.
func (c *Config) VDim() int { return c.KVHeads * c.ValueDim }

// archTraits is what differs between the supported architectures.
type archTraits struct {
	rope    RopeStyle
	qkvBias bool
	qkNorm  bool
}

// architectures maps general.architecture to its traits. Mistral and
// Llama 2/3 GGUF files are labelled "llama".
var architectures = map[string]archTraits{
	"llama": {rope: RopeNorm},
	"qwen2": {rope: RopeNeoX, qkvBias: true},
	"qwen3": {rope: RopeNeoX, qkNorm: true},
}

// SupportedArchitectures lists the general.architecture values Load accepts.
func SupportedArchitectures() []string {
	return []string{"llama", "qwen2", "qwen3"}
}

// ConfigFromGGUF reads the hyper-parameters of a model file.
func ConfigFromGGUF(md *gguf.Metadata) (*Config, error) {
	arch, err := md.String("general.architecture")
	if err != nil {
		return nil, &ConfigError{Key: "general.architecture", Msg: err.Error()}
	}
	traits, ok := architectures[arch]
	if !ok {
		return nil, &UnsupportedError{What: "architecture", Value: arch, Hint: "supported: " + strings.Join(SupportedArchitectures(), ", ")}
	}
	c := &Config{Arch: arch, RopeStyle: traits.rope, QKVBias: traits.qkvBias, QKNorm: traits.qkNorm}
	r := keyReader{md: md, prefix: arch + "."}
	c.ContextLength = r.int("context_length", 0)
	c.Dim = r.int("embedding_length", 0)
	c.Layers = r.int("block_count", 0)
	c.FFNDim = r.int("feed_forward_length", 0)
	c.Heads = r.int("attention.head_count", 0)
	c.KVHeads = r.int("attention.head_count_kv", c.Heads)
	if r.err == nil && c.Heads > 0 {
		c.HeadDim = r.int("attention.key_length", c.Dim/c.Heads)
		c.ValueDim = r.int("attention.value_length", c.HeadDim)
		c.RopeDim = r.int("rope.dimension_count", c.HeadDim)
	}
	c.NormEps = r.float("attention.layer_norm_rms_epsilon", -1)
	c.RopeBase = r.float("rope.freq_base", 10000)
	c.RopeFreqScale = 1
	if typ := r.str("rope.scaling.type", "none"); r.err == nil {
		switch typ {
		case "none":
		case "linear":
			factor := r.float("rope.scaling.factor", 1)
			if factor > 0 {
				c.RopeFreqScale = 1 / factor
			}
		default:
			r.fail("rope.scaling.type", fmt.Sprintf("RoPE scaling %q is not supported (only linear)", typ))
		}
	}
	if v := r.float("rope.scale_linear", 0); v > 0 { // older key
		c.RopeFreqScale = 1 / v
	}
	if r.err != nil {
		return nil, r.err
	}
	if v, err := md.Int(arch + ".pooling_type"); err == nil {
		p, ok := PoolingFromGGUF(v)
		if !ok {
			return nil, &ConfigError{Key: arch + ".pooling_type", Msg: fmt.Sprintf("%d is not a pooling type (0 none, 1 mean, 2 cls, 3 last, 4 rank)", v)}
		}
		c.Pooling = p
	} else if !errors.Is(err, gguf.ErrKeyNotFound) {
		return nil, &ConfigError{Key: arch + ".pooling_type", Msg: err.Error()}
	}
	if n, err := md.Int(arch + ".vocab_size"); err == nil {
		c.VocabSize = int(n)
	} else if toks, err := md.Array("tokenizer.ggml.tokens"); err == nil {
		c.VocabSize = toks.Len()
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	pos := []struct {
		key string
		v   int
	}{
		{"embedding_length", c.Dim}, {"block_count", c.Layers}, {"feed_forward_length", c.FFNDim},
		{"attention.head_count", c.Heads}, {"attention.head_count_kv", c.KVHeads},
		{"attention.key_length", c.HeadDim}, {"attention.value_length", c.ValueDim},
	}
	for _, p := range pos {
		if p.v <= 0 {
			return &ConfigError{Key: c.Arch + "." + p.key, Msg: fmt.Sprintf("must be positive, got %d", p.v)}
		}
	}
	switch {
	case c.Heads%c.KVHeads != 0:
		return &ConfigError{Key: c.Arch + ".attention.head_count_kv", Msg: fmt.Sprintf("%d query heads are not a multiple of %d KV heads", c.Heads, c.KVHeads)}
	case c.RopeDim <= 0 || c.RopeDim > c.HeadDim || c.RopeDim%2 != 0:
		return &ConfigError{Key: c.Arch + ".rope.dimension_count", Msg: fmt.Sprintf("%d is not an even number in [2, head dim %d]", c.RopeDim, c.HeadDim)}
	case !(c.NormEps > 0) || c.NormEps > 1:
		return &ConfigError{Key: c.Arch + ".attention.layer_norm_rms_epsilon", Msg: fmt.Sprintf("%g is not in (0, 1]", c.NormEps)}
	case !(c.RopeBase > 0) || math.IsInf(float64(c.RopeBase), 0):
		return &ConfigError{Key: c.Arch + ".rope.freq_base", Msg: fmt.Sprintf("%g is not positive", c.RopeBase)}
	case c.VocabSize <= 0:
		return &ConfigError{Key: "tokenizer.ggml.tokens", Msg: "vocabulary size unknown"}
	}
	return nil
}

// keyReader reads optional and required `{arch}.*` keys, keeping the first
// error.
type keyReader struct {
	md     *gguf.Metadata
	prefix string
	err    error
}

func (r *keyReader) fail(key, msg string) {
	if r.err == nil {
		r.err = &ConfigError{Key: r.prefix + key, Msg: msg}
	}
}

// int reads a non-negative integer; def < 0 never happens for required keys,
// which pass def 0 and fail when absent.
func (r *keyReader) int(key string, def int) int {
	if r.err != nil {
		return 0
	}
	v, err := r.md.Uint(r.prefix + key)
	switch {
	case errors.Is(err, gguf.ErrKeyNotFound):
		if def == 0 {
			r.fail(key, "required key is missing")
		}
		return def
	case err != nil:
		r.fail(key, err.Error())
		return 0
	case v > 1<<31:
		r.fail(key, fmt.Sprintf("value %d is out of range", v))
		return 0
	}
	return int(v)
}

// float reads a float; def < 0 marks the key as required.
func (r *keyReader) float(key string, def float32) float32 {
	if r.err != nil {
		return 0
	}
	v, err := r.md.Float(r.prefix + key)
	switch {
	case errors.Is(err, gguf.ErrKeyNotFound):
		if def < 0 {
			r.fail(key, "required key is missing")
		}
		return def
	case err != nil:
		r.fail(key, err.Error())
		return 0
	}
	return float32(v)
}

func (r *keyReader) str(key, def string) string {
	if r.err != nil {
		return ""
	}
	v, err := r.md.String(r.prefix + key)
	switch {
	case errors.Is(err, gguf.ErrKeyNotFound):
		return def
	case err != nil:
		r.fail(key, err.Error())
	}
	return v
}
