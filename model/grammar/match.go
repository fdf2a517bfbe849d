package grammar

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// A stack lists element positions bottom to top; the top is always a
// character element (stacks are expanded eagerly). An empty stack means the
// whole grammar has been matched.
type stack []int32

// state is an interned set of stacks. Its transitions and token masks are
// filled in lazily under the cache's mutex.
type state struct {
	stacks []stack
	accept bool
	dead   bool  // no stack: nothing can follow
	err    error // set on the dead state that ErrTooComplex leads to

	ascii [128]*state
	other map[rune]*state

	masks map[*Vocab][]uint64

	// Filled once by loopInfo: the ASCII characters that lead back to this
	// state, and whether every non-ASCII code point does.
	loopKnown bool
	loopASCII [2]uint64
	loopOther bool

	// bySig caches non-ASCII transitions by which stack tops accept the
	// code point (states of at most 64 stacks).
	bySig map[uint64]*state
}

// cache interns a Grammar's states.
type cache struct {
	g      *Grammar
	mu     sync.Mutex
	states map[string]*state
	bytes  int
	dead   *state
	start  *state
}

func newCache(g *Grammar) *cache {
	c := &cache{g: g, dead: &state{dead: true}}
	c.reset()
	return c
}

// reset drops every interned state. States already held by matchers stay
// valid: they keep their stacks, and their transitions lead to states of
// the old generation, which are equally valid.
func (c *cache) reset() {
	c.states = map[string]*state{}
	c.bytes = 0
	var set stackSet
	for _, a := range c.g.rules[c.g.root] {
		c.g.expandFrom(&set, nil, a)
	}
	c.start = c.intern(&set)
}

// stackSet collects distinct stacks.
type stackSet struct {
	list []stack
	seen map[string]bool
	over bool
}

func key(s stack) string {
	b := make([]byte, 4*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	}
	return string(b)
}

func (s *stackSet) add(st stack) {
	if s.over {
		return
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	k := key(st)
	if s.seen[k] {
		return
	}
	if len(s.list) >= MaxStacks {
		s.over = true
		return
	}
	s.seen[k] = true
	s.list = append(s.list, st)
}

// intern returns the state for set, creating it when new.
func (c *cache) intern(set *stackSet) *state {
	if set.over {
		return &state{dead: true, err: ErrTooComplex}
	}
	if len(set.list) == 0 {
		return c.dead
	}
	keys := make([]string, len(set.list))
	n := 0
	for i, s := range set.list {
		keys[i] = key(s)
		n += len(keys[i]) + 1
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(n)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0xff) // lengths are multiples of 4; 0xff ends a stack
	}
	k := b.String()
	if st, ok := c.states[k]; ok {
		return st
	}
	if c.bytes > MaxCacheBytes {
		start := c.start
		c.reset()
		c.start = start
	}
	st := &state{stacks: set.list}
	for _, s := range set.list {
		if len(s) == 0 {
			st.accept = true
		}
	}
	c.states[k] = st
	c.bytes += 2*len(k) + 128*8 + 64
	return st
}

// expandFrom adds to set the stacks reached from base with element pos
// pushed (nothing pushed when pos is an end element).
func (g *Grammar) expandFrom(set *stackSet, base stack, pos int32) {
	if g.elems[pos].kind == kEnd {
		g.expandAll(set, base)
		return
	}
	ns := make(stack, len(base)+1)
	copy(ns, base)
	ns[len(base)] = pos
	g.expandAll(set, ns)
}

// maxExpansions bounds the stacks one expansion visits.
const maxExpansions = 1 << 16

// expandAll resolves the rule references on top of s until every stack
// has a character element on top (or is empty) and adds those to set. A
// stack seen before in the same expansion is skipped (nullable cycles
// such as ([x]*)* come back to it), a stack deeper than MaxDepth is
// dropped, and more than maxExpansions stacks mark set as over the limit.
func (g *Grammar) expandAll(set *stackSet, s stack) {
	todo := []stack{s}
	seen := map[string]bool{}
	for n := 0; len(todo) > 0; n++ {
		if set.over {
			return
		}
		if n > maxExpansions {
			set.over = true
			return
		}
		s := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if len(s) == 0 {
			set.add(s)
			continue
		}
		if len(s) > MaxDepth {
			continue // nesting too deep: this path is rejected
		}
		pos := s[len(s)-1]
		e := g.elems[pos]
		if e.kind == kChars {
			set.add(s)
			continue
		}
		k := key(s)
		if seen[k] {
			continue
		}
		seen[k] = true
		// A reference: replace it by its continuation, then push each
		// alternative's first element (in reverse, so that alternatives
		// come out in order).
		rest := s[: len(s)-1 : len(s)-1]
		if g.elems[pos+1].kind != kEnd {
			rest = append(rest, pos+1)
		}
		alts := g.rules[e.arg]
		for i := len(alts) - 1; i >= 0; i-- {
			a := alts[i]
			if g.elems[a].kind == kEnd {
				todo = append(todo, rest)
				continue
			}
			ns := make(stack, len(rest)+1)
			copy(ns, rest)
			ns[len(rest)] = a
			todo = append(todo, ns)
		}
	}
}

