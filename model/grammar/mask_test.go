package grammar

import (
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model/tokenizer"
)

var (
	vocabMu    sync.Mutex
	vocabCache = map[string][]string{}
)

// ggufTokens returns the token bytes of a shared vocabulary GGUF, "" for
// control, unknown and unused tokens (as model.NewGeneration prepares
// them).
func ggufTokens(tb testing.TB, rel string) []string {
	tb.Helper()
	vocabMu.Lock()
	defer vocabMu.Unlock()
	if v, ok := vocabCache[rel]; ok {
		return v
	}
	f, err := gguf.Open(fixture.Shared(tb, rel))
	require.NoError(tb, err)
	defer f.Close()
	tok, err := tokenizer.New(&f.Metadata)
	require.NoError(tb, err)
	out := make([]string, tok.VocabSize())
	for id := range out {
		switch tok.Type(int32(id)) {
		case tokenizer.TypeNormal, tokenizer.TypeUserDefined, tokenizer.TypeByte:
			out[id] = tok.TokenBytes(int32(id))
		}
	}
	vocabCache[rel] = out
	return out
}

// byteDecoder inverts GPT-2's bytes_to_unicode table of byte-level BPE.
func byteDecoder() map[rune]byte {
	d := map[rune]byte{}
	n := 0
	for b := range 256 {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF {
			d[rune(b)] = byte(b)
		} else {
			d[rune(256+n)] = byte(b)
			n++
		}
	}
	return d
}

// qwenSizedTokens builds a 151936-token byte-level BPE vocabulary, the size
// of Qwen2's: no Qwen2 vocabulary is in the shared test data (its GGUF is
// over 4 MiB), so it is Llama 3's 128000 tokens (llama3.2-bpe/encoder.json)
// followed by the DeepSeek LLM tokens not among them, then empty (special)
// slots up to 151936.
func qwenSizedTokens(tb testing.TB) []string {
	tb.Helper()
	const name = "qwen-sized"
	vocabMu.Lock()
	if v, ok := vocabCache[name]; ok {
		vocabMu.Unlock()
		return v
	}
	vocabMu.Unlock()
	raw, err := os.ReadFile(fixture.Shared(tb, "vocab/llama3.2-bpe/encoder.json"))
	require.NoError(tb, err)
	var enc map[string]int
	require.NoError(tb, json.Unmarshal(raw, &enc))
	dec := byteDecoder()
	out := make([]string, len(enc))
	for s, id := range enc {
		b := make([]byte, 0, len(s))
		for _, r := range s {
			b = append(b, dec[r])
		}
		out[id] = string(b)
	}
	have := map[string]bool{}
	for _, s := range out {
		have[s] = true
	}
	for _, s := range ggufTokens(tb, "vocab/ggml-vocab-deepseek-llm.gguf") {
		if len(out) == 151936 {
			break
		}
		if s != "" && !have[s] {
			have[s] = true
			out = append(out, s)
		}
	}
	for len(out) < 151936 {
		out = append(out, "")
	}
	vocabMu.Lock()
	vocabCache[name] = out
	vocabMu.Unlock()
	return out
}

// bruteMask checks every token by advancing a copy of m byte by byte.
func bruteMask(m *Matcher, v *Vocab) []bool {
	out := make([]bool, v.Len())
	for id := range out {
		c := m.Clone()
		out[id] = c.AcceptToken(v, int32(id)) == nil
	}
	return out
}

func TestMaskMatchesBruteForce(t *testing.T) {
	toks := ggufTokens(t, "vocab/ggml-vocab-llama-spm.gguf")
	v := NewVocab(toks)
	json := load(t, "json.gbnf")
	jp := load(t, "japanese.gbnf")
	tests := []struct {
		name   string
		g      *Grammar
		prefix string
	}{
		{"json start", json, ""},
		{"json key", json, `{"`},
		{"json after key", json, `{"name"`},
		{"json value", json, `{"name": `},
		{"json in string", json, `{"name": "Jo`},
		{"json in escape", json, `{"name": "\u00`},
		{"json in number", json, `{"n": [-12`},
		{"json mid utf-8", json, "{\"k\": \"\xe2\x9c"},
		{"japanese start", jp, ""},
		{"japanese mid utf-8", jp, "こ\xe3\x82"},
		{"japanese after space", jp, "こ "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.g.NewMatcher()
			require.NoError(t, m.acceptBytes(tt.prefix))
			want := bruteMask(m, v)
			mask := m.Mask(v, nil)
			n := 0
			for id, ok := range want {
				if ok {
					n++
				}
				if !assert.Equal(t, ok, Allowed(mask, int32(id)), "token %d %q", id, toks[id]) {
					return
				}
			}
			assert.Positive(t, n)
			// a second call is served from the cache and agrees
			assert.Equal(t, mask, m.Mask(v, nil))
		})
	}
}

