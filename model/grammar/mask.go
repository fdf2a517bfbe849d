package grammar

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Vocab is a vocabulary prepared for Mask: the token byte strings and a
// trie over them. It is immutable and safe for concurrent use.
type Vocab struct {
	tokens []string
	nodes  []tnode
	edges  []tedge
	toks   []int32
}

type tnode struct {
	edges, edgesEnd int32 // children in edges[edges:edgesEnd]
	toks, toksEnd   int32 // tokens ending here in toks[toks:toksEnd]
	subEnd          int32 // the subtree's tokens are toks[toks:subEnd]
	// below holds the bytes on the edges of the subtree; utf8 says every
	// token of the subtree is valid UTF-8 (a partial code point allowed at
	// its end) from this node's depth on.
	below [4]uint64
	utf8  bool
}

type tedge struct {
	b     byte
	child int32
}

// NewVocab prepares tokens (indexed by token id, each the bytes the token
// decodes to) for Mask. An empty string marks a token the grammar never
// allows (control tokens; end-of-generation tokens are the caller's to
// allow when Accepting). It copies nothing; tokens must not change.
func NewVocab(tokens []string) *Vocab {
	v := &Vocab{tokens: tokens}
	ids := make([]int32, 0, len(tokens))
	for i, t := range tokens {
		if t != "" {
			ids = append(ids, int32(i))
		}
	}
	slices.SortFunc(ids, func(a, b int32) int { return strings.Compare(tokens[a], tokens[b]) })
	v.build(ids, 0)
	return v
}

// Len returns the number of tokens.
func (v *Vocab) Len() int { return len(v.tokens) }

// Nodes returns the size of the trie, in nodes.
func (v *Vocab) Nodes() int { return len(v.nodes) }

// build adds the node for ids, sorted tokens sharing their first depth
// bytes, and returns its index. Nodes are laid out in depth-first order.
func (v *Vocab) build(ids []int32, depth int) int32 {
	me := int32(len(v.nodes))
	v.nodes = append(v.nodes, tnode{})
	i := 0
	start := int32(len(v.toks))
	for i < len(ids) && len(v.tokens[ids[i]]) == depth {
		v.toks = append(v.toks, ids[i])
		i++
	}
	v.nodes[me].toks, v.nodes[me].toksEnd = start, int32(len(v.toks))
	// Group the rest by their byte at depth; reserve the edges first so
	// that a node's children are contiguous.
	type group struct {
		b      byte
		lo, hi int
	}
	var groups []group
	for i < len(ids) {
		b := v.tokens[ids[i]][depth]
		j := i + 1
		for j < len(ids) && v.tokens[ids[j]][depth] == b {
			j++
		}
		groups = append(groups, group{b, i, j})
		i = j
	}
	es := int32(len(v.edges))
	for _, gr := range groups {
		v.edges = append(v.edges, tedge{b: gr.b})
	}
	v.nodes[me].edges, v.nodes[me].edgesEnd = es, int32(len(v.edges))
	for k, gr := range groups {
		c := v.build(ids[gr.lo:gr.hi], depth+1)
		v.edges[es+int32(k)].child = c
		nd := &v.nodes[me]
		nd.below[gr.b>>6] |= 1 << (gr.b & 63)
		for w, x := range v.nodes[c].below {
			nd.below[w] |= x
		}
	}
	nd := &v.nodes[me]
	nd.subEnd = int32(len(v.toks))
	nd.utf8 = true
	for _, id := range ids {
		if !validFrom(v.tokens[id][depth:]) {
			nd.utf8 = false
			break
		}
	}
	return me
}

// validFrom reports whether s is UTF-8 as Matcher reads it: lead bytes
// C2..F7 with their continuation bytes, no overlong forms, nothing above
// U+10FFFF, a partial code point allowed at the end.
func validFrom(s string) bool {
	for i := 0; i < len(s); {
		b := s[i]
		var cp, low rune
		need := 0
		switch {
		case b < 0x80:
			i++
			continue
		case b&0xE0 == 0xC0 && b >= 0xC2:
			cp, need, low = rune(b&0x1F), 1, 0x80
		case b&0xF0 == 0xE0:
			cp, need, low = rune(b&0x0F), 2, 0x800
		case b&0xF8 == 0xF0:
			cp, need, low = rune(b&0x07), 3, 0x10000
		default:
			return false
		}
		i++
		for ; need > 0 && i < len(s); need-- {
			if s[i]&0xC0 != 0x80 {
				return false
			}
			cp = cp<<6 | rune(s[i]&0x3F)
			i++
		}
		if need > 0 {
			cp <<= 6 * need
		}
		if max(cp, low) > utf8.MaxRune || need == 0 && cp < low {
			return false
		}
	}
	return true
}

// Mask sets in dst (grown to (v.Len()+63)/64 words and returned) the bit of
// every token that can follow the text so far: its bytes extend the text
// to a prefix of a sentence of the grammar, possibly ending inside a UTF-8
// sequence. End-of-generation tokens are not included; allow them when
// Accepting. The mask of a state seen before is taken from the Grammar's
// cache.
func (m *Matcher) Mask(v *Vocab, dst []uint64) []uint64 {
	words := (len(v.tokens) + 63) / 64
	dst = slices.Grow(dst[:0], words)[:words]
	c := m.g.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.need == 0 {
		if mk, ok := m.st.masks[v]; ok {
			copy(dst, mk)
			return dst
		}
	}
	clear(dst)
	if !m.st.dead {
		w := walker{c: c, v: v, dst: dst}
		w.walk(0, m.st, m.cp, m.need, m.low, true)
	}
	if m.need == 0 {
		if m.st.masks == nil {
			m.st.masks = map[*Vocab][]uint64{}
		}
		m.st.masks[v] = slices.Clone(dst)
		c.bytes += 8 * words
	}
	return dst
}

