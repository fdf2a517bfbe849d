package tokenizer

import (
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chatVocab builds a small byte-level BPE vocabulary in memory: the 256
// byte tokens (token b is byte b), a few merges, and ChatML-style special
// tokens.
func chatVocab(t *testing.T, pre string, extra map[string]any) *Tokenizer {
	var tokens []string
	var types []int32
	for b := 0; b < 256; b++ {
		tokens = append(tokens, byteToText[b])
		types = append(types, int32(TypeNormal))
	}
	add := func(s string, typ TokenType) {
		tokens = append(tokens, s)
		types = append(types, int32(typ))
	}
	add("he", TypeNormal)               // 256
	add("ll", TypeNormal)               // 257
	add("hell", TypeNormal)             // 258
	add("hello", TypeNormal)            // 259
	add("<|im_start|>", TypeControl)    // 260
	add("<|im_end|>", TypeControl)      // 261
	add("<|endoftext|>", TypeNormal)    // 262: forced to control by its text
	add("<tool>", TypeUserDefined)      // 263
	add("<mask>", TypeControl)          // 264
	add("<|im_start|>x", TypeUnused)    // 265: longer, never produced
	add("Ġhello", TypeNormal)           // 266
	add("<|fim_pad|>", TypeUserDefined) // 267: end of generation by its text
	var md gguf.Metadata
	kvs := map[string]any{
		keyModel:                      "gpt2",
		keyPre:                        pre,
		keyTokens:                     tokens,
		keyTokenType:                  types,
		keyMerges:                     []string{"h e", "l l", "he ll", "hell o", "Ġ hello"},
		"tokenizer.ggml.eos_token_id": uint32(261),
		"tokenizer.ggml.bos_token_id": uint32(260),
	}
	for k, v := range extra {
		kvs[k] = v
	}
	for k, v := range kvs {
		require.NoError(t, md.SetAny(k, v))
	}
	tok, err := New(&md)
	require.NoError(t, err)
	return tok
}

func TestParseSpecial(t *testing.T) {
	tok := chatVocab(t, "gpt-2", nil)
	tests := []struct {
		name         string
		text         string
		parseSpecial bool
		want         []int32
	}{
		{"control parsed", "<|im_start|>hello<|im_end|>", true, []int32{260, 259, 261}},
		{"control as text", "<|im_end|>", false, []int32{'<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|', '>'}},
		{"user-defined always parsed", "hello<tool>hello", false, []int32{259, 263, 259}},
		{"forced control", "<|endoftext|>", true, []int32{262}},
		{"adjacent", "<|im_end|><|im_end|> hello", true, []int32{261, 261, 266}},
		{"empty", "", true, nil},
		{"only text", "hello hello", true, []int32{259, 266}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, nilIfEmpty(tok.Encode(tt.text, false, tt.parseSpecial)))
		})
	}
	assert.True(t, tok.IsControl(262), "<|endoftext|> becomes a control token")
	assert.Equal(t, TypeControl, tok.Type(262))
	assert.False(t, tok.IsControl(259))
}

func TestParseSpecialSPM(t *testing.T) {
	tok := loadTestVocab(t, "llama-spm")
	// After a special token the text gets the space prefix again.
	assert.Equal(t, []int32{1, 22172, 2}, tok.Encode("<s>hello</s>", false, true))
	assert.Equal(t, []int32{1, 1, 22172, 2}, tok.Encode("<s>hello</s>", true, true))
	noParse := tok.Encode("<s>hello</s>", false, false)
	assert.NotContains(t, noParse, int32(1))
	assert.NotContains(t, noParse, int32(2))
	assert.Equal(t, "<s>hello</s>", tok.Decode(noParse))
}

// TestPhi3Strip checks the white space that Phi-3's special tokens swallow
// on their right, a rule llama.cpp applies by model name.
func TestPhi3Strip(t *testing.T) {
	tok := loadTestVocab(t, "phi-3")
	user, ok := tok.TokenID("<|user|>")
	require.True(t, ok)
	end, ok := tok.TokenID("<|end|>")
	require.True(t, ok)
	hello := tok.Encode("Hello", false, false)
	got := tok.Encode("<|user|>\n  Hello<|end|>\n", false, true)
	want := append(append([]int32{user}, hello...), end)
	assert.Equal(t, want, got)
	// <s> keeps the white space after it.
	assert.Equal(t, []int32{1, 29871}, tok.Encode("<s>\n", false, true)[:2])
}

func TestLStrip(t *testing.T) {
	tok := chatVocab(t, "jina-v2-es", nil)
	assert.Equal(t, []int32{'a', 264, 266}, tok.Encode("a \t <mask> hello", false, true))
}

func TestIsEOG(t *testing.T) {
	tok := chatVocab(t, "gpt-2", nil)
	for id, want := range map[int32]bool{261: true, 262: true, 267: true, 260: false, 259: false, 263: false, -1: false, 9999: false} {
		assert.Equal(t, want, tok.IsEOG(id), "id %d", id)
	}
	assert.Equal(t, int32(261), tok.EOT(), "<|im_end|>, the lowest id of the end-of-turn texts")

	spm := loadTestVocab(t, "llama-spm")
	assert.True(t, spm.IsEOG(2))
	assert.False(t, spm.IsEOG(1))
	assert.False(t, spm.IsEOG(13))

	phi3 := loadTestVocab(t, "phi-3")
	end, _ := phi3.TokenID("<|end|>")
	assert.True(t, phi3.IsEOG(end))
	assert.True(t, phi3.IsEOG(32000), "<|endoftext|>, the EOS")
	assert.False(t, phi3.IsEOG(2), "</s> is not the EOS of Phi-3")

	l3 := llama3Tokenizer(t)
	for _, s := range []string{"<|eot_id|>", "<|eom_id|>"} {
		id, ok := l3.TokenID(s)
		require.True(t, ok)
		assert.True(t, l3.IsEOG(id), s)
	}
	id, _ := l3.TokenID("<|start_header_id|>")
	assert.False(t, l3.IsEOG(id))
	assert.Equal(t, []int32{128000, 128006, 882, 128007, 271, 9906, 128009},
		l3.Encode("<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>", true, true))
}

func TestMetadataOverrides(t *testing.T) {
	tok := chatVocab(t, "gpt-2", map[string]any{
		keyAddBOS:                         true,
		keyAddEOS:                         true,
		"tokenizer.ggml.eot_token_id":     uint32(261),
		"tokenizer.ggml.unknown_token_id": uint32(1 << 31), // out of range: ignored
	})
	assert.True(t, tok.AddBOS())
	assert.True(t, tok.AddEOS())
	assert.Equal(t, []int32{260, 259, 261}, tok.Encode("hello", true, false))
	assert.Equal(t, int32(261), tok.EOT())
	assert.Equal(t, int32(-1), tok.UNK())
	assert.True(t, tok.IsEOG(262), "still end of generation by its text")

	noBOS := chatVocab(t, "chatglm-bpe", map[string]any{"tokenizer.ggml.bos_token_id": int32(-1)})
	assert.Equal(t, int32(-1), noBOS.BOS())
	assert.False(t, noBOS.AddBOS())
}
