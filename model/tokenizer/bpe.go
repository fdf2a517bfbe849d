package tokenizer

import (
	"fmt"
	"strings"
)

// bpe is the byte-level BPE tokenizer of llama.cpp (llm_tokenizer_bpe)
// for tokenizer.ggml.model "gpt2": the text is split into words by the
// pre-tokenizer, each word's bytes are mapped to printable code points,
// and adjacent symbols of a word are merged by the merge list, lowest rank
// first (leftmost on ties).
type bpe struct {
	v     *vocab
	pre   *preTokenizer
	steps []splitStep
	ranks map[mergePair]int32
	// oneByte[b] is the token whose text is the single raw byte b, or -1:
	// llama.cpp's fallback for a merged symbol that is not a token.
	oneByte [256]int32
}

// mergePair is the two sides of a merge, as vocabulary text.
type mergePair struct{ left, right string }

func newBPE(v *vocab, pre *preTokenizer, merges []string) (*bpe, error) {
	steps, err := pre.compile()
	if err != nil {
		return nil, err
	}
	b := &bpe{v: v, pre: pre, steps: steps, ranks: make(map[mergePair]int32, len(merges))}
	for i, m := range merges {
		// As llama.cpp: split at the first space after the first byte; a
		// line without one is an empty pair that can never match.
		var p mergePair
		if len(m) > 1 {
			if k := strings.IndexByte(m[1:], ' '); k >= 0 {
				p = mergePair{m[:k+1], m[k+2:]}
			}
		}
		if _, dup := b.ranks[p]; !dup {
			b.ranks[p] = int32(i)
		}
	}
	for c := range b.oneByte {
		b.oneByte[c] = -1
		if id, ok := v.ids[string([]byte{byte(c)})]; ok {
			b.oneByte[c] = id
		}
	}
	if len(b.ranks) > 1<<31-1 {
		return nil, &MetadataError{Key: keyMerges, Msg: fmt.Sprintf("%d merges", len(merges))}
	}
	return b, nil
}

func (b *bpe) newSession() session { return &bpeSession{bpe: b} }

// bpeSymbol is a run of the encoded word; n is 0 once merged away.
type bpeSymbol struct {
	prev, next int32
	off, n     int32
}

// bpeBigram is a candidate merge; size tells stale entries apart.
type bpeBigram struct {
	rank        int32
	left, right int32
	size        int32
}

func (a bpeBigram) before(b bpeBigram) bool {
	return a.rank < b.rank || a.rank == b.rank && a.left < b.left
}

// maxCachedWords bounds the per-session word cache.
const maxCachedWords = 1 << 16

// bpeSession is the per-call scratch of the BPE tokenizer, with a cache of
// the tokens of words already seen.
type bpeSession struct {
	bpe   *bpe
	split splitState
	enc   strings.Builder
	syms  []bpeSymbol
	heap  minHeap[bpeBigram]
	cache map[string][]int32
}

func (bs *bpeSession) tokenize(text string, _ bool, out []int32) []int32 {
	b := bs.bpe
	st := &bs.split
	st.load(text)
	ends := st.run(b.steps)
	if bs.cache == nil {
		bs.cache = make(map[string][]int32)
	}
	start := 0
	for _, e := range ends {
		word := text[st.offs[start]:st.offs[e]]
		start = int(e)
		if ids, ok := bs.cache[word]; ok {
			out = append(out, ids...)
			continue
		}
		n := len(out)
		out = bs.word(word, out)
		if len(bs.cache) >= maxCachedWords {
			clear(bs.cache)
		}
		bs.cache[strings.Clone(word)] = append([]int32(nil), out[n:]...)
	}
	return out
}

// word tokenizes one pre-tokenized word.
func (bs *bpeSession) word(word string, out []int32) []int32 {
	b := bs.bpe
	v := b.v
	bs.enc.Reset()
	for i := 0; i < len(word); i++ {
		bs.enc.WriteString(byteToText[word[i]])
	}
	enc := bs.enc.String()
	if v.ignoreMerges {
		if id, ok := v.ids[enc]; ok {
			return append(out, id)
		}
	}
	syms := bs.syms[:0]
	for off := 0; off < len(enc); {
		n := min(utf8Len(enc[off]), len(enc)-off)
		i := int32(len(syms))
		syms = append(syms, bpeSymbol{prev: i - 1, next: i + 1, off: int32(off), n: int32(n)})
		off += n
	}
	syms[len(syms)-1].next = -1
	bs.syms = syms
	bs.heap = bs.heap[:0]
	for i := 1; i < len(syms); i++ {
		bs.tryAdd(enc, int32(i-1), int32(i))
	}
	for len(bs.heap) > 0 {
		bg := bs.heap.pop()
		l, r := &syms[bg.left], &syms[bg.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != bg.size {
			continue // stale
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = bg.left
		}
		bs.tryAdd(enc, l.prev, bg.left)
		bs.tryAdd(enc, bg.left, l.next)
	}
	for i := int32(0); i != -1; i = syms[i].next {
		s := enc[syms[i].off : syms[i].off+syms[i].n]
		if id, ok := v.ids[s]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			if id := b.oneByte[s[j]]; id >= 0 {
				out = append(out, id)
			}
		}
	}
	return out
}

func (bs *bpeSession) tryAdd(enc string, left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	l, r := bs.syms[left], bs.syms[right]
	rank, ok := bs.bpe.ranks[mergePair{enc[l.off : l.off+l.n], enc[r.off : r.off+r.n]}]
	if !ok {
		return
	}
	bs.heap.push(bpeBigram{rank: rank, left: left, right: right, size: l.n + r.n})
}
