package tokenizer

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// Codepoint classes used by the pre-tokenizers. They mirror the flags of
// llama.cpp's unicode tables: one general-category bit (\p{N}, \p{L},
// \p{Z}, \p{M}, \p{P}, \p{S}, \p{C}; unassigned code points count as
// \p{C}) plus a whitespace bit for the Unicode White_Space property.
// A zero value means "no code point" (outside the text being split).
const (
	cpUndefined   uint16 = 1 << iota // not a code point: an invalid UTF-8 byte
	cpNumber                         // \p{N}
	cpLetter                         // \p{L}
	cpSeparator                      // \p{Z}
	cpMark                           // \p{M}
	cpPunctuation                    // \p{P}
	cpSymbol                         // \p{S}
	cpControl                        // \p{C}, including unassigned code points
	cpWhitespace                     // White_Space property (\s)
)

var (
	bmpFlagsOnce sync.Once
	bmpFlags     []uint16 // flags of U+0000..U+FFFF
)

// computeFlags classifies one code point with the unicode package.
func computeFlags(r rune) uint16 {
	var f uint16
	switch {
	case unicode.IsLetter(r):
		f = cpLetter
	case unicode.IsNumber(r):
		f = cpNumber
	case unicode.IsPunct(r):
		f = cpPunctuation
	case unicode.IsSymbol(r):
		f = cpSymbol
	case unicode.IsMark(r):
		f = cpMark
	case unicode.In(r, unicode.Z):
		f = cpSeparator
	default:
		f = cpControl // Cc, Cf, Co, Cs and unassigned
	}
	if unicode.Is(unicode.White_Space, r) {
		f |= cpWhitespace
	}
	return f
}

// runeFlags returns the class flags of r. Values outside the Unicode range
// (used for invalid UTF-8 bytes) get cpUndefined.
func runeFlags(r rune) uint16 {
	if r < 0 || r > unicode.MaxRune {
		return cpUndefined
	}
	if r < 0x10000 {
		bmpFlagsOnce.Do(func() {
			t := make([]uint16, 0x10000)
			for c := range t {
				t[c] = computeFlags(rune(c))
			}
			bmpFlags = t
		})
		return bmpFlags[r]
	}
	return computeFlags(r)
}

// invalidRuneBase is added to an invalid UTF-8 byte to give it a code point
// value of its own, outside the Unicode range, so that the byte survives
// pre-tokenization unchanged.
const invalidRuneBase = unicode.MaxRune + 1

// decodeRune decodes the code point at the start of s. An invalid byte
// becomes invalidRuneBase+byte with width 1.
func decodeRune(s string) (rune, int) {
	c := s[0]
	if c < utf8.RuneSelf {
		return rune(c), 1
	}
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return invalidRuneBase + rune(c), 1
	}
	return r, n
}

// utf8Len is the length of a UTF-8 sequence judged by its first byte only,
// as SentencePiece and llama.cpp split text into symbols: continuation
// bytes count as single-byte symbols.
func utf8Len(lead byte) int {
	switch lead >> 4 {
	case 0xC, 0xD:
		return 2
	case 0xE:
		return 3
	case 0xF:
		return 4
	}
	return 1
}

// Byte-level BPE (GPT-2) maps every byte to a printable code point so that
// vocabulary entries are text: printable Latin-1 bytes map to themselves and
// the 68 others to U+0100 and up, in byte order.
var (
	byteToRune [256]rune   // byte → code point
	byteToText [256]string // byte → UTF-8 of byteToRune
	runeToByte = map[rune]byte{}
)

func init() {
	printable := func(b int) bool {
		return b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF
	}
	next := rune(256)
	for b := 0; b < 256; b++ {
		r := rune(b)
		if !printable(b) {
			r = next
			next++
		}
		byteToRune[b] = r
		byteToText[b] = string(r)
		runeToByte[r] = byte(b)
	}
}

// isCSpace reports whether b is white space for C's isspace in the "C"
// locale, which llama.cpp uses to strip text around special tokens.
func isCSpace(b byte) bool {
	return b == ' ' || b >= '\t' && b <= '\r'
}
