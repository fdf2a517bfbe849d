package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// roundTripVocabs are the vocabularies with vectors that Encode supports.
var roundTripVocabs = []string{"llama-spm", "phi-3", "gpt-2", "falcon", "refact", "starcoder", "deepseek-llm", "deepseek-coder", "mpt", "llama-bpe"}

func vocabByName(t *testing.T, name string) *Tokenizer {
	if name == "llama-bpe" {
		return llama3Tokenizer(t)
	}
	return loadTestVocab(t, name)
}

// TestRoundTrip checks Decode(Encode(text)) on the vector inputs. The
// pieces always give the text back. Decode does too, except where
// llama.cpp's clean-up of a BPE vocabulary changes it (" ?" → "?" in cases
// 32 and 45); for SentencePiece vocabularies Decode removes the space
// prefix that Encode adds.
func TestRoundTrip(t *testing.T) {
	for _, name := range roundTripVocabs {
		t.Run(name, func(t *testing.T) {
			tok := vocabByName(t, name)
			changed := 0
			for i, c := range readVectors(t, fixture.Shared(t, "vocab/ggml-vocab-"+name+".gguf.inp")) {
				ids := tok.Encode(c.text, false, false)
				require.Equal(t, c.text, decodeRaw(tok, ids), "case %d: pieces", i)
				want := c.text
				if tok.v.cleanSpaces {
					want = string(cleanSpaces([]byte(c.text)))
				}
				if want != c.text {
					changed++
				}
				assert.Equal(t, want, tok.Decode(ids), "case %d", i)
			}
			t.Logf("%d of 46 cases changed by the clean-up", changed)
		})
	}
}

func TestDecode(t *testing.T) {
	spm := loadTestVocab(t, "llama-spm")
	gpt2 := loadTestVocab(t, "gpt-2")
	tests := []struct {
		name string
		tok  *Tokenizer
		ids  []int32
		want string
	}{
		{"spm leading space dropped", spm, []int32{15043, 3186}, "Hello world"},
		{"spm only first token", spm, []int32{29871, 15043}, " Hello"},
		{"spm bos rendered, space kept", spm, []int32{1, 15043}, "<s> Hello"},
		{"spm byte tokens", spm, []int32{15043, 13, 243, 162, 169, 156}, "Hello\n🦙"},
		{"spm control", spm, []int32{2}, "</s>"},
		{"spm unknown", spm, []int32{0}, "<unk>"},
		{"gpt2 bytes", gpt2, []int32{15496, 995}, "Hello world"},
		{"gpt2 clean-up", gpt2, gpt2.Encode("a , b . c 's", false, false), "a, b. c's"},
		{"gpt2 endoftext", gpt2, []int32{50256}, "<|endoftext|>"},
		{"empty", gpt2, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.tok.Decode(tt.ids))
		})
	}
}

func TestCleanSpaces(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{" ", " "},
		{" ?", "?"},
		{"a ! b , c .", "a! b, c."},
		{"a  ,", "a ,"},
		{"x ' y", "x'y"},
		{"x ' ' y", "x'' y"},
		{" ' ", "'"},
		{"it 's I 'm we 're you 've", "it's I'm we're you've"},
		{"don 't I 'd we 'll", "don 't I 'd we 'll"},
		{"a '", "a '"},
		{"a 'r", "a 'r"},
		{"a 're", "a're"},
		{"' s", "' s"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, string(cleanSpaces([]byte(tt.in))), "%q", tt.in)
	}
}

// streamAll decodes ids through a StreamDecoder and checks that every
// chunk is valid UTF-8.
func streamAll(t *testing.T, sd *StreamDecoder, ids []int32) string {
	var b strings.Builder
	for i, id := range ids {
		s := sd.Add(id)
		require.True(t, utf8.ValidString(s), "chunk %d %q", i, s)
		b.WriteString(s)
	}
	s := sd.Flush()
	require.True(t, utf8.ValidString(s), "flush %q", s)
	b.WriteString(s)
	return b.String()
}

