package synth

import (
	"fmt"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

// Mix is one of llama.cpp's K-quant mixes: a file type (LLAMA_FTYPE_MOSTLY_*)
// for which its quantize tool gives tensors different types by their role
// and layer. The zero Mix, NoMix, gives every 2-D weight Options.Type.
//
// A mix's types are those llama_tensor_get_type (src/llama-quant.cpp,
// llama.cpp c392e509, 2025-02) picks for a model of our architectures with
// no experts and no importance matrix. With n the layer count, i the layer
// of attn_v or ffn_down (llama.cpp counts these tensors in file order, one
// per layer, so the count is the layer index), and
//
//	moreBits(i) = i < n/8 || i >= 7n/8 || (i - n/8)%3 == 2
//
// every 2-D weight gets the mix's base type (Q3_K, Q4_K or Q5_K) except:
//
//   - output.weight, or token_embd.weight when there is no output.weight
//     (tied embeddings, as in the qwen presets): Q6_K, or Q8_0 when its
//     rows are not whole blocks of the base type. An untied token_embd
//     keeps the base type.
//   - attn_v: Q3_K_M Q5_K for i < 2, else Q4_K; Q3_K_L Q5_K; Q4_K_M and
//     Q5_K_M Q6_K when moreBits(i); Q4_K_S Q5_K for i < 4. A 70B model
//     (llama.cpp's LLM_TYPE_70B: 80 layers, and for llama KV heads fewer
//     than heads) then takes Q5_K for a Q3_K or Q4_K attn_v.
//   - ffn_down: Q3_K_M Q5_K for i < n/16, else Q4_K; Q3_K_L Q5_K; Q4_K_M
//     and Q5_K_M Q6_K when moreBits(i); Q4_K_S Q5_K for i < n/8.
//   - attn_output: Q3_K_M Q4_K; Q3_K_L Q5_K.
//
// The head-count (GQA) rules of llama_tensor_get_type concern only the
// Q2_K, IQ3 and IQ4 file types, and its architecture rules only Falcon and
// expert models, so none applies here; nor does any rule single out qwen2
// or qwen3. Q5_K_S and Q3_K_S change only the output (and tied embedding)
// tensor. llama.cpp's Q6_K file type gives every weight Q6_K, which is
// Options.Type Q6_K; its Q2_K mix is not provided (Q2_K as Options.Type
// makes every weight Q2_K).
//
// A type that the rows of a tensor cannot hold (K-quants need rows that
// are whole 256-element super-blocks) then falls back as in
// llama_tensor_get_type: Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, Q2_K
// and Q3_K to IQ4_NL, and to F16 when the rows are not whole 32-element
// blocks either.
type Mix uint8

// The mixes, named as llama.cpp's quantize tool names them.
const (
	NoMix Mix = iota
	MixQ3_K_S
	MixQ3_K_M
	MixQ3_K_L
	MixQ4_K_S
	MixQ4_K_M
	MixQ5_K_S
	MixQ5_K_M
)

// mixTable is indexed by Mix: the name, llama.cpp's LLAMA_FTYPE number
// (written as general.file_type) and the base type.
var mixTable = [...]struct {
	name     string
	fileType uint32
	base     gguf.Type
}{
	NoMix:     {},
	MixQ3_K_S: {"Q3_K_S", 11, gguf.TypeQ3_K},
	MixQ3_K_M: {"Q3_K_M", 12, gguf.TypeQ3_K},
	MixQ3_K_L: {"Q3_K_L", 13, gguf.TypeQ3_K},
	MixQ4_K_S: {"Q4_K_S", 14, gguf.TypeQ4_K},
	MixQ4_K_M: {"Q4_K_M", 15, gguf.TypeQ4_K},
	MixQ5_K_S: {"Q5_K_S", 16, gguf.TypeQ5_K},
	MixQ5_K_M: {"Q5_K_M", 17, gguf.TypeQ5_K},
}

// String returns the mix's name (Q4_K_M), or "none" for NoMix.
func (m Mix) String() string {
	if m == NoMix {
		return "none"
	}
	if int(m) < len(mixTable) {
		return mixTable[m].name
	}
	return fmt.Sprintf("Mix(%d)", uint8(m))
}

// valid reports whether m is NoMix or a known mix.
func (m Mix) valid() bool { return int(m) < len(mixTable) }

// FileType returns the LLAMA_FTYPE number llama.cpp writes as
// general.file_type for the mix (15 for Q4_K_M), or 0 for NoMix.
func (m Mix) FileType() uint32 {
	if !m.valid() {
		return 0
	}
	return mixTable[m].fileType
}

// Base returns the type most of the mix's weights get (Q4_K for Q4_K_M),
// or 0 (F32) for NoMix.
func (m Mix) Base() gguf.Type {
	if !m.valid() {
		return 0
	}
	return mixTable[m].base
}

// pureFileTypes is general.file_type for a file whose 2-D weights are all
// of one type: llama.cpp's LLAMA_FTYPE for the type, or for a K-quant the
// one llama.cpp's loader guesses from it (llama_model_loader: Q3_K gives
// Q3_K_M, Q4_K Q4_K_M, Q5_K Q5_K_M).
var pureFileTypes = map[gguf.Type]uint32{
	gguf.TypeF32: 0, gguf.TypeF16: 1, gguf.TypeQ4_0: 2, gguf.TypeQ4_1: 3, gguf.TypeQ8_0: 7,
	gguf.TypeQ5_0: 8, gguf.TypeQ5_1: 9, gguf.TypeQ2_K: 10, gguf.TypeQ3_K: 12, gguf.TypeQ4_K: 15,
	gguf.TypeQ5_K: 17, gguf.TypeQ6_K: 18, gguf.TypeIQ4_NL: 25,
}

// WeightNames lists the names ParseWeights accepts: every type Write can
// give all 2-D weights, then the mixes.
func WeightNames() []string {
	var names []string
	for _, t := range gguf.Types() {
		if _, ok := pureFileTypes[t]; ok && t.CanQuantize() {
			names = append(names, t.String())
		}
	}
	for m := NoMix + 1; int(m) < len(mixTable); m++ {
		names = append(names, m.String())
	}
	return names
}

// ParseWeights returns the Options.Type and Options.Mix that name selects
// (case-insensitive): a type from WeightNames gives that type and NoMix, a
// mix gives the mix and its base type. ok is false for any other name.
func ParseWeights(name string) (t gguf.Type, m Mix, ok bool) {
	name = strings.ToUpper(name)
	for m := NoMix + 1; int(m) < len(mixTable); m++ {
		if mixTable[m].name == name {
			return mixTable[m].base, m, true
		}
	}
	t, ok = gguf.ParseType(name)
	if _, pure := pureFileTypes[t]; !ok || !pure || !t.CanQuantize() {
		return 0, NoMix, false
	}
	return t, NoMix, true
}

// is70B reports whether llama.cpp's loader calls the model LLM_TYPE_70B,
// which its attn_v rule singles out.
func (p *Preset) is70B() bool {
	switch p.Arch {
	case "llama":
		return p.Layers == 80 && p.KVHeads != p.Heads
	case "qwen2":
		return p.Layers == 80
	}
	return false
}

// moreBits is llama.cpp's use_more_bits: the first and last eighth of the
// n layers, and every third layer in between.
func moreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// mixType returns the type mix m gives the 2-D weight role ("output",
// "token_embd", "attn_v", ...) of layer i, whose rows hold rowLen
// elements, before the fallback; see Mix.
func (p *Preset) mixType(m Mix, role string, i int, rowLen int64) gguf.Type {
	t := m.Base()
	n := p.Layers
	switch {
	case role == "output" || role == "token_embd" && p.Tied:
		if rowLen%int64(t.BlockSize()) != 0 {
			return gguf.TypeQ8_0
		}
		return gguf.TypeQ6_K
	case role == "attn_v":
		switch {
		case m == MixQ3_K_M && i < 2, m == MixQ3_K_L, m == MixQ4_K_S && i < 4:
			t = gguf.TypeQ5_K
		case m == MixQ3_K_M:
			t = gguf.TypeQ4_K
		case (m == MixQ4_K_M || m == MixQ5_K_M) && moreBits(i, n):
			t = gguf.TypeQ6_K
		}
		if p.is70B() && (t == gguf.TypeQ3_K || t == gguf.TypeQ4_K) {
			t = gguf.TypeQ5_K
		}
	case role == "ffn_down":
		switch {
		case m == MixQ3_K_M && i < n/16, m == MixQ3_K_L, m == MixQ4_K_S && i < n/8:
			t = gguf.TypeQ5_K
		case m == MixQ3_K_M:
			t = gguf.TypeQ4_K
		case (m == MixQ4_K_M || m == MixQ5_K_M) && moreBits(i, n):
			t = gguf.TypeQ6_K
		}
	case role == "attn_output":
		switch m {
		case MixQ3_K_M:
			t = gguf.TypeQ4_K
		case MixQ3_K_L:
			t = gguf.TypeQ5_K
		}
	}
	return t
}

// fallback returns the type llama.cpp uses instead of t for rows of rowLen
// elements: t itself when the rows are whole blocks of t, else the
// fallback described at Mix. ok is false when t has no fallback (the
// legacy types, IQ4_NL, F16 and F32 need whole blocks).
func fallback(t gguf.Type, rowLen int64) (gguf.Type, bool) {
	if rowLen%int64(t.BlockSize()) == 0 {
		return t, true
	}
	var f gguf.Type
	switch t {
	case gguf.TypeQ4_K:
		f = gguf.TypeQ5_0
	case gguf.TypeQ5_K:
		f = gguf.TypeQ5_1
	case gguf.TypeQ6_K:
		f = gguf.TypeQ8_0
	case gguf.TypeQ2_K, gguf.TypeQ3_K:
		f = gguf.TypeIQ4_NL
	default:
		return t, false
	}
	if rowLen%int64(f.BlockSize()) != 0 {
		f = gguf.TypeF16
	}
	return f, true
}
