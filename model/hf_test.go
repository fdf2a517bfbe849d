package model_test

import (
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/model"
	"github.com/stretchr/testify/require"
)

// hfFixture is a small random-weight model built with Hugging Face
// transformers (tools/hffixtures/make_fixtures.py) and converted to GGUF
// with llama.cpp's conventions (tools/hf2gguf); logits.json holds the
// logits transformers computed for input_ids.
type hfFixture struct {
	Provenance string      `json:"provenance"`
	InputIDs   []int32     `json:"input_ids"`
	Logits     [][]float32 `json:"logits"`
}

// hfFixtures names each fixture and the architecture path it checks.
var hfFixtures = []struct{ name, checks string }{
	{"llama-linear", "llama Q/K permutation, GQA, untied output, linear RoPE scaling"},
	{"llama3", "one KV head, tied embeddings, Llama 3 rope_freqs"},
	{"qwen2", "Q/K/V biases, NeoX RoPE, tied embeddings"},
	{"qwen3", "per-head Q/K RMSNorm, head_dim 32 != dim/heads, NeoX RoPE"},
}

// TestHFFixtureLogits compares logits with transformers, both for the
// whole prompt in one batch and token by token through the KV cache.
func TestHFFixtureLogits(t *testing.T) {
	for _, fx := range hfFixtures {
		t.Run(fx.name, func(t *testing.T) {
			var exp hfFixture
			loadJSON(t, filepath.Join("testdata/hf", fx.name+".logits.json"), &exp)
			require.NotEmpty(t, exp.Logits)
			m := loadCPU(t, filepath.Join("testdata/hf", fx.name+".gguf"), model.Options{CtxSize: 32, Slots: 2, CacheTypeK: model.CacheF32, CacheTypeV: model.CacheF32})

			batch := promptLogits(t, m, exp.InputIDs)
			for pos := range exp.Logits {
				assertClose(t, exp.Logits[pos], batch[pos], 2e-4)
			}

			// One token per forward pass, in slot 1.
			vocab := m.Config.VocabSize
			out := make([]float32, vocab)
			for pos, id := range exp.InputIDs {
				b := &model.Batch{Tokens: []int32{id}, Pos: []int32{int32(pos)}, Slot: []int32{1}}
				require.NoError(t, m.Forward(b, []int32{0}, out))
				assertClose(t, exp.Logits[pos], out, 2e-4)
			}
		})
	}
}
