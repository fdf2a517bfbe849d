package grammar

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// matches reports whether text is a complete sentence of g.
func matches(g *Grammar, text string) bool {
	m := g.NewMatcher()
	return m.AcceptString(text) == nil && m.Accepting()
}

func load(t testing.TB, name string) *Grammar {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	g, err := Parse(string(b))
	require.NoError(t, err)
	return g
}

// The example grammars of llama.cpp's grammars/ folder, with sentences
// they do and do not derive (worked out from the grammar texts by hand;
// the arithmetic and quantifier cases are those of llama.cpp's
// tests/test-grammar-integration.cpp).
func TestExampleGrammars(t *testing.T) {
	tests := []struct {
		file     string
		accept   []string
		reject   []string
		prefixes []string // not complete, but may continue
	}{
		{"json.gbnf",
			[]string{`{}`, `{"a":1}`, `{ "a": [1, -2, {"b": true}], "c": "x\"y\u00e9"}`, `{"é✅":"\u12aF"}`, "{\n\t\"k\": false }"},
			[]string{`[]`, `1`, `{"a":}`, `{"a":1,}`, `{'a':1}`, `{"a":1.5}`, `{"a":null}`, `{"a":"\x"}`, `{"a":"\u12g4"}`, `{} `},
			[]string{`{"a":`, `{"a":[1,`, `{"a":"\u12`}},
		{"arithmetic.gbnf",
			[]string{"1+2=3\n", "a = b\n", "(x1 +y_2) *3 = z\nq=1\n", "(  a)=b\n"},
			[]string{"1+2=3", "=3\n", "1++2=3\n", "A=1\n", "1=\n"},
			[]string{"(a+", "x = y\nz"}},
		{"list.gbnf",
			[]string{"- a\n", "- milk\n- eggs and ham\n", "- \u00e9t\u00e9\n"},
			[]string{"", "- \n", "-a\n", "- a", "- a\rb\n", "- a\u2028b\n", "- a\u0085\n"},
			[]string{"- a", "- a\n- "}},
		{"chess.gbnf",
			[]string{"1. e4 e5\n2. Nf3 Nc6\n", "1. d4 d5\n2. c4 dxc4\n3. e3 b5\n10. O-O-O Qxd1+\n", "1. e4 e5\n2. e8=Q Kxe8#\n"},
			[]string{"1. e4 e5\n", "1. e4\n2. e5 e6\n", "1. e9 e5\n2. a3 a6\n", "1. e4 e5\n0. a3 a6\n", "1. e4 e5\n100. a3 a6\n"},
			[]string{"1. e4 e5\n2. Nf3"}},
		{"japanese.gbnf",
			[]string{"こんにちは", "カタカナ 漢字\n、。", "日本語"},
			[]string{"", "hello", "こんにちは ", "こん  にちは", "日本語!"},
			[]string{"こんにちは "}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			g := load(t, tt.file)
			for _, s := range tt.accept {
				assert.True(t, matches(g, s), "should accept %q", s)
			}
			for _, s := range tt.reject {
				assert.False(t, matches(g, s), "should reject %q", s)
			}
			for _, s := range tt.prefixes {
				m := g.NewMatcher()
				assert.NoError(t, m.AcceptString(s), "prefix %q", s)
				assert.False(t, m.Accepting(), "prefix %q is not complete", s)
			}
		})
	}
}

