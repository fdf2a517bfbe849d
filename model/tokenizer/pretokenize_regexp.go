package tokenizer

import (
	"fmt"
	"strings"

	"github.com/dlclark/regexp2"
)

// regexpStep runs one pre-tokenizer expression with a backtracking regex
// engine, reproducing llama.cpp's general path (std::regex / std::wregex):
// Go's regexp has no look-ahead, which several expressions use ("(?!\S)").
//
// When the expression uses \p{N}, \p{L} or \p{P}, llama.cpp matches a
// "collapsed" text instead of the real one: ASCII stays, non-ASCII white
// space becomes \v, and every other non-ASCII code point becomes one
// stand-in for its class (0xD1 number, 0xD2 letter, 0xD3 punctuation,
// 0xD0 anything else); each \p{X} becomes a class of its stand-in plus the
// ASCII members of X. Otherwise it matches the code points themselves,
// with non-ASCII white space as \v.
type regexpStep struct {
	re        *regexp2.Regexp
	collapsed bool
}

// Stand-ins of the collapsed text.
const (
	collapsedOther  = 0xD0
	collapsedNumber = 0xD1
	collapsedLetter = 0xD2
	collapsedPunct  = 0xD3
)

// collapsedClasses is what each \p{X} becomes: its stand-in and its ASCII
// members.
var collapsedClasses = map[string]string{
	`\p{N}`: `\u00D1` + `0-9`,
	`\p{L}`: `\u00D2` + `A-Za-z`,
	`\p{P}`: `\u00D3` + `!-#%-*,-/:-;?-@\[-\]_\{\}`,
}

// RegexpError reports a pre-tokenizer expression that the regex engine
// rejects.
type RegexpError struct {
	Expr string
	Err  error
}

// Error names the expression and the engine's complaint.
func (e *RegexpError) Error() string {
	return fmt.Sprintf("tokenizer: pre-tokenizer expression %q: %v", e.Expr, e.Err)
}

// Unwrap returns the engine's error.
func (e *RegexpError) Unwrap() error { return e.Err }

// compileRegexpStep translates expr as llama.cpp does and compiles it.
func compileRegexpStep(expr string) (*regexpStep, error) {
	collapsed := false
	for cls := range collapsedClasses {
		if strings.Contains(expr, cls) {
			collapsed = true
		}
	}
	pattern := expr
	if collapsed {
		var b strings.Builder
		inside := false
		for i := 0; i < len(expr); i++ {
			c := expr[i]
			switch {
			case c == '[' && (i == 0 || expr[i-1] != '\\'):
				inside = true
			case inside && c == ']' && expr[i-1] != '\\':
				inside = false
			case c == '\\' && i+4 < len(expr) && expr[i+1] == 'p' && expr[i+2] == '{' && expr[i+4] == '}':
				if cls, ok := collapsedClasses[expr[i:i+5]]; ok {
					if inside {
						b.WriteString(cls)
					} else {
						b.WriteString("[" + cls + "]")
					}
					i += 4
					continue
				}
			}
			b.WriteByte(c)
		}
		pattern = b.String()
	}
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		return nil, &RegexpError{Expr: expr, Err: err}
	}
	return &regexpStep{re: re, collapsed: collapsed}, nil
}

// text returns the code points the expression sees.
func (s *regexpStep) text(st *splitState, start, end int) []rune {
	rs := make([]rune, end-start)
	for i := range rs {
		r, f := st.cpts[start+i], st.flags[start+i]
		switch {
		case r < 0x80:
		case f&cpWhitespace != 0:
			r = '\v'
		case !s.collapsed:
			if f&cpUndefined != 0 {
				r = 0xFFFD // an invalid byte: no class of its own
			}
		case f&cpNumber != 0:
			r = collapsedNumber
		case f&cpLetter != 0:
			r = collapsedLetter
		case f&cpPunctuation != 0:
			r = collapsedPunct
		default:
			r = collapsedOther
		}
		rs[i] = r
	}
	return rs
}

func (s *regexpStep) split(st *splitState, start, end int, out []int32) []int32 {
	w := pieceWriter{out: out, prev: start}
	rs := s.text(st, start, end)
	m, err := s.re.FindRunesMatch(rs)
	for err == nil && m != nil {
		w.match(start+m.Index, start+m.Index+m.Length)
		m, err = s.re.FindNextMatch(m)
	}
	// err is only a match timeout, which is not set.
	w.add(end)
	return w.out
}
