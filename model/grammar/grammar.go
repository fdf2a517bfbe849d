// Package grammar constrains generated text to a formal grammar.
//
// Grammars are written in GBNF, the notation of llama.cpp's grammars/README.md:
// rules `name ::= alternatives`, alternation `|`, sequences, grouping `()`,
// the repetitions `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, string literals with
// the escapes \n \t \r \" \\ \xHH \uHHHH \UHHHHHHHH, character classes
// `[a-z]` (negated by `[^...]`), `.` for any character, `#` comments, and
// `root` as the start rule. Parse compiles a grammar; FromJSONSchema turns a
// JSON schema into one.
//
// A Matcher follows one sequence through a Grammar: a set of pushdown stacks,
// advanced by code points (AcceptRune) or by whole tokens (AcceptToken), and
// Accepting once the text so far is a complete sentence. Mask lists the
// tokens of a Vocab that may come next: a trie over the vocabulary's token
// bytes is walked once against the state, pruned as soon as the state
// rejects a prefix. Tokens may end inside a UTF-8 sequence; the partial code
// point is carried to the next token, as llama.cpp does.
//
// # Bounds
//
// Nothing a grammar or a generated text does can make the package hang or
// grow without bound: grammars are at most MaxGrammarBytes long with at
// most MaxRules rules (repetitions expanded), a repetition count is at most
// MaxRepetition, a stack is at most MaxDepth deep (deeper nesting is
// rejected as if the grammar did not allow it), and a state holds at most
// MaxStacks stacks (a text that needs more fails with ErrTooComplex).
// Left-recursive rules, which a pushdown matcher cannot run, are refused
// by Parse.
//
// # Caching
//
// The states a Grammar reaches are interned and their transitions and token
// masks cached, so a walk over a state seen before costs one lookup. The
// cache belongs to the Grammar, is shared by its Matchers under a mutex, and
// is dropped whole when it grows past MaxCacheBytes. A Grammar is safe for
// concurrent use; a Matcher is not.
package grammar

import (
	"errors"
	"fmt"
	"slices"
)

// Limits on grammars and matching.
const (
	// MaxGrammarBytes bounds the source text Parse accepts.
	MaxGrammarBytes = 1 << 20
	// MaxRules bounds the rules of a compiled grammar, counting those that
	// groups and repetitions add.
	MaxRules = 1 << 16
	// MaxElements bounds the symbols of a compiled grammar.
	MaxElements = 1 << 20
	// MaxNesting bounds how deep parenthesized groups nest in a grammar's
	// source.
	MaxNesting = 256
	// MaxRepetition bounds m and n in x{m,n} (llama.cpp's limit).
	MaxRepetition = 2000
	// MaxDepth bounds the depth of one pushdown stack; a text that nests
	// deeper is rejected.
	MaxDepth = 1024
	// MaxStacks bounds the stacks of one matcher state.
	MaxStacks = 4096
	// MaxCacheBytes bounds the memory of a Grammar's state cache (states,
	// transitions, token masks), roughly counted.
	MaxCacheBytes = 256 << 20
)

// ParseError reports a malformed grammar: what is wrong, and where.
type ParseError struct {
	Line   int    // 1-based line of the error
	Column int    // 1-based column, in bytes
	Offset int    // 0-based byte offset
	Msg    string // what is wrong, e.g. `undefined rule "value"`
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("grammar: line %d, column %d (offset %d): %s", e.Line, e.Column, e.Offset, e.Msg)
}

// ErrTooComplex is returned (wrapped) when a text makes a matcher state
// hold more than MaxStacks stacks: the grammar is too ambiguous for it.
var ErrTooComplex = errors.New("grammar: too many parses of the text (more than MaxStacks)")

// Grammar is a compiled grammar. Its zero value is not usable; get one from
// Parse or FromJSONSchema.
type Grammar struct {
	elems []elem    // every alternative, each ended by an end element
	rules [][]int32 // rules[r] lists the first element of each alternative
	names []string  // rule names, for messages
	sets  []charSet
	root  int32
	src   string

	cache *cache
}

// Source returns the GBNF text the grammar was compiled from.
func (g *Grammar) Source() string { return g.src }

// Rules returns the number of rules, counting those that groups and
// repetitions add.
func (g *Grammar) Rules() int { return len(g.rules) }

// CacheBytes returns the memory its state cache holds now, roughly
// counted as MaxCacheBytes is (at most about MaxCacheBytes).
func (g *Grammar) CacheBytes() int {
	g.cache.mu.Lock()
	defer g.cache.mu.Unlock()
	return g.cache.bytes
}

type elemKind uint8

const (
	kEnd   elemKind = iota // end of an alternative
	kChars                 // a character from sets[arg]
	kRef                   // rule arg
)

type elem struct {
	kind elemKind
	arg  int32
}

// charSet is a set of code points: sorted ranges, possibly negated, with a
// bitmap for ASCII.
type charSet struct {
	ranges []runeRange
	neg    bool
	ascii  [2]uint64
}

type runeRange struct{ lo, hi rune }

func (s *charSet) contains(r rune) bool {
	if r >= 0 && r < 128 {
		return s.ascii[r>>6]&(1<<(r&63)) != 0
	}
	in := false
	for _, x := range s.ranges {
		if r >= x.lo && r <= x.hi {
			in = true
			break
		}
	}
	return in != s.neg
}

// intersects reports whether some code point in [lo, hi] is in the set.
func (s *charSet) intersects(lo, hi rune) bool {
	if !s.neg {
		for _, x := range s.ranges {
			if x.lo <= hi && x.hi >= lo {
				return true
			}
		}
		return false
	}
	// Negated: some point of [lo, hi] is outside every range.
	for r := lo; r <= hi; {
		next := r
		for _, x := range s.ranges {
			if r >= x.lo && r <= x.hi {
				next = x.hi + 1
				break
			}
		}
		if next == r {
			return true
		}
		r = next
	}
	return false
}

// nonASCII reports whether the set holds every code point from U+0080 on
// (all) or none of them (none).
func (s *charSet) nonASCII() (all, none bool) {
	covered := true // [0x80, MaxRune] inside the ranges
	touched := false
	lo := rune(0x80)
	for _, x := range sortedRanges(s.ranges) {
		if x.hi < 0x80 {
			continue
		}
		touched = true
		if x.lo > lo {
			covered = false
		}
		lo = max(lo, x.hi+1)
	}
	if lo <= 0x10FFFF {
		covered = false
	}
	if s.neg {
		return !touched, covered
	}
	return covered, !touched
}

func sortedRanges(r []runeRange) []runeRange {
	out := append([]runeRange(nil), r...)
	slices.SortFunc(out, func(a, b runeRange) int { return int(a.lo - b.lo) })
	return out
}

func (s *charSet) finish() {
	for r := rune(0); r < 128; r++ {
		in := false
		for _, x := range s.ranges {
			if r >= x.lo && r <= x.hi {
				in = true
				break
			}
		}
		if in != s.neg {
			s.ascii[r>>6] |= 1 << (r & 63)
		}
	}
}
