package tokenizer

import (
	"unicode/utf8"
)

// StreamDecoder decodes tokens one at a time, as a generation loop produces
// them. Add returns the text that became complete; a character whose bytes
// span several tokens comes out whole once its last byte arrives, and so
// does text that the clean-up of a BPE vocabulary (see Decode) might still
// change. Flush returns the rest.
//
// For a decoder from NewStreamDecoder, the concatenation of everything Add
// and Flush return is Decode of the same ids, except that it is always
// valid UTF-8: a byte that cannot be part of a UTF-8 character becomes
// U+FFFD.
//
// A StreamDecoder is not safe for concurrent use.
type StreamDecoder struct {
	t           *Tokenizer
	strip       bool   // drop one leading space of the next token's piece
	clean       bool   // apply the clean-up passes
	hideControl bool   // control and unknown tokens decode to nothing
	pending     []byte // decoded bytes not returned yet
}

// NewStreamDecoder returns a decoder for a sequence that starts with its
// first Add: like Decode, it drops the first token's leading space when
// the vocabulary adds a space prefix.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder {
	return &StreamDecoder{t: t, strip: t.v.addSpacePrefix, clean: t.v.cleanSpaces}
}

// NewContinuationDecoder returns a decoder for tokens that continue text
// already shown, such as the tokens generated after a prompt. It differs
// from NewStreamDecoder in two ways, both as llama.cpp's server and CLI
// print generated text: the first token's leading space is kept (" time"
// after "Once upon a" stays " time"), and control and unknown tokens
// ("<|im_start|>", "<unk>") decode to nothing. User-defined tokens are
// still written.
func (t *Tokenizer) NewContinuationDecoder() *StreamDecoder {
	return &StreamDecoder{t: t, clean: t.v.cleanSpaces, hideControl: true}
}

// Add decodes id and returns the text that is now complete, possibly "".
func (sd *StreamDecoder) Add(id int32) string {
	p := sd.t.piece(id)
	if sd.hideControl && id >= 0 && int(id) < len(sd.t.v.attrs) && sd.t.v.attrs[id]&(attrControl|attrUnknown) != 0 {
		p = ""
	}
	if sd.strip && len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	sd.strip = false
	sd.pending = append(sd.pending, p...)
	n := sd.ready()
	if n == 0 {
		return ""
	}
	out := sd.emit(sd.pending[:n])
	sd.pending = append(sd.pending[:0], sd.pending[n:]...)
	return out
}

// Flush returns everything not returned yet and resets the decoder's
// pending text; the next Add continues the same sequence.
func (sd *StreamDecoder) Flush() string {
	out := sd.emit(sd.pending)
	sd.pending = sd.pending[:0]
	return out
}

// ready returns how many pending bytes can be returned now: up to the last
// character that is complete, and, when cleaning, only up to a point that
// no later byte can change. The clean-up passes only look at a space or an
// apostrophe and the three bytes after it, so text ending in two bytes that
// are neither is final.
func (sd *StreamDecoder) ready() int {
	b := sd.pending
	n := len(b) - incompleteSuffix(b)
	if !sd.clean {
		return n
	}
	for ; n > 0; n-- {
		if !isCleanable(b[n-1]) && (n == 1 || !isCleanable(b[n-2])) {
			return n
		}
	}
	return 0
}

// isCleanable reports the bytes that the clean-up passes remove or look
// behind.
func isCleanable(c byte) bool { return c == ' ' || c == '\'' }

// emit cleans b when the vocabulary asks for it and makes it valid UTF-8.
func (sd *StreamDecoder) emit(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if sd.clean {
		b = cleanSpaces(append([]byte(nil), b...))
	}
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return string(out)
}

// incompleteSuffix returns the length of a trailing UTF-8 sequence that is
// a valid but unfinished character: bytes that more bytes could complete.
func incompleteSuffix(b []byte) int {
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return 0
		}
		if c < 0xC0 {
			continue // continuation byte: look further back
		}
		need := utf8Len(c)
		if c > 0xF4 || need <= k {
			return 0 // not a lead byte, or its character is complete
		}
		if !utf8.FullRune(b[len(b)-k:]) {
			return k
		}
		return 0
	}
	return 0
}