// fastPathTokens is the subtree size from which walk checks whether the
// state loops on every byte below a node.
const fastPathTokens = 8

// loops reports whether every token of node nd's subtree leads from st
// back to st: st loops on each ASCII byte below nd and, when there are
// others, on every non-ASCII code point, and the subtree is valid UTF-8.
func (c *cache) loops(st *state, nd *tnode) bool {
	if root := nd == nil; root {
		return false
	}
	c.loopInfo(st)
	if nd.below[0]&^st.loopASCII[0] != 0 || nd.below[1]&^st.loopASCII[1] != 0 {
		return false
	}
	if nd.below[2]|nd.below[3] != 0 {
		return st.loopOther && nd.utf8
	}
	return true
}

// loopInfo fills st's loop fields once.
func (c *cache) loopInfo(st *state) {
	if st.loopKnown {
		return
	}
	st.loopKnown = true
	for r := rune(0); r < 128; r++ {
		if c.step(st, r) == st {
			st.loopASCII[r>>6] |= 1 << (r & 63)
		}
	}
	// Every non-ASCII code point behaves alike when each stack top's set
	// holds all of them or none; then one of them shows whether they loop.
	for _, s := range st.stacks {
		if len(s) > 0 {
			if all, none := c.g.sets[c.g.elems[s[len(s)-1]].arg].nonASCII(); !all && !none {
				return
			}
		}
	}
	st.loopOther = c.step(st, 0x100) == st
}

type walker struct {
	c   *cache
	v   *Vocab
	dst []uint64
}

// walk visits trie node n in state st, with a code point begun (bits cp,
// need continuation bytes still to come). root marks the trie's root,
// whose tokens (none: empty strings are left out) are skipped.
func (w *walker) walk(n int32, st *state, cp rune, need int, low rune, root bool) {
	nd := &w.v.nodes[n]
	if need == 0 && nd.subEnd-nd.toks >= fastPathTokens && w.c.loops(st, nd) {
		// Every token below stays in st: all allowed, no stepping.
		for _, id := range w.v.toks[nd.toks:nd.subEnd] {
			w.dst[id>>6] |= 1 << (id & 63)
		}
		return
	}
	if !root && nd.toksEnd > nd.toks {
		ok := need == 0
		if !ok {
			lo := cp << (6 * need)
			hi := lo | (1<<(6*need) - 1)
			lo = max(lo, low)
			ok = lo <= utf8.MaxRune && w.c.partialOK(st, lo, min(hi, utf8.MaxRune))
		}
		if ok {
			for _, id := range w.v.toks[nd.toks:nd.toksEnd] {
				w.dst[id>>6] |= 1 << (id & 63)
			}
		}
	}
	for _, e := range w.v.edges[nd.edges:nd.edgesEnd] {
		b := e.b
		if need == 0 {
			switch {
			case b < 0x80:
				nx := w.c.step(st, rune(b))
				if !nx.dead {
					w.walk(e.child, nx, 0, 0, 0, false)
				}
			case b&0xE0 == 0xC0 && b >= 0xC2: // C0, C1 only start overlong forms
				w.walk(e.child, st, rune(b&0x1F), 1, 0x80, false)
			case b&0xF0 == 0xE0:
				w.walk(e.child, st, rune(b&0x0F), 2, 0x800, false)
			case b&0xF8 == 0xF0:
				w.walk(e.child, st, rune(b&0x07), 3, 0x10000, false)
			}
			continue
		}
		if b&0xC0 != 0x80 {
			continue
		}
		ncp := cp<<6 | rune(b&0x3F)
		if need > 1 {
			w.walk(e.child, st, ncp, need-1, low, false)
			continue
		}
		if ncp > utf8.MaxRune || ncp < low {
			continue
		}
		nx := w.c.step(st, ncp)
		if !nx.dead {
			w.walk(e.child, nx, 0, 0, 0, false)
		}
	}
}

// AcceptToken advances m by the bytes of token id of v. It fails, leaving
// m unchanged, with a *RejectError when the grammar does not allow them
// (wrapping ErrTooComplex when that is why) and with a *TokenError for an
// id outside v or a token v marks as never allowed.
func (m *Matcher) AcceptToken(v *Vocab, id int32) error {
	if id < 0 || int(id) >= len(v.tokens) || v.tokens[id] == "" {
		return &TokenError{ID: id}
	}
	return m.AcceptString(v.tokens[id])
}

// TokenError reports a token AcceptToken cannot take.
type TokenError struct{ ID int32 }

func (e *TokenError) Error() string {
	return fmt.Sprintf("grammar: token %d is outside the vocabulary or has no text", e.ID)
}

// Allowed reports whether bit id is set in a mask from Mask.
func Allowed(mask []uint64, id int32) bool {
	return id >= 0 && int(id>>6) < len(mask) && mask[id>>6]&(1<<(id&63)) != 0
}