// TestStreamDecoder checks that streaming equals Decode and never splits a
// character, on text where emoji and CJK characters span byte-level tokens.
func TestStreamDecoder(t *testing.T) {
	texts := []string{
		"Hello 🦙🦙 world 😶\u200d🌫️ ✅ 我想在apple工作1314151天～ нещо на Български",
		"  leading spaces, then ' quotes ' and 's 're ?!. ,",
		"கொண்டு 🇺🇳 é e\u0301 ﬁ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
	}
	for _, name := range roundTripVocabs {
		t.Run(name, func(t *testing.T) {
			tok := vocabByName(t, name)
			for _, text := range texts {
				ids := tok.Encode(text, true, false)
				full := tok.Decode(ids)
				assert.Equal(t, full, streamAll(t, tok.NewStreamDecoder(), ids), "%q", text)
			}
		})
	}
}

func TestStreamDecoderBytes(t *testing.T) {
	tok := loadTestVocab(t, "gpt-2")
	// "🦙" is 4 bytes; GPT-2 spells it with byte tokens that split it.
	ids := tok.Encode("🦙", false, false)
	require.Greater(t, len(ids), 1)
	sd := tok.NewStreamDecoder()
	for _, id := range ids[:len(ids)-1] {
		assert.Empty(t, sd.Add(id), "incomplete character held back")
	}
	assert.Equal(t, "🦙", sd.Add(ids[len(ids)-1]))
	assert.Empty(t, sd.Flush())

	// Bytes that never become a character come out as U+FFFD.
	spm := loadTestVocab(t, "llama-spm")
	bad := []int32{243, 162, 15043} // <0xF0> <0x9F> ▁Hello
	assert.Equal(t, "\xf0\x9f Hello", spm.Decode(bad))
	assert.Equal(t, "\ufffd\ufffd Hello", streamAll(t, spm.NewContinuationDecoder(), bad))
	sd = spm.NewStreamDecoder()
	assert.Empty(t, sd.Add(243))
	assert.Equal(t, "\ufffd", sd.Flush(), "an unfinished character at the end")
}

func TestContinuationDecoder(t *testing.T) {
	tok := loadTestVocab(t, "llama-spm")
	prompt := tok.Encode("Once upon a", true, false)
	gen := tok.Encode(" time", false, false)[1:] // without the space prefix token
	require.Equal(t, "▁time", tok.Piece(gen[0]))
	assert.Equal(t, "time", streamAll(t, tok.NewStreamDecoder(), gen), "a new sequence drops the leading space")
	assert.Equal(t, " time", streamAll(t, tok.NewContinuationDecoder(), gen))
	assert.Equal(t, "<s> Once upon a time", tok.Decode(append(prompt, gen...)))

	// Control and unknown tokens are hidden, as llama.cpp prints
	// generated text.
	withControl := append([]int32{2, 0}, gen...)
	assert.Equal(t, " time", streamAll(t, tok.NewContinuationDecoder(), withControl))
	assert.Equal(t, "</s><unk> time", streamAll(t, tok.NewStreamDecoder(), withControl))
	chat := chatVocab(t, "gpt-2", nil)
	assert.Equal(t, "hello<tool>", streamAll(t, chat.NewContinuationDecoder(), []int32{260, 259, 263, 261}))
}

func TestStreamDecoderHoldsCleanup(t *testing.T) {
	tok := loadTestVocab(t, "gpt-2")
	ids := tok.Encode("Hi , there", false, false)
	sd := tok.NewStreamDecoder()
	var got []string
	for _, id := range ids {
		got = append(got, sd.Add(id))
	}
	got = append(got, sd.Flush())
	assert.Equal(t, "Hi, there", strings.Join(got, ""))
	assert.Equal(t, "Hi", got[0], "text before the space is final")
}

func TestTokenBytes(t *testing.T) {
	spm := loadTestVocab(t, "llama-spm")
	gpt2 := loadTestVocab(t, "gpt-2")
	llama := gpt2.Encode("🦙", false, false)
	tests := []struct {
		name string
		tok  *Tokenizer
		id   int32
		want string
	}{
		{"SentencePiece word keeps its space", spm, 15043, " Hello"},
		{"byte token", spm, 243, "\xf0"},
		{"control token as its text", spm, 2, "</s>"},
		{"outside the vocabulary", spm, -1, ""},
		{"byte-level BPE piece of a split character", gpt2, llama[0], "🦙"[:len(gpt2.Decode(llama[:1]))]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.tok.TokenBytes(tt.id))
		})
	}
	// The bytes of a sequence are the concatenation of its tokens' bytes.
	ids := spm.Encode("Hello world", false, false)
	var all string
	for _, id := range ids {
		all += spm.TokenBytes(id)
	}
	assert.Equal(t, " Hello world", all)
}
