package grammar

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Parse compiles GBNF source text with llama.cpp's semantics: rule names
// are words of ASCII letters, digits and '-'; a rule ends at a newline
// outside parentheses unless the line ends in '|'; the start rule is root.
//
// It fails with a *ParseError giving the line, column and byte offset of
// the first problem: a syntax error, source longer than MaxGrammarBytes or
// not UTF-8, groups nested deeper than MaxNesting, a repetition count
// above MaxRepetition, more than MaxRules
// rules, a rule defined twice, a reference to an undefined rule, no root
// rule, or a left-recursive rule (one that can reach itself before
// matching any character).
func Parse(src string) (*Grammar, error) {
	if len(src) > MaxGrammarBytes {
		return nil, &ParseError{Line: 1, Column: 1, Msg: fmt.Sprintf("grammar is %d bytes, more than the limit of %d", len(src), MaxGrammarBytes)}
	}
	p := &parser{src: src, ids: map[string]int32{}}
	if !utf8.ValidString(src) {
		i := 0
		for i < len(src) {
			r, n := utf8.DecodeRuneInString(src[i:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			i += n
		}
		return nil, p.errAt(i, "invalid UTF-8")
	}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.compile(src)
}

// MustParse is Parse for grammars known to be valid; it panics on an error.
func MustParse(src string) *Grammar {
	g, err := Parse(src)
	if err != nil {
		panic(err)
	}
	return g
}

type parser struct {
	src string
	pos int

	ids     map[string]int32
	names   []string
	alts    [][][]elem // alts[rule] = alternatives
	defined []bool
	refAt   []int // first reference's offset, for undefined rules
	defAt   []int
	sets    []charSet
	nelems  int
	nesting int // groups open at pos
}

// perr is the panic value that carries a *ParseError out of the recursion.
type perr struct{ e *ParseError }

func (p *parser) errAt(off int, format string, args ...any) *ParseError {
	line, col := 1, 1
	for i := 0; i < off && i < len(p.src); i++ {
		if p.src[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &ParseError{Line: line, Column: col, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) fail(off int, format string, args ...any) {
	panic(perr{p.errAt(off, format, args...)})
}

func (p *parser) parse() (err error) {
	defer func() {
		if r := recover(); r != nil {
			pe, ok := r.(perr)
			if !ok {
				panic(r)
			}
			err = pe.e
		}
	}()
	p.space(true)
	for p.pos < len(p.src) {
		p.rule()
	}
	return nil
}

func (p *parser) peek() byte {
	if p.pos < len(p.src) {
		return p.src[p.pos]
	}
	return 0
}

// space skips blanks and comments, and newlines when newlines is set.
func (p *parser) space(newlines bool) {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == ' ' || c == '\t':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' && p.src[p.pos] != '\r' {
				p.pos++
			}
		case (c == '\n' || c == '\r') && newlines:
			p.pos++
		default:
			return
		}
	}
}

func isWordChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

func (p *parser) name() string {
	start := p.pos
	for p.pos < len(p.src) && isWordChar(p.src[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		p.fail(start, "expecting a rule name")
	}
	return p.src[start:p.pos]
}

func (p *parser) ruleID(name string) int32 {
	if id, ok := p.ids[name]; ok {
		return id
	}
	return p.newRule(name)
}

func (p *parser) newRule(name string) int32 {
	if len(p.names) >= MaxRules {
		p.fail(p.pos, "more than %d rules (groups and repetitions count)", MaxRules)
	}
	id := int32(len(p.names))
	p.ids[name] = id
	p.names = append(p.names, name)
	p.alts = append(p.alts, nil)
	p.defined = append(p.defined, false)
	p.refAt = append(p.refAt, -1)
	p.defAt = append(p.defAt, -1)
	return id
}

// synth adds a rule made by the parser for a group or a repetition.
func (p *parser) synth(base string, alts [][]elem) int32 {
	id := p.newRule(fmt.Sprintf("%s_%d", base, len(p.names)))
	p.define(id, alts)
	return id
}

func (p *parser) define(id int32, alts [][]elem) {
	for _, a := range alts {
		p.nelems += len(a) + 1
	}
	if p.nelems > MaxElements {
		p.fail(p.pos, "more than %d symbols (repetitions expanded)", MaxElements)
	}
	p.alts[id] = alts
	p.defined[id] = true
}

func (p *parser) rule() {
	start := p.pos
	name := p.name()
	p.space(false)
	if !strings.HasPrefix(p.src[p.pos:], "::=") {
		p.fail(p.pos, "expecting ::= after rule name %q", name)
	}
	p.pos += 3
	p.space(true)
	id := p.ruleID(name)
	if p.defined[id] {
		p.fail(start, "rule %q is defined twice (first at offset %d)", name, p.defAt[id])
	}
	p.defAt[id] = start
	p.defined[id] = true // before the body, so that self-references resolve
	alts := p.alternates(name, false)
	p.define(id, alts)
	switch p.peek() {
	case '\r':
		p.pos++
		if p.peek() == '\n' {
			p.pos++
		}
	case '\n':
		p.pos++
	case 0:
	default:
		p.fail(p.pos, "expecting newline or end of grammar after rule %q, found %q", name, p.src[p.pos:p.pos+utf8Len(p.src[p.pos:])])
	}
	p.space(true)
}

func utf8Len(s string) int {
	_, n := utf8.DecodeRuneInString(s)
	return max(n, 1)
}

func (p *parser) alternates(name string, nested bool) [][]elem {
	alts := [][]elem{p.sequence(name, nested)}
	for p.peek() == '|' {
		p.pos++
		p.space(true)
		alts = append(alts, p.sequence(name, nested))
	}
	return alts
}

func (p *parser) sequence(name string, nested bool) []elem {
	var seq []elem
	last := -1 // index in seq of the last item, for repetitions
	for p.pos < len(p.src) {
		start := p.pos
		switch c := p.src[p.pos]; {
		case c == '"':
			p.pos++
			last = len(seq)
			for p.peek() != '"' {
				if p.pos >= len(p.src) {
					p.fail(start, "unterminated string literal")
				}
				seq = append(seq, p.single(p.char()))
			}
			p.pos++
		case c == '[':
			p.pos++
			var s charSet
			if p.peek() == '^' {
				s.neg = true
				p.pos++
			}
			for p.peek() != ']' {
				if p.pos >= len(p.src) {
					p.fail(start, "unterminated character class")
				}
				lo := p.char()
				hi := lo
				if p.peek() == '-' && p.pos+1 < len(p.src) && p.src[p.pos+1] != ']' {
					p.pos++
					hi = p.char()
					if hi < lo {
						p.fail(start, "character range %q-%q is reversed", lo, hi)
					}
				}
				s.ranges = append(s.ranges, runeRange{lo, hi})
			}
			p.pos++
			last = len(seq)
			seq = append(seq, p.set(s))
		case isWordChar(c):
			n := p.name()
			id := p.ruleID(n)
			if p.refAt[id] < 0 {
				p.refAt[id] = start
			}
			last = len(seq)
			seq = append(seq, elem{kRef, id})
		case c == '(':
			if p.nesting >= MaxNesting {
				p.fail(start, "groups nested more than %d deep", MaxNesting)
			}
			p.nesting++
			p.pos++
			p.space(true)
			alts := p.alternates(name, true)
			p.nesting--
			if p.peek() != ')' {
				p.fail(p.pos, "expecting ')' to close the group opened at offset %d", start)
			}
			p.pos++
			last = len(seq)
			seq = append(seq, elem{kRef, p.synth(name, alts)})
		case c == '.':
			p.pos++
			last = len(seq)
			seq = append(seq, p.set(charSet{neg: true}))
		case c == '*' || c == '+' || c == '?' || c == '{':
			if last < 0 {
				p.fail(start, "expecting an item before %q", c)
			}
			lo, hi := 0, -1 // hi < 0: unbounded
			p.pos++
			switch c {
			case '+':
				lo = 1
			case '?':
				hi = 1
			case '{':
				p.space(nested)
				lo = p.count(start)
				hi = lo
				p.space(nested)
				if p.peek() == ',' {
					p.pos++
					p.space(nested)
					hi = -1
					if p.peek() >= '0' && p.peek() <= '9' {
						hi = p.count(start)
						if hi < lo {
							p.fail(start, "repetition {%d,%d} has its maximum below its minimum", lo, hi)
						}
					}
					p.space(nested)
				}
				if p.peek() != '}' {
					p.fail(p.pos, "expecting '}' to close the repetition at offset %d", start)
				}
				p.pos++
			}
			item := seq[last:]
			x := elem{kRef, 0}
			if len(item) == 1 {
				x = item[0]
			} else { // a literal of several characters, or ""
				x.arg = p.synth(name, [][]elem{append([]elem(nil), item...)})
			}
			seq = append(seq[:last], p.repeat(name, x, lo, hi)...)
			last = -1
		default:
			return seq
		}
		p.space(nested)
	}
	return seq
}

func (p *parser) count(start int) int {
	s := p.pos
	for p.peek() >= '0' && p.peek() <= '9' {
		p.pos++
	}
	if s == p.pos {
		p.fail(p.pos, "expecting a number in the repetition at offset %d", start)
	}
	n, err := strconv.Atoi(p.src[s:p.pos])
	if err != nil || n > MaxRepetition {
		p.fail(s, "repetition count %s is above the limit of %d", p.src[s:p.pos], MaxRepetition)
	}
	return n
}

// repeat returns the items that match x between lo and hi (< 0: no limit)
// times: lo copies of x, then a chain of optional copies (x (x (...)?)?)?,
// or x* as R ::= x R | ε.
func (p *parser) repeat(name string, x elem, lo, hi int) []elem {
	out := make([]elem, 0, lo+1)
	for range lo {
		out = append(out, x)
	}
	if p.nelems+lo > MaxElements {
		p.fail(p.pos, "more than %d symbols (repetitions expanded)", MaxElements)
	}
	if hi < 0 {
		id := p.newRule(fmt.Sprintf("%s_%d", name, len(p.names)))
		p.define(id, [][]elem{{x, {kRef, id}}, {}})
		return append(out, elem{kRef, id})
	}
	if hi == lo {
		return out
	}
	// opt_k ::= x opt_{k-1} | ε, innermost first.
	tail := int32(-1)
	for k := 0; k < hi-lo; k++ {
		alt := []elem{x}
		if tail >= 0 {
			alt = append(alt, elem{kRef, tail})
		}
		tail = p.synth(name, [][]elem{alt, {}})
	}
	return append(out, elem{kRef, tail})
}

func (p *parser) single(r rune) elem {
	return p.set(charSet{ranges: []runeRange{{r, r}}})
}

func (p *parser) set(s charSet) elem {
	s.finish()
	p.sets = append(p.sets, s)
	return elem{kChars, int32(len(p.sets) - 1)}
}

// char reads one character of a literal or class, resolving escapes.
func (p *parser) char() rune {
	start := p.pos
	if p.peek() != '\\' {
		r, n := utf8.DecodeRuneInString(p.src[p.pos:])
		p.pos += n
		return r
	}
	p.pos++
	if p.pos >= len(p.src) {
		p.fail(start, "unfinished escape")
	}
	c := p.src[p.pos]
	p.pos++
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case '\\', '"', '[', ']', '-', '^', '/', '\'':
		return rune(c)
	case 'x', 'u', 'U':
		n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
		if p.pos+n > len(p.src) {
			p.fail(start, "escape \\%c needs %d hex digits", c, n)
		}
		v, err := strconv.ParseUint(p.src[p.pos:p.pos+n], 16, 32)
		if err != nil {
			p.fail(start, "escape \\%c needs %d hex digits, found %q", c, n, p.src[p.pos:p.pos+n])
		}
		if v > utf8.MaxRune {
			p.fail(start, "escape %s is beyond the last code point U+10FFFF", p.src[start:p.pos+n])
		}
		p.pos += n
		return rune(v)
	}
	p.fail(start, "unknown escape \\%c", c)
	return 0
}

// compile flattens the rules, resolves references and refuses left
// recursion.
func (p *parser) compile(src string) (*Grammar, error) {
	for id, ok := range p.defined {
		if !ok {
			return nil, p.errAt(p.refAt[id], "undefined rule %q", p.names[id])
		}
	}
	root, ok := p.ids["root"]
	if !ok {
		return nil, p.errAt(len(p.src), "no root rule")
	}
	g := &Grammar{names: p.names, sets: p.sets, root: root, src: src, rules: make([][]int32, len(p.alts))}
	for r, alts := range p.alts {
		for _, a := range alts {
			g.rules[r] = append(g.rules[r], int32(len(g.elems)))
			g.elems = append(g.elems, a...)
			g.elems = append(g.elems, elem{kind: kEnd})
		}
	}
	if r, ok := leftRecursive(g); ok {
		off := p.defAt[r]
		if off < 0 {
			// a rule made for a group or repetition: report its user rule
			name := p.names[r]
			if i := strings.LastIndexByte(name, '_'); i > 0 {
				if id, ok := p.ids[name[:i]]; ok {
					off = p.defAt[id]
				}
			}
		}
		return nil, p.errAt(max(off, 0), "rule %q is left-recursive: it can reach itself before matching a character", displayName(p.names[r]))
	}
	g.cache = newCache(g)
	return g, nil
}

// displayName names a parser-made rule by its user rule.
func displayName(n string) string {
	if i := strings.IndexByte(n, '_'); i > 0 {
		return n[:i]
	}
	return n
}

// leftRecursive finds a rule that can reach itself through references at
// the start of alternatives, with llama.cpp's rule for what may be skipped
// on the way (llama_grammar_detect_left_recursion): a reference to a rule
// that has an empty alternative. Nullable cycles it lets through are safe:
// the matcher's expansion drops repeated stacks and is bounded.
func leftRecursive(g *Grammar) (int32, bool) {
	n := len(g.rules)
	empty := make([]bool, n)
	for r, alts := range g.rules {
		for _, a := range alts {
			if g.elems[a].kind == kEnd {
				empty[r] = true
			}
		}
	}
	// edges[r]: rules r can start with.
	edges := make([][]int32, n)
	for r, alts := range g.rules {
		for _, a := range alts {
			for i := a; g.elems[i].kind == kRef; i++ {
				edges[r] = append(edges[r], g.elems[i].arg)
				if !empty[g.elems[i].arg] {
					break
				}
			}
		}
	}
	const (
		white = iota
		grey
		black
	)
	color := make([]uint8, n)
	type frame struct {
		r int32
		i int
	}
	for s := range n {
		if color[s] != white {
			continue
		}
		stack := []frame{{int32(s), 0}}
		color[s] = grey
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.i == len(edges[f.r]) {
				color[f.r] = black
				stack = stack[:len(stack)-1]
				continue
			}
			t := edges[f.r][f.i]
			f.i++
			switch color[t] {
			case grey:
				return t, true
			case white:
				color[t] = grey
				stack = append(stack, frame{t, 0})
			}
		}
	}
	return 0, false
}
