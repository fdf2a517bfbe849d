package tokenizer

// spm is the SentencePiece-style tokenizer of llama.cpp (llm_tokenizer_spm)
// for tokenizer.ggml.model "llama": spaces become U+2581, the text is split
// into UTF-8 characters, and adjacent symbols are merged greedily, best
// vocabulary score first (leftmost on ties), as long as the merged text is
// a token. Symbols that are not tokens fall back to <0xNN> byte tokens.
type spm struct {
	v *vocab
	// inToken holds every pair of adjacent symbols found inside a token.
	// Every merged symbol is a token, so no merge can join two adjacent
	// symbols of the text whose pair is missing: the text is cut there
	// and each piece merged on its own, with the same result as merging
	// the whole text at once, but with short merge queues and pieces
	// that repeat, which the session caches.
	inToken map[[2]uint64]bool
	// inTokenASCII is inToken for pairs of ASCII symbols.
	inTokenASCII [128][128]bool
	// whole disables the cutting (for tests).
	whole bool
	// byteIDs[b] is the token of byte b: <0xNN>, else the one-byte token,
	// else the unknown token, else -1.
	byteIDs [256]int32
}

func newSPM(v *vocab) *spm {
	s := &spm{v: v, inToken: map[[2]uint64]bool{}}
	for _, t := range v.tokens {
		prev := -1
		for off := 0; off < len(t); {
			n := min(utf8Len(t[off]), len(t)-off)
			if prev >= 0 {
				s.addPair(t[prev:off], t[off:off+n])
			}
			prev = off
			off += n
		}
	}
	const hex = "0123456789ABCDEF"
	for b := 0; b < 256; b++ {
		id, ok := v.ids[string([]byte{'<', '0', 'x', hex[b>>4], hex[b&15], '>'})]
		if !ok {
			id, ok = v.ids[string([]byte{byte(b)})]
		}
		if !ok {
			id = v.unk
		}
		s.byteIDs[b] = id
	}
	return s
}

// symbolKey packs a symbol of 1 to 4 bytes into an integer.
func symbolKey(sym []byte) uint64 {
	var k uint64
	for _, c := range sym {
		k = k<<8 | uint64(c)
	}
	return k | uint64(len(sym))<<32
}

func (s *spm) addPair(a, b string) {
	if len(a) == 1 && len(b) == 1 && a[0] < 128 && b[0] < 128 {
		s.inTokenASCII[a[0]][b[0]] = true
		return
	}
	s.inToken[[2]uint64{symbolKey([]byte(a)), symbolKey([]byte(b))}] = true
}

// joinable reports whether some token contains symbols a and b side by
// side.
func (s *spm) joinable(a, b []byte) bool {
	if len(a) == 1 && len(b) == 1 && a[0] < 128 && b[0] < 128 {
		return s.inTokenASCII[a[0]][b[0]]
	}
	return s.inToken[[2]uint64{symbolKey(a), symbolKey(b)}]
}

func (s *spm) newSession() session { return &spmSession{spm: s} }

// spmSymbol is a run of text buf[off:off+n] in a doubly linked list; n is 0
// once the symbol has been merged into its left neighbour.
type spmSymbol struct {
	prev, next int32
	off, n     int32
}

// spmBigram is a candidate merge of two adjacent symbols. size is their
// combined length when the candidate was made, which tells stale entries
// apart.
type spmBigram struct {
	score       float32
	left, right int32
	size        int32
}

// before orders the queue: higher score first, then leftmost.
func (a spmBigram) before(b spmBigram) bool {
	return a.score > b.score || a.score == b.score && a.left < b.left
}

// spmSession is the per-call scratch of the SPM tokenizer, with a cache of
// the tokens of text pieces already seen.
type spmSession struct {
	spm   *spm
	buf   []byte
	syms  []spmSymbol
	heap  minHeap[spmBigram]
	cache map[string][]int32
}

func (ss *spmSession) tokenize(text string, prevSpecial bool, out []int32) []int32 {
	v := ss.spm.v
	// The text as the vocabulary spells it: optional leading space, and
	// every ' ' as U+2581.
	buf := ss.buf[:0]
	if v.addSpacePrefix && prevSpecial {
		buf = append(buf, spaceMarker...)
	}
	for i := 0; i < len(text); i++ {
		if text[i] == ' ' {
			buf = append(buf, spaceMarker...)
		} else {
			buf = append(buf, text[i])
		}
	}
	ss.buf = buf
	if len(buf) == 0 {
		return out
	}
	if ss.spm.whole {
		return ss.merge(0, len(buf), out)
	}
	// Cut between symbols that no token has side by side.
	if ss.cache == nil {
		ss.cache = make(map[string][]int32)
	}
	start, prev := 0, 0
	for off := min(utf8Len(buf[0]), len(buf)); off < len(buf); {
		n := min(utf8Len(buf[off]), len(buf)-off)
		if !ss.spm.joinable(buf[prev:off], buf[off:off+n]) {
			out = ss.mergeCached(start, off, out)
			start = off
		}
		prev = off
		off += n
	}
	return ss.mergeCached(start, len(buf), out)
}

// mergeCached is merge with the session's word cache.
func (ss *spmSession) mergeCached(start, end int, out []int32) []int32 {
	if ids, ok := ss.cache[string(ss.buf[start:end])]; ok {
		return append(out, ids...)
	}
	n := len(out)
	out = ss.merge(start, end, out)
	if len(ss.cache) >= maxCachedWords {
		clear(ss.cache)
	}
	ss.cache[string(ss.buf[start:end])] = append([]int32(nil), out[n:]...)
	return out
}

// merge tokenizes buf[start:end] and appends the ids to out.
func (ss *spmSession) merge(start, end int, out []int32) []int32 {
	v := ss.spm.v
	buf := ss.buf
	syms := ss.syms[:0]
	for off := start; off < end; {
		n := min(utf8Len(buf[off]), end-off)
		i := int32(len(syms))
		syms = append(syms, spmSymbol{prev: i - 1, next: i + 1, off: int32(off), n: int32(n)})
		off += n
	}
	syms[len(syms)-1].next = -1
	ss.syms = syms
	ss.heap = ss.heap[:0]
	for i := 1; i < len(syms); i++ {
		ss.tryAdd(int32(i-1), int32(i))
	}
	for len(ss.heap) > 0 {
		b := ss.heap.pop()
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // one side was merged since this candidate was made
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		ss.tryAdd(l.prev, b.left)
		ss.tryAdd(b.left, l.next)
	}
	for i := int32(0); i != -1; i = syms[i].next {
		s := syms[i]
		if id, ok := v.ids[string(buf[s.off:s.off+s.n])]; ok {
			out = append(out, id)
			continue
		}
		for _, c := range buf[s.off : s.off+s.n] {
			if id := ss.spm.byteIDs[c]; id >= 0 {
				out = append(out, id)
			}
		}
	}
	return out
}

// tryAdd queues the merge of symbols left and right if their text is a
// token.
func (ss *spmSession) tryAdd(left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	l, r := ss.syms[left], ss.syms[right]
	id, ok := ss.spm.v.ids[string(ss.buf[l.off:l.off+l.n+r.n])]
	if !ok {
		return
	}
	ss.heap.push(spmBigram{score: ss.spm.v.score(id), left: left, right: right, size: l.n + r.n})
}
