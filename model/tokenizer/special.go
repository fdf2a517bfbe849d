package tokenizer

import "strings"

// fragment is a piece of the input after special tokens have been split
// out: either a token id (id >= 0) or the raw text text[off:off+n].
type fragment struct {
	id  int32
	off int
	n   int
}

// partition splits text on special tokens before the tokenization
// algorithm runs, as llama.cpp's tokenizer_st_partition does: the special
// tokens are tried longest text first, and each one splits every raw
// fragment at all its non-overlapping occurrences, left to right. Control
// and unknown tokens are only considered when parseSpecial is set;
// user-defined tokens always are. A token with the lstrip (rstrip)
// attribute swallows the white space to its left (right).
//
// buf and tmp are scratch slices; it returns the fragments and the slice
// it did not return them in, for reuse.
func (v *vocab) partition(text string, parseSpecial bool, buf, tmp []fragment) (frags, spare []fragment) {
	frags = append(buf[:0], fragment{id: -1, off: 0, n: len(text)})
	if len(text) == 0 {
		return frags[:0], tmp
	}
	for _, id := range v.specialByLength {
		a := v.attrs[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := v.tokens[id]
		if !strings.Contains(text, tok) {
			continue
		}
		out := tmp[:0]
		for _, f := range frags {
			if f.id >= 0 {
				out = append(out, f)
				continue
			}
			off, end := f.off, f.off+f.n
			for {
				i := strings.Index(text[off:end], tok)
				if i < 0 {
					if off < end {
						out = append(out, fragment{id: -1, off: off, n: end - off})
					}
					break
				}
				m := off + i
				left := m
				if a&attrLStrip != 0 {
					for left > off && isCSpace(text[left-1]) {
						left--
					}
				}
				if left > off {
					out = append(out, fragment{id: -1, off: off, n: left - off})
				}
				out = append(out, fragment{id: id})
				off = m + len(tok)
				if a&attrRStrip != 0 {
					for off < end && isCSpace(text[off]) {
						off++
					}
				}
			}
		}
		frags, tmp = out, frags
	}
	return frags, tmp
}
