package tokenizer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// noVocab names the llama.cpp test vectors whose vocabulary GGUF is not in
// the shared test data (too large to ship), with the reason.
var noVocab = map[string]string{
	"chameleon":        "ggml-vocab-chameleon.gguf is not in the shared test data (and the chameleon pre-tokenizer is not implemented)",
	"command-r":        "ggml-vocab-command-r.gguf is not in the shared test data (>= 4 MiB)",
	"deepseek-r1-qwen": "ggml-vocab-deepseek-r1-qwen.gguf is not in the shared test data",
	"qwen2":            "ggml-vocab-qwen2.gguf is not in the shared test data (>= 4 MiB)",
	"roberta-bpe":      "ggml-vocab-roberta-bpe.gguf is not in the shared test data",
}

// checkVectors runs every case of a vector file through tok with
// add_special=false, parse_special=false, as llama.cpp's test-tokenizer-0.
func checkVectors(t *testing.T, tok *Tokenizer, inp string) {
	cases := readVectors(t, inp)
	require.Len(t, cases, 46)
	require.Empty(t, cases[2].text, "case 2 is the empty string")
	passed := 0
	for i, c := range cases {
		got := tok.Encode(c.text, false, false)
		if assert.Equal(t, c.ids, nilIfEmpty(got), "case %d %q", i, c.text) {
			passed++
		}
	}
	t.Logf("%d/%d cases match llama.cpp", passed, len(cases))
}

func nilIfEmpty(s []int32) []int32 {
	if len(s) == 0 {
		return nil
	}
	return s
}

// TestVectors checks every vocabulary of the shared test data that has
// llama.cpp test vectors.
func TestVectors(t *testing.T) {
	for _, name := range vectorNames(t) {
		t.Run(name, func(t *testing.T) {
			inp := fixture.Shared(t, "vocab/ggml-vocab-"+name+".gguf.inp")
			if name == "llama-bpe" {
				checkVectors(t, llama3Tokenizer(t), inp)
				return
			}
			path := filepath.Join(fixture.Shared(t, "vocab"), "ggml-vocab-"+name+".gguf")
			if _, err := os.Stat(path); err != nil {
				if why, ok := noVocab[name]; ok {
					t.Skip(why)
				}
				t.Fatalf("vectors without a vocabulary and no known reason: %v", err)
			}
			f, err := gguf.Open(path)
			require.NoError(t, err)
			defer f.Close()
			tok, err := New(&f.Metadata)
			if errors.Is(err, ErrUnsupported) {
				t.Skipf("not implemented: %v", err)
			}
			require.NoError(t, err)
			checkVectors(t, tok, inp)
		})
	}
}

// TestVectorsWithoutVocab makes the vectors that cannot run visible.
func TestVectorsWithoutVocab(t *testing.T) {
	for _, name := range vectorNames(t) {
		why, ok := noVocab[name]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(fixture.Shared(t, "vocab"), "ggml-vocab-"+name+".gguf")
			if _, err := os.Stat(path); err == nil {
				t.Fatalf("%s exists now: remove it from noVocab so TestVectors runs it", path)
			}
			t.Skip(why)
		})
	}
}

// TestUnsupportedModels checks the typed errors for models that are not
// implemented.
func TestUnsupportedModels(t *testing.T) {
	tests := []struct {
		name  string
		model string
		pre   string
	}{
		{"wordpiece", "bert", ""},
		{"unigram", "t5", ""},
		{"rwkv", "rwkv", ""},
		{"unknown model", "sentencepiece-v9", ""},
		{"unknown pre", "gpt2", "no-such-pre"},
		{"tekken", "gpt2", "tekken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var md gguf.Metadata
			require.NoError(t, md.SetAny(keyModel, tt.model))
			require.NoError(t, md.SetAny(keyTokens, []string{"a", "b"}))
			require.NoError(t, md.SetAny(keyMerges, []string{"a b"}))
			if tt.pre != "" {
				require.NoError(t, md.SetAny(keyPre, tt.pre))
			}
			_, err := New(&md)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrUnsupported)
			var ue *UnsupportedError
			require.ErrorAs(t, err, &ue)
			t.Log(err)
		})
	}

	t.Run("bert-bge file", func(t *testing.T) {
		f, err := gguf.Open(vocabPath(t, "bert-bge"))
		require.NoError(t, err)
		defer f.Close()
		_, err = New(&f.Metadata)
		assert.ErrorIs(t, err, ErrUnsupported)
	})
}

// TestMetadataErrors checks malformed tokenizer metadata.
func TestMetadataErrors(t *testing.T) {
	tests := []struct {
		name string
		kvs  map[string]any
		key  string
	}{
		{"no model", map[string]any{keyTokens: []string{"a"}}, keyModel},
		{"no tokens", map[string]any{keyModel: "llama"}, keyTokens},
		{"tokens not strings", map[string]any{keyModel: "llama", keyTokens: []int32{1}}, keyTokens},
		{"empty vocabulary", map[string]any{keyModel: "llama", keyTokens: []string{}}, keyTokens},
		{"short scores", map[string]any{keyModel: "llama", keyTokens: []string{"a", "b"}, keyScores: []float32{0}}, keyScores},
		{"short types", map[string]any{keyModel: "llama", keyTokens: []string{"a", "b"}, keyTokenType: []int32{1}}, keyTokenType},
		{"no merges", map[string]any{keyModel: "gpt2", keyTokens: []string{"a"}}, keyMerges},
		{"bad add_bos", map[string]any{keyModel: "llama", keyTokens: []string{"a"}, keyAddBOS: "yes"}, keyAddBOS},
		{"bad bos id", map[string]any{keyModel: "llama", keyTokens: []string{"a"}, "tokenizer.ggml.bos_token_id": "1"}, "tokenizer.ggml.bos_token_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var md gguf.Metadata
			for k, v := range tt.kvs {
				require.NoError(t, md.SetAny(k, v))
			}
			_, err := New(&md)
			var me *MetadataError
			require.ErrorAs(t, err, &me)
			assert.Equal(t, tt.key, me.Key)
			assert.NotErrorIs(t, err, ErrUnsupported)
		})
	}
}

