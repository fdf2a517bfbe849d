package tokenizer

import (
	"strings"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// splitTexts are the inputs the scanners are compared on: the llama.cpp
// vector inputs, edge cases, and War and Peace.
func splitTexts(t *testing.T) []string {
	var texts []string
	for _, c := range readVectors(t, fixture.Shared(t, "vocab/ggml-vocab-gpt-2.gguf.inp")) {
		texts = append(texts, c.text)
	}
	texts = append(texts,
		"a", " ", "'", "''s", "'S 'T 'Re 'vE 'LL 'd 'x", "it's 'tis y'all 'll",
		"  \t\n x \r\n\r\n y  ", "x  ", "x\u00a0\u00a0y", "\u3000\u3001 \u3002", "1234567 ١٢٣ ½⅔",
		"$+<=>^~|` £€ ¥", "???!!! ... ,,,", "\n\n\n", "a\rb\r\n", "\u2028x\u2029",
		"Ὗὠ ᾳ ι Ω K Å ℭ", "ＡＢＣ！？（）", "😀 🦙🦙 \u200d", "\x00\x01\x7f",
		"gemäß ĳ ǅungla", "🚀\n\n   🚀", "x\u0300\u0301y", "ﬁ ﬀ", "한국어 日本語 中文",
	)
	texts = append(texts, warAndPeace(t)[:300000])
	return texts
}

// TestScannersMatchRegexp checks every hand-written scanner against the
// regexp2 translation of its expression.
func TestScannersMatchRegexp(t *testing.T) {
	texts := splitTexts(t)
	for expr, sc := range scanners {
		t.Run(strings.ToValidUTF8(expr[:min(len(expr), 40)], "?"), func(t *testing.T) {
			re, err := compileRegexpStep(expr)
			require.NoError(t, err)
			var st splitState
			for i, text := range texts {
				st.load(text)
				a := append([]int32(nil), st.run([]splitStep{sc})...)
				b := append([]int32(nil), st.run([]splitStep{re})...)
				if !assert.Equal(t, pieces(&st, text, b), pieces(&st, text, a), "text %d", i) {
					return
				}
			}
		})
	}
}

// TestPreTokenizersMatchRegexp runs every row of the table with scanners
// and with regexp2 only.
func TestPreTokenizersMatchRegexp(t *testing.T) {
	texts := splitTexts(t)
	for _, p := range preTokenizers {
		t.Run(p.names[0], func(t *testing.T) {
			fast, err := p.compile()
			require.NoError(t, err)
			slow := make([]splitStep, len(p.exprs))
			for i, e := range p.exprs {
				slow[i], err = compileRegexpStep(e)
				require.NoError(t, err)
			}
			var st splitState
			for i, text := range texts {
				st.load(text)
				a := append([]int32(nil), st.run(fast)...)
				b := append([]int32(nil), st.run(slow)...)
				if !assert.Equal(t, pieces(&st, text, b), pieces(&st, text, a), "text %d", i) {
					return
				}
			}
		})
	}
}

func pieces(st *splitState, text string, ends []int32) []string {
	var out []string
	start := 0
	for _, e := range ends {
		out = append(out, text[st.offs[start]:st.offs[e]])
		start = int(e)
	}
	return out
}

func TestSplitExamples(t *testing.T) {
	tests := []struct {
		pre  string
		text string
		want []string
	}{
		{"gpt-2", "Hello world", []string{"Hello", " world"}},
		{"gpt-2", "I've  got 12345 $$ ", []string{"I", "'ve", " ", " got", " 12345", " $$", " "}},
		{"llama-bpe", "I'VE 12345\n\n  x", []string{"I", "'VE", " ", "123", "45", "\n\n", " ", " x"}},
		{"qwen2", "a 123", []string{"a", " ", "1", "2", "3"}},
		{"starcoder", "x 42", []string{"x", " ", "4", "2"}},
		{"default", "a+b=1234", []string{"a", "+", "b", "=", "123", "4"}},
		{"deepseek-llm", "Hello, 世界 42  ", []string{"Hello", ",", " ", "世界", " ", "42", "  "}},
		{"deepseek-coder", "x=1\n", []string{"x", "=", "1", "\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.pre+" "+tt.text, func(t *testing.T) {
			p, err := lookupPre(tt.pre)
			require.NoError(t, err)
			steps, err := p.compile()
			require.NoError(t, err)
			var st splitState
			st.load(tt.text)
			assert.Equal(t, tt.want, pieces(&st, tt.text, st.run(steps)))
		})
	}
}

func TestInvalidUTF8Split(t *testing.T) {
	p, err := lookupPre("llama-bpe")
	require.NoError(t, err)
	steps, err := p.compile()
	require.NoError(t, err)
	var st splitState
	text := "ab\xff\xfecd \xe2\x96"
	st.load(text)
	got := pieces(&st, text, st.run(steps))
	assert.Equal(t, text, strings.Join(got, ""))
}

// FuzzScanners compares, on arbitrary text, the scanners of the
// expressions that llama.cpp runs through std::regex with the regexp2
// translation of the same expression. (llama.cpp runs exprGPT2 and
// exprLlama3 through its own scanners, which the scanners here follow.)
func FuzzScanners(f *testing.F) {
	for _, s := range []string{"Hello, world! 123 4567", "  \t\n\r\n x'S 'll", "\u00a0\u3000a１２３", "ＡＢＣ！？（）中文 한국어", "a\xffb"} {
		f.Add(s)
	}
	type pair struct {
		expr      string
		fast, ref splitStep
	}
	var pairs []pair
	for expr, sc := range scanners {
		if expr == exprGPT2 || expr == exprLlama3 {
			continue
		}
		re, err := compileRegexpStep(expr)
		if err != nil {
			f.Fatal(err)
		}
		pairs = append(pairs, pair{expr, sc, re})
	}
	f.Fuzz(func(t *testing.T, text string) {
		var st splitState
		st.load(text)
		for _, p := range pairs {
			a := append([]int32(nil), st.run([]splitStep{p.fast})...)
			b := append([]int32(nil), st.run([]splitStep{p.ref})...)
			if got, want := pieces(&st, text, a), pieces(&st, text, b); !equalStrings(got, want) {
				t.Fatalf("%q on %q: scanner %q, regexp2 %q", p.expr, text, got, want)
			}
		}
	})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