// Generating token by token, always picking an allowed token, gives a text
// the grammar accepts once the matcher says it is complete.
func TestMaskedWalk(t *testing.T) {
	toks := ggufTokens(t, "vocab/ggml-vocab-llama-spm.gguf")
	v := NewVocab(toks)
	g := load(t, "json.gbnf")
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		m := g.NewMatcher()
		text := ""
		for step := 0; step < 200 && !m.Accepting(); step++ {
			mask := m.Mask(v, nil)
			var allowed []int32
			for id := range v.Len() {
				if Allowed(mask, int32(id)) {
					allowed = append(allowed, int32(id))
				}
			}
			require.NotEmpty(t, allowed, "dead end after %q", text)
			// prefer short tokens so that documents close
			id := allowed[rng.IntN(len(allowed))]
			if step > 20 {
				for _, c := range allowed {
					if toks[c] == "}" || toks[c] == "]" || toks[c] == "\"" {
						id = c
					}
				}
			}
			require.NoError(t, m.AcceptToken(v, id))
			text += toks[id]
		}
		if m.Accepting() {
			assert.True(t, matches(g, text), "%q", text)
		}
	}
}

// benchVocabs are the vocabularies of the mask benchmarks.
func benchVocabs(b *testing.B) map[string]*Vocab {
	return map[string]*Vocab{
		"vocab=32000":  NewVocab(ggufTokens(b, "vocab/ggml-vocab-llama-spm.gguf")),
		"vocab=151936": NewVocab(qwenSizedTokens(b)),
	}
}

// BenchmarkMask measures one Mask call: cold on a state never seen (the
// grammar is compiled again each time; its cost is excluded), and warm on
// a state whose mask is cached.
func BenchmarkMask(b *testing.B) {
	src, err := os.ReadFile("testdata/json.gbnf")
	require.NoError(b, err)
	for _, name := range []string{"vocab=32000", "vocab=151936"} {
		v := benchVocabs(b)[name]
		for _, prefix := range []string{`{"name": "`, `{"n": [1, `} {
			b.Run(name+"/cold/"+prefix, func(b *testing.B) {
				var dst []uint64
				for b.Loop() {
					b.StopTimer()
					g := MustParse(string(src))
					m := g.NewMatcher()
					_ = m.AcceptString(prefix)
					b.StartTimer()
					dst = m.Mask(v, dst)
				}
			})
			b.Run(name+"/warm/"+prefix, func(b *testing.B) {
				g := MustParse(string(src))
				m := g.NewMatcher()
				_ = m.AcceptString(prefix)
				dst := m.Mask(v, nil)
				for b.Loop() {
					dst = m.Mask(v, dst)
				}
			})
		}
	}
}

// BenchmarkConstrainedStep measures the grammar's cost per generated token
// in a whole generation: Mask, then AcceptToken of a token drawn from the
// allowed ones, on a fresh grammar per document (so the cache warms up as
// it would in one request). It reports ns per step.
func BenchmarkConstrainedStep(b *testing.B) {
	src, err := os.ReadFile("testdata/json.gbnf")
	require.NoError(b, err)
	for _, name := range []string{"vocab=32000", "vocab=151936"} {
		v := benchVocabs(b)[name]
		b.Run(name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, 7))
			var dst []uint64
			allowed := make([]int32, 0, v.Len())
			var g *Grammar
			var m *Matcher
			steps := 0
			for b.Loop() {
				if m == nil || m.Accepting() || steps == 256 {
					g = MustParse(string(src))
					m = g.NewMatcher()
					steps = 0
				}
				dst = m.Mask(v, dst)
				allowed = allowed[:0]
				for w, word := range dst {
					for word != 0 {
						allowed = append(allowed, int32(w*64+bits.TrailingZeros64(word)))
						word &= word - 1
					}
				}
				if len(allowed) == 0 {
					m = nil
					continue
				}
				_ = m.AcceptToken(v, allowed[rng.IntN(len(allowed))])
				steps++
			}
		})
	}
}
