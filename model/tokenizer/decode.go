package tokenizer

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// tokenToPiece returns the bytes that token id stands for in decoded text,
// with special tokens rendered as their text (llama.cpp's token_to_piece
// with special=true). Unused and undefined tokens decode to nothing.
func (v *vocab) tokenToPiece(id int32) string {
	text := v.tokens[id]
	a := v.attrs[id]
	if a&(attrUnknown|attrControl|attrUserDefined) != 0 {
		return text
	}
	switch v.kind {
	case kindSPM:
		if a&attrNormal != 0 {
			return strings.ReplaceAll(text, spaceMarker, " ")
		}
		if a&attrByte != 0 {
			if b, ok := parseByteToken(text); ok {
				return string([]byte{b})
			}
		}
	case kindBPE:
		if a&attrNormal != 0 {
			return decodeByteLevel(text)
		}
	}
	return ""
}

// spaceMarker is U+2581 LOWER ONE EIGHTH BLOCK, which SentencePiece
// vocabularies use for a space.
const spaceMarker = "\u2581"

// parseByteToken reads a byte-fallback token "<0xNN>".
func parseByteToken(text string) (byte, bool) {
	if len(text) != 6 || !strings.HasPrefix(text, "<0x") || text[5] != '>' {
		return 0, false
	}
	b, err := strconv.ParseUint(text[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(b), true
}

// decodeByteLevel maps the code points of a byte-level BPE token back to
// bytes. A code point outside the byte mapping is written as llama.cpp
// does: "[UNK_BYTE_0x" + its UTF-8 in hex + the whole token text + "]".
func decodeByteLevel(text string) string {
	var b []byte
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		if c, ok := runeToByte[r]; ok && (r != utf8.RuneError || n > 1) {
			b = append(b, c)
		} else {
			b = append(b, "[UNK_BYTE_0x"...)
			for _, c := range []byte(text[i : i+n]) {
				b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
			}
			b = append(b, text...)
			b = append(b, ']')
		}
		i += n
	}
	return string(b)
}

// TokenBytes returns the bytes id decodes to inside a sequence, as Decode
// writes them: " Once" for "▁Once", the byte of a byte token <0xNN> (so
// possibly not UTF-8), the text of a control token ("</s>"); "" for an id
// outside the vocabulary. Decode's treatment of a sequence's first token
// (the dropped space prefix) and its clean-up passes are not applied.
func (t *Tokenizer) TokenBytes(id int32) string { return t.piece(id) }

// piece returns the decoded bytes of id, or "" for an id outside the
// vocabulary.
func (t *Tokenizer) piece(id int32) string {
	if id < 0 || int(id) >= len(t.v.pieces) {
		return ""
	}
	return t.v.pieces[id]
}

// Decode returns the text of ids, as llama.cpp's llama_detokenize does with
// remove_special=false and unparse_special=true:
//
//   - control, user-defined and unknown tokens are written as their text
//     ("<s>", "<|im_end|>"); unused tokens and ids outside the vocabulary
//     are written as nothing;
//   - SentencePiece vocabularies turn U+2581 into a space and byte tokens
//     <0xNN> into their byte; byte-level BPE vocabularies map each code
//     point of a token back to its byte;
//   - when the vocabulary adds a space prefix (SentencePiece by default),
//     one leading space of the first token is dropped, undoing that prefix;
//   - BPE vocabularies whose pre-tokenizer asks for it (GPT-2, Llama 3 and
//     others; see llama.cpp's clean_spaces) get the clean-up passes of
//     Hugging Face's clean_up_tokenization_spaces: " ?", " !", " .", " ,"
//     lose their space, a lone " ' " loses both, and " 's", " 'm", " 're",
//     " 've" lose theirs.
//
// The result holds the bytes as the tokens give them: a sequence of ids
// that splits a multi-byte character, or byte tokens that do not form
// UTF-8, yields invalid UTF-8. A StreamDecoder never does.
func (t *Tokenizer) Decode(ids []int32) string {
	b := make([]byte, 0, len(ids)*4)
	strip := t.v.addSpacePrefix
	for _, id := range ids {
		p := t.piece(id)
		if strip && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		strip = false
		b = append(b, p...)
	}
	if t.v.cleanSpaces {
		b = cleanSpaces(b)
	}
	return string(b)
}

// cleanSpaces applies llama.cpp's three clean-up passes in place and
// returns the shortened slice. Each pass reads its input left to right and
// writes at or before the read position.
func cleanSpaces(s []byte) []byte {
	// Pass 1: a space before ? ! . , is dropped.
	w := 0
	for i, c := range s {
		if i > 0 && s[i-1] == ' ' && (c == '?' || c == '!' || c == '.' || c == ',') {
			w--
		}
		s[w] = c
		w++
	}
	s = s[:w]

	// Pass 2: " ' " becomes "'". The space after the apostrophe is
	// skipped, and it no longer counts as a space for the next character.
	w = 0
	skipped := -1 // index of the last skipped space
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i > 0 && c == '\'' && i+1 < len(s) && s[i-1] == ' ' && i-1 != skipped && s[i+1] == ' ' {
			w--
			s[w] = c
			w++
			i++
			skipped = i
			continue
		}
		s[w] = c
		w++
	}
	s = s[:w]

	// Pass 3: the space of " 's", " 'm", " 're", " 've" is dropped.
	w = 0
	for i, c := range s {
		if i > 0 && s[i-1] == ' ' && c == '\'' && i+1 < len(s) {
			x1 := s[i+1]
			switch {
			case x1 == 's' || x1 == 'm':
				w--
			case i+2 < len(s) && (x1 == 'r' || x1 == 'v') && s[i+2] == 'e':
				w--
			}
		}
		s[w] = c
		w++
	}
	return s[:w]
}