func TestQuantifiers(t *testing.T) {
	tests := []struct {
		name, src      string
		accept, reject []string
	}{
		{"star", `root ::= "a"*`, []string{"", "a", "aaaaa"}, []string{"b", "ab", "ba"}},
		{"plus", `root ::= "a"+`, []string{"a", "aaaa"}, []string{"", "b", "aab"}},
		{"optional", `root ::= "a"?`, []string{"", "a"}, []string{"b", "aa"}},
		{"mixed", "root ::= cons+ vowel* cons? (vowel cons)*\nvowel ::= [aeiouy]\ncons ::= [bcdfghjklmnpqrstvwxyz]",
			[]string{"yes", "no", "noyes", "crwth", "four", "bryyyy"}, []string{"yess", "yesno", "forty", "catyyy"}},
		{"exact", `root ::= [ab]{4}`, []string{"aaaa", "bbbb", "abab"}, []string{"a", "b", "aaaaa"}},
		{"min", `root ::= [ab]{4,}`, []string{"aaaa", "aaaaab", "bbbb", "ababab"}, []string{"", "aba"}},
		{"max", `root ::= [ab]{0,4}`, []string{"", "a", "aa", "aaa", "aaab"}, []string{"aaaaa"}},
		{"min max", `root ::= ("0x" [A-F0-9]{2} " "?){3,5}`,
			[]string{"0xFF 0x12 0xAB", "0xFF 0x12 0xAB 0x00 0x00"}, []string{"", "0xFF", "0xFF 0x12", "0xFF 0x12 0xAB 0x00 0x00 0x00"}},
		{"literal repeated whole", `root ::= "ab"{2}`, []string{"abab"}, []string{"ab", "aabb", "ababab"}},
		{"nullable star", `root ::= ( [x]* )*`, []string{"", "x", "xx"}, []string{"y", "yy"}},
		{"any", `root ::= ... "abc" ...`, []string{"abcabcabc", "aaaabcccc", "🔵🟠✅abc❌🟠🔵"},
			[]string{"aaabcccc", "aaaaabcccc", "aaaabccc", "🔵🟠✅❌abc❌✅🟠🔵"}},
		{"simple expr", "root ::= expr\nexpr ::= term (\"+\" term)*\nterm ::= number\nnumber ::= [0-9]+",
			[]string{"42", "1+2+3+4+5", "123+456"}, []string{"+", "/ 3", "1+2+3+4+5+", "12a45"}},
		{"escapes", `root ::= "\x41\u00e9\U0001F600\t\"\\" [\x30-\x39\]]`, []string{"Aé😀\t\"\\5", "Aé😀\t\"\\]"}, []string{"Aé😀\t\"\\a"}},
		{"negated class", `root ::= [^a-c\n]+`, []string{"xyz", "é"}, []string{"a", "xbz", "x\n"}},
		{"continued alternation", "root ::= \"a\" |\n  \"b\"\n", []string{"a", "b"}, []string{"ab"}},
		{"medium", `root ::= expression
expression ::= term ws (("+"|"-") ws term)*
term ::= factor ws (("*"|"/") ws factor)*
factor ::= number | variable | "(" expression ")" | function-call
number ::= [0-9]+
variable ::= [a-zA-Z_][a-zA-Z0-9_]*
function-call ::= variable ws "(" (expression ("," ws expression)*)? ")"
ws ::= [ \t\n\r]?`,
			[]string{"42", "1*2*3*4*5", "x+10", "(a+b)*(c-d)", "func()", "func(x,y+2)", "f(g(x), h(y, z))", "a * (b + c) - d / e"},
			[]string{"+", "/ 3x", "x + + y", "a * / b", "func(,)", "func(x y)", "(a + b", "x + y)", "42 +", "f(g(x), h(y, z)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Parse(tt.src)
			require.NoError(t, err)
			for _, s := range tt.accept {
				assert.True(t, matches(g, s), "should accept %q", s)
			}
			for _, s := range tt.reject {
				assert.False(t, matches(g, s), "should reject %q", s)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src string
		line, col int
		msg       string
	}{
		{"no root", "rot ::= \"a\"", 1, 12, "no root rule"},
		{"undefined", "root ::= expr\nexpr ::= term\nterm ::= numero\nnumber ::= [0-9]+", 3, 10, `undefined rule "numero"`},
		{"missing ::=", "root ::= a\na = \"x\"", 2, 3, "expecting ::="},
		{"unterminated string", "root ::= \"abc", 1, 10, "unterminated string"},
		{"unterminated class", "root ::= [a-z", 1, 10, "unterminated character class"},
		{"unclosed group", "root ::= (\"a\" | \"b\"", 1, 20, "expecting ')'"},
		{"bad escape", `root ::= "\q"`, 1, 11, `unknown escape \q`},
		{"bad hex", `root ::= "\x4"`, 1, 11, "hex digits"},
		{"star first", `root ::= * "a"`, 1, 10, "expecting an item before"},
		{"repetition too big", `root ::= "a"{1,2001}`, 1, 16, "above the limit"},
		{"repetition reversed", `root ::= "a"{3,2}`, 1, 13, "maximum below its minimum"},
		{"duplicate", "root ::= \"a\"\nroot ::= \"b\"", 2, 1, "defined twice"},
		{"junk after rule", "root ::= \"a\" )", 1, 14, "expecting newline"},
		{"newline outside parens", "root ::= \"a\"\n  \"b\"", 2, 3, "expecting a rule name"},
		{"left recursion", `root ::= "a" | root "a"`, 1, 1, "left-recursive"},
		{"indirect left recursion", "root ::= asdf\nasdf ::= \"a\" | foo \"b\"\nfoo ::= \"c\" | asdf \"d\" | \"e\"", 2, 1, "left-recursive"},
		{"left recursion through empty", "root ::= asdf\nasdf ::= \"a\" | foo \"b\"\nfoo ::= \"c\" | empty asdf \"d\" | \"e\"\nempty ::= \"blah\" | ", 2, 1, "left-recursive"},
		{"reversed range", `root ::= [z-a]`, 1, 10, "reversed"},
		{"invalid utf-8", "root ::= \"\xff\"", 1, 11, "invalid UTF-8"},
		{"groups too deep", "root ::= " + strings.Repeat("(", MaxNesting+1) + `"a"` + strings.Repeat(")", MaxNesting+1), 1, 10 + MaxNesting, "nested more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.src)
			var pe *ParseError
			require.True(t, errors.As(err, &pe), "want a *ParseError, got %v", err)
			assert.Contains(t, pe.Msg, tt.msg)
			assert.Equal(t, tt.line, pe.Line, "line of %v", err)
			assert.Equal(t, tt.col, pe.Column, "column of %v", err)
		})
	}
}

func TestBounds(t *testing.T) {
	_, err := Parse("root ::= \"" + strings.Repeat("a", MaxGrammarBytes) + "\"")
	var pe *ParseError
	require.True(t, errors.As(err, &pe))

	// llama.cpp's "hang" grammar: nested bounded repetitions of a nullable
	// item compile and match without blowing up.
	g, err := Parse(`root ::= (((((([^x]*){0,99}){0,99}){0,99}){0,99}){0,99}){0,99}`)
	if err == nil {
		m := g.NewMatcher()
		_ = m.AcceptString("abc")
	} else {
		require.True(t, errors.As(err, &pe), "%v", err)
	}

	// Nesting deeper than MaxDepth is rejected, not followed forever.
	g = MustParse(`root ::= "[" root "]" | "x"`)
	m := g.NewMatcher()
	err = m.AcceptString(strings.Repeat("[", MaxDepth+10))
	assert.Error(t, err)
}