// TestDefaults checks the BOS/EOS flags and ids of the test vocabularies
// against llama.cpp's loader.
func TestDefaults(t *testing.T) {
	tests := []struct {
		name           string
		bos, eos       int32
		addBOS, addEOS bool
	}{
		{"llama-spm", 1, 2, true, false},
		{"phi-3", 1, 32000, true, false},
		{"gpt-2", 50256, 50256, false, false},
		{"deepseek-llm", 100000, 100001, true, false},
		{"falcon", 11, 11, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := loadTestVocab(t, tt.name)
			assert.Equal(t, tt.bos, tok.BOS())
			assert.Equal(t, tt.eos, tok.EOS())
			assert.Equal(t, tt.addBOS, tok.AddBOS())
			assert.Equal(t, tt.addEOS, tok.AddEOS())
		})
	}
	t.Run("llama-bpe", func(t *testing.T) {
		tok := llama3Tokenizer(t)
		assert.True(t, tok.AddBOS(), "llama-bpe adds BOS by default")
		assert.Equal(t, []int32{128000, 9906}, tok.Encode("Hello", true, false))
	})
}

func TestEncodeAddSpecial(t *testing.T) {
	tok := loadTestVocab(t, "llama-spm")
	assert.Equal(t, []int32{1}, tok.Encode("", true, false), "SPM: BOS alone for empty text")
	assert.Empty(t, tok.Encode("", false, false))
	assert.Equal(t, []int32{1, 15043, 3186}, tok.Encode("Hello world", true, false))
}

func TestPieceAndTokenID(t *testing.T) {
	tok := loadTestVocab(t, "llama-spm")
	assert.Equal(t, 32000, tok.VocabSize())
	assert.Equal(t, "▁Hello", tok.Piece(15043))
	assert.Equal(t, "<0x0A>", tok.Piece(13))
	assert.Equal(t, "", tok.Piece(-1))
	assert.Equal(t, "", tok.Piece(32000))
	id, ok := tok.TokenID("▁world")
	assert.True(t, ok)
	assert.Equal(t, int32(3186), id)
	_, ok = tok.TokenID("no such piece")
	assert.False(t, ok)
	assert.Equal(t, TypeByte, tok.Type(13))
	assert.Equal(t, TypeControl, tok.Type(1))
	assert.Equal(t, TypeUnknown, tok.Type(0))
	assert.Equal(t, TypeNormal, tok.Type(15043))
	assert.Equal(t, "user-defined", TypeUserDefined.String())
	assert.Equal(t, "token_type(9)", TokenType(9).String())
}

// TestSPMChunking checks that merging piece by piece, cut where no token
// joins two symbols, gives the same tokens as merging the whole text at
// once.
func TestSPMChunking(t *testing.T) {
	tok := loadTestVocab(t, "llama-spm")
	s := tok.algo.(*spm)
	whole := &spm{v: s.v, byteIDs: s.byteIDs, whole: true}
	var texts []string
	for _, c := range readVectors(t, fixture.Shared(t, "vocab/ggml-vocab-llama-spm.gguf.inp")) {
		texts = append(texts, c.text)
	}
	book, err := os.ReadFile(fixture.Shared(t, "text/war-and-peace.txt"))
	require.NoError(t, err)
	texts = append(texts, string(book[:200000]))
	for i, text := range texts {
		a := s.newSession().tokenize(text, true, nil)
		b := whole.newSession().tokenize(text, true, nil)
		require.Equal(t, b, a, "text %d", i)
	}
}

func TestTokenIDsOutOfRange(t *testing.T) {
	tok := loadTestVocab(t, "gpt-2")
	assert.Equal(t, TypeUndefined, tok.Type(1<<30))
	assert.False(t, tok.IsControl(-5))
	assert.False(t, tok.IsEOG(-1))
	assert.Equal(t, "ab", tok.Decode([]int32{64, -1, 1 << 30, 65}))
	assert.Equal(t, strconv.Itoa(50257), strconv.Itoa(tok.VocabSize()))
}

// TestConcurrentEncode shares one Tokenizer between goroutines; each must
// get the tokens a lone call gets.
func TestConcurrentEncode(t *testing.T) {
	for _, name := range []string{"llama-spm", "gpt-2"} {
		t.Run(name, func(t *testing.T) {
			tok := loadTestVocab(t, name)
			cases := readVectors(t, fixture.Shared(t, "vocab/ggml-vocab-"+name+".gguf.inp"))
			errs := make(chan error, 8)
			for g := 0; g < 8; g++ {
				go func() {
					for r := 0; r < 20; r++ {
						for i, c := range cases {
							got := nilIfEmpty(tok.Encode(c.text, false, false))
							if !assert.ObjectsAreEqual(c.ids, got) {
								errs <- fmt.Errorf("goroutine %d case %d: got %v", g, i, got)
								return
							}
						}
					}
					errs <- nil
				}()
			}
			for g := 0; g < 8; g++ {
				require.NoError(t, <-errs)
			}
		})
	}
}
