package model

import (
	"fmt"
	"math"
)

// Pooling is how the hidden states of a prompt's tokens become one
// embedding vector. The zero value, PoolingUnset, means "not said": in a
// Config, the file has no `{arch}.pooling_type`; in EmbedOptions, the
// model's own.
type Pooling int

// Pooling types. The GGUF key `{arch}.pooling_type` stores them as
// llama.cpp's enum llama_pooling_type: 0 none, 1 mean, 2 cls, 3 last, 4
// rank (see PoolingFromGGUF).
const (
	PoolingUnset Pooling = iota
	// PoolingNone: one vector per token, no pooling (not served as an
	// embedding).
	PoolingNone
	// PoolingMean: the average of every token's hidden state.
	PoolingMean
	// PoolingCLS: the hidden state of the first token.
	PoolingCLS
	// PoolingLast: the hidden state of the last token (Qwen3-Embedding).
	PoolingLast
	// PoolingRank: a reranker's classifier head (not supported).
	PoolingRank
)

var poolingNames = [...]string{"unset", "none", "mean", "cls", "last", "rank"}

func (p Pooling) String() string {
	if p < 0 || int(p) >= len(poolingNames) {
		return fmt.Sprintf("pooling(%d)", int(p))
	}
	return poolingNames[p]
}

// ParsePooling returns the Pooling named s ("none", "mean", "cls", "last",
// "rank"; "" is PoolingUnset). Other names are an *UnsupportedError.
func ParsePooling(s string) (Pooling, error) {
	if s == "" {
		return PoolingUnset, nil
	}
	for i, n := range poolingNames[1:] {
		if n == s {
			return Pooling(i + 1), nil
		}
	}
	return PoolingUnset, &UnsupportedError{What: "pooling type", Value: s, Hint: "use mean, cls or last"}
}

// PoolingFromGGUF converts a `{arch}.pooling_type` value (llama.cpp's enum
// llama_pooling_type) to a Pooling; it reports false for values outside
// 0..4.
func PoolingFromGGUF(v int64) (Pooling, bool) {
	if v < 0 || v > 4 {
		return PoolingUnset, false
	}
	return Pooling(v + 1), true
}

// Embeds reports whether p makes one vector of a prompt: mean, cls or last.
func (p Pooling) Embeds() bool { return p == PoolingMean || p == PoolingCLS || p == PoolingLast }

// EmbedOptions configures an embedding request.
type EmbedOptions struct {
	// Pooling overrides the model's pooling type (Config.Pooling);
	// PoolingUnset keeps it.
	Pooling Pooling
}

// EmbedPooling returns the pooling an embedding with override p uses: p,
// or the model's own when p is PoolingUnset. It fails, matching
// ErrInvalidRequest, when that pooling makes no single vector (unset,
// none, rank).
func (c *Config) EmbedPooling(p Pooling) (Pooling, error) {
	if p == PoolingUnset {
		p = c.Pooling
	}
	if !p.Embeds() {
		if p == PoolingUnset {
			return p, fmt.Errorf("%w: the model declares no pooling type (%s.pooling_type); choose mean, cls or last", ErrInvalidRequest, c.Arch)
		}
		return p, fmt.Errorf("%w: pooling %q makes no single embedding vector; choose mean, cls or last", ErrInvalidRequest, p)
	}
	return p, nil
}

// pooler turns the hidden states of a prompt's rows (after the final
// norm, Dim values each) into one L2-normalized vector, chunk by chunk.
type pooler struct {
	p     Pooling
	total int       // tokens of the prompt
	sum   []float64 // (dim) sum of the pooled rows
}

func newPooler(p Pooling, dim, total int) *pooler {
	return &pooler{p: p, total: total, sum: make([]float64, dim)}
}

// wants returns the range [lo, hi) of a chunk's rows whose hidden states
// the pooling needs, for a chunk of n prompt tokens starting at prompt
// token start.
func (pl *pooler) wants(start, n int) (lo, hi int) {
	switch pl.p {
	case PoolingMean:
		return 0, n
	case PoolingCLS:
		if start == 0 && n > 0 {
			return 0, 1
		}
	case PoolingLast:
		if start+n == pl.total && n > 0 {
			return n - 1, n
		}
	}
	return 0, 0
}

// add sums the hidden states in rows ((k, dim) row-major).
func (pl *pooler) add(rows []float32) {
	dim := len(pl.sum)
	for r := 0; r+dim <= len(rows); r += dim {
		for i, v := range rows[r : r+dim] {
			pl.sum[i] += float64(v)
		}
	}
}

// vector returns the pooled vector divided by its Euclidean norm
// (llama.cpp's default embd_normalize 2); a zero vector stays zero.
func (pl *pooler) vector() []float32 {
	var ss float64
	for _, v := range pl.sum {
		ss += v * v
	}
	// The mean's 1/n cancels in the normalization.
	out := make([]float32, len(pl.sum))
	if ss > 0 {
		inv := 1 / math.Sqrt(ss)
		for i, v := range pl.sum {
			out[i] = float32(v * inv)
		}
	}
	return out
}