// step returns the state after code point r. The caller holds c.mu.
func (c *cache) step(st *state, r rune) *state {
	if st.dead {
		return st
	}
	if r >= 0 && r < 128 {
		if nx := st.ascii[r]; nx != nil {
			return nx
		}
	} else if nx, ok := st.other[r]; ok {
		return nx
	}
	g := c.g
	var sig uint64
	if r >= 128 && len(st.stacks) <= 64 {
		for i, s := range st.stacks {
			if len(s) > 0 && g.sets[g.elems[s[len(s)-1]].arg].contains(r) {
				sig |= 1 << i
			}
		}
		if nx, ok := st.bySig[sig]; ok {
			if st.other == nil {
				st.other = map[rune]*state{}
			}
			st.other[r] = nx
			c.bytes += 16
			return nx
		}
	}
	var set stackSet
	for _, s := range st.stacks {
		if len(s) == 0 {
			continue
		}
		pos := s[len(s)-1]
		if !g.sets[g.elems[pos].arg].contains(r) {
			continue
		}
		g.expandFrom(&set, s[:len(s)-1:len(s)-1], pos+1)
	}
	nx := c.intern(&set)
	if r >= 0 && r < 128 {
		st.ascii[r] = nx
	} else {
		if st.other == nil {
			st.other = map[rune]*state{}
		}
		st.other[r] = nx
		c.bytes += 16
		if len(st.stacks) <= 64 {
			if st.bySig == nil {
				st.bySig = map[uint64]*state{}
			}
			st.bySig[sig] = nx
		}
	}
	return nx
}

// partialOK reports whether some code point in [lo, hi] can follow st.
func (c *cache) partialOK(st *state, lo, hi rune) bool {
	for _, s := range st.stacks {
		if len(s) > 0 && c.g.sets[c.g.elems[s[len(s)-1]].arg].intersects(lo, hi) {
			return true
		}
	}
	return false
}

// Matcher follows one sequence through a Grammar. It is not safe for
// concurrent use; Clone gives an independent copy.
type Matcher struct {
	g  *Grammar
	st *state
	// A code point begun by the last token: its bits so far and the count
	// of continuation bytes still expected (0: none pending).
	cp   rune
	need int
	low  rune // the least code point of the sequence's length
}

// NewMatcher returns a Matcher at the start of the grammar.
func (g *Grammar) NewMatcher() *Matcher {
	g.cache.mu.Lock()
	defer g.cache.mu.Unlock()
	return &Matcher{g: g, st: g.cache.start}
}

// Clone returns a copy of m that advances independently.
func (m *Matcher) Clone() *Matcher { c := *m; return &c }

// Accepting reports whether the text so far is a complete sentence of the
// grammar (and ends on a whole code point).
func (m *Matcher) Accepting() bool { return m.need == 0 && m.st.accept }

// Dead reports whether nothing can follow the text so far.
func (m *Matcher) Dead() bool { return m.st.dead }

// AcceptRune advances m by r and reports whether the grammar allowed it;
// when it did not, m is unchanged. It fails (false) while a token has left
// a code point unfinished.
func (m *Matcher) AcceptRune(r rune) bool {
	if m.need != 0 {
		return false
	}
	c := m.g.cache
	c.mu.Lock()
	nx := c.step(m.st, r)
	c.mu.Unlock()
	if nx.dead {
		return false
	}
	m.st = nx
	return true
}

// AcceptString advances m by the code points of s, all or nothing. It
// fails with a *RejectError naming the offset of the first byte the grammar
// refused (or of invalid UTF-8), wrapping ErrTooComplex when that was the
// reason.
func (m *Matcher) AcceptString(s string) error {
	cp := m.Clone()
	if err := cp.acceptBytes(s); err != nil {
		return err
	}
	*m = *cp
	return nil
}

// RejectError reports where a text left the grammar.
type RejectError struct {
	Offset int   // byte offset of the code point refused
	Err    error // ErrTooComplex, or nil for a plain mismatch
}

func (e *RejectError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("grammar: text refused at byte %d: %v", e.Offset, e.Err)
	}
	return fmt.Sprintf("grammar: text refused at byte %d", e.Offset)
}

func (e *RejectError) Unwrap() error { return e.Err }

// acceptBytes advances m byte by byte, keeping a trailing partial code
// point pending.
func (m *Matcher) acceptBytes(s string) error {
	c := m.g.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < len(s); i++ {
		b := s[i]
		if m.need == 0 {
			switch {
			case b < 0x80:
				nx := c.step(m.st, rune(b))
				if nx.dead {
					return &RejectError{Offset: i, Err: nx.err}
				}
				m.st = nx
				continue
			case b&0xE0 == 0xC0 && b >= 0xC2:
				m.cp, m.need, m.low = rune(b&0x1F), 1, 0x80
			case b&0xF0 == 0xE0:
				m.cp, m.need, m.low = rune(b&0x0F), 2, 0x800
			case b&0xF8 == 0xF0:
				m.cp, m.need, m.low = rune(b&0x07), 3, 0x10000
			default:
				return &RejectError{Offset: i}
			}
			continue
		}
		if b&0xC0 != 0x80 {
			return &RejectError{Offset: i}
		}
		m.cp = m.cp<<6 | rune(b&0x3F)
		m.need--
		if m.need == 0 {
			if m.cp > utf8.MaxRune || m.cp < m.low {
				return &RejectError{Offset: i}
			}
			nx := c.step(m.st, m.cp)
			if nx.dead {
				return &RejectError{Offset: i, Err: nx.err}
			}
			m.st = nx
		}
	}
	if m.need > 0 {
		lo := m.cp << (6 * m.need)
		hi := lo | (1<<(6*m.need) - 1)
		lo = max(lo, m.low)
		if lo > utf8.MaxRune || !c.partialOK(m.st, lo, min(hi, utf8.MaxRune)) {
			return &RejectError{Offset: len(s) - 1}
		}
	}
	return nil
}
