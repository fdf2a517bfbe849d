package tokenizer

import "fmt"

// Pre-tokenization splits a text fragment into words before BPE merges
// run. llama.cpp (unicode_regex_split) applies a list of regular
// expressions in order; each one splits every current piece further: its
// matches become pieces, and so does the text between matches. The
// expressions below are llama.cpp's, keyed by tokenizer.ggml.pre.
//
// llama.cpp runs the GPT-2 and Llama 3 expressions through hand-written
// scanners and the others through std::regex, after replacing every
// non-ASCII code point by one byte for its class (letter, number,
// punctuation, other; white space by \v) when the expression uses \p{..}.
// Here every expression llama.cpp uses for the supported pre-tokenizers
// has a scanner (scanners below) that reproduces that behaviour; an
// expression without one is run by regexp2 on the same collapsed text
// (pretokenize_regexp.go), which also serves as the reference the
// scanners are tested against.

// The expressions, exactly as llama.cpp spells them.
const (
	exprGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`

	exprLlama3 = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	exprQwen2  = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

	exprNumber        = `\p{N}`
	exprNumbers       = `\p{N}+`
	exprThreeDigits   = `[0-9][0-9][0-9]`
	exprDefaultPunct  = `[\p{P}\$\+<=>\^~\|]+`
	exprFalconPunct   = "[\\p{P}\\$\\+<=>\\^~\\|`]+"
	exprNewline       = "[\r\n]" // literal CR and LF, as in llama.cpp's source
	exprSpaceLetters  = `\s?\p{L}+`
	exprSpacePunct    = `\s?\p{P}+`
	exprTrailingSpace = `\s+$`
	exprCJK           = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+"
	exprDeepSeekPunct = "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+"
	exprPoro          = " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"
)

// exprDeepSeekLetters is DeepSeek LLM's "\s?[A-Za-zµÀ-ÖØ-ö...]+": cased
// letters (Lu, Ll, Lt) of the ranges in deepSeekLetters.
var exprDeepSeekLetters = func() string {
	s := `\s?[`
	for _, r := range deepSeekLetters {
		if r[0] == r[1] {
			s += string(r[0])
		} else {
			s += fmt.Sprintf("%c-%c", r[0], r[1])
		}
	}
	return s + "]+"
}()

// deepSeekLetters lists the inclusive code point ranges of the letter class
// of DeepSeek LLM's pre-tokenizer, in the order its expression gives them.
var deepSeekLetters = [][2]rune{
	{0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
	{0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x376}, {0x377, 0x377}, {0x37B, 0x37D},
	{0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5},
	{0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
	{0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A},
	{0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57},
	{0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4},
	{0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
	{0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102},
	{0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
	{0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139},
	{0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2183}, {0x2184, 0x2184},
	{0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF2}, {0x2CF3, 0x2CF3},
	{0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E},
	{0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A},
	{0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2},
	{0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
}

// preTokenizer is one row of the pre-tokenizer table: the expressions and
// the flags that llama.cpp's loader sets for a tokenizer.ggml.pre value.
type preTokenizer struct {
	names        []string
	exprs        []string
	cleanSpaces  bool // decode applies clean_up_tokenization_spaces
	ignoreMerges bool // a word that is a whole token is not merged (Llama 3)
	addBOS       bool // default of add_bos_token
	noBOS        bool // no default BOS id (ChatGLM 4)
}

// preTokenizers is the table of supported pre-tokenizers. The first row is
// the default, used when tokenizer.ggml.pre is absent.
var preTokenizers = []*preTokenizer{
	{names: []string{"default"}, exprs: []string{exprDefaultPunct, exprGPT2, exprNumbers, exprThreeDigits}, cleanSpaces: true},
	{names: []string{"llama3", "llama-v3", "llama-bpe", "falcon3"}, exprs: []string{exprLlama3}, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	{names: []string{"dbrx", "smaug-bpe"}, exprs: []string{exprLlama3}, cleanSpaces: true},
	{names: []string{"chatglm-bpe"}, exprs: []string{exprLlama3}, cleanSpaces: true, noBOS: true},
	{names: []string{"deepseek-llm"}, exprs: []string{exprNewline, exprDeepSeekLetters, exprDeepSeekPunct, exprTrailingSpace, exprCJK, exprNumbers}},
	{names: []string{"deepseek-coder"}, exprs: []string{exprNewline, exprSpaceLetters, exprSpacePunct, exprCJK, exprNumber}},
	{names: []string{"falcon"}, exprs: []string{exprFalconPunct, exprGPT2, exprThreeDigits}, cleanSpaces: true},
	{names: []string{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais"}, exprs: []string{exprGPT2}, cleanSpaces: true},
	{names: []string{"starcoder", "refact", "codeshell", "exaone", "minerva-7b"}, exprs: []string{exprNumber, exprGPT2}, cleanSpaces: true},
	{names: []string{"command-r", "smollm"}, exprs: []string{exprNumber, exprGPT2}},
	{names: []string{"qwen2"}, exprs: []string{exprQwen2}},
	{names: []string{"stablelm2", "megrez"}, exprs: []string{exprQwen2}, cleanSpaces: true},
	{names: []string{"poro-chat"}, exprs: []string{exprPoro}},
	{names: []string{"bloom", "gpt3-finnish"}, exprs: []string{exprPoro}, cleanSpaces: true},
	{names: []string{"viking"}, exprs: []string{exprPoro, exprNumber}},
}

// unsupportedPre names pre-tokenizers that llama.cpp knows but this package
// does not implement, with the reason.
var unsupportedPre = map[string]string{
	"deepseek-v3": `its expression uses \p{M} and \p{S}, which llama.cpp's regex fallback does not translate`,
	"tekken":      "look-ahead letter-case classes are not implemented",
	"chameleon":   "image and sentinel token expressions are not implemented",
}

// lookupPre returns the table row for a tokenizer.ggml.pre value.
func lookupPre(name string) (*preTokenizer, error) {
	if name == "" {
		return preTokenizers[0], nil
	}
	for _, p := range preTokenizers {
		for _, n := range p.names {
			if n == name {
				return p, nil
			}
		}
	}
	if why, ok := unsupportedPre[name]; ok {
		return nil, &UnsupportedError{Key: keyPre, Value: name, Reason: why}
	}
	return nil, &UnsupportedError{Key: keyPre, Value: name, Reason: "unknown pre-tokenizer"}
}

// compile returns the split steps of the row: a scanner per expression,
// or regexp2 where there is none.
func (p *preTokenizer) compile() ([]splitStep, error) {
	steps := make([]splitStep, len(p.exprs))
	for i, e := range p.exprs {
		if s, ok := scanners[e]; ok {
			steps[i] = s
			continue
		}
		s, err := compileRegexpStep(e)
		if err != nil {
			return nil, err
		}
		steps[i] = s
	}
	return steps, nil
}

// scanners maps an expression to the hand-written step that splits text
// the way llama.cpp does with it.
var scanners = map[string]splitStep{
	exprGPT2:            gpt2Step{},
	exprLlama3:          llama3Step{maxDigits: 3},
	exprQwen2:           llama3Step{maxDigits: 1},
	exprNumber:          classStep{in: isNumber, min: 1, max: 1},
	exprNumbers:         classStep{in: isNumber, min: 1},
	exprThreeDigits:     classStep{in: isASCIIDigit, min: 3, max: 3},
	exprDefaultPunct:    classStep{in: isDefaultPunct, min: 1},
	exprFalconPunct:     classStep{in: isFalconPunct, min: 1},
	exprNewline:         classStep{in: isNewline, min: 1, max: 1},
	exprSpaceLetters:    classStep{prefix: prefixSpace, in: isLetter, min: 1},
	exprSpacePunct:      classStep{prefix: prefixSpace, in: isPunct, min: 1},
	exprTrailingSpace:   trailingSpaceStep{},
	exprCJK:             classStep{in: isCJK, min: 1},
	exprDeepSeekPunct:   classStep{prefix: prefixSpace, in: isDeepSeekPunct, min: 1},
	exprDeepSeekLetters: classStep{prefix: prefixSpace, in: isDeepSeekLetter, min: 1},
}

// splitState is one fragment decoded into code points, with their class
// flags and byte offsets, plus the piece ends being built.
type splitState struct {
	cpts  []rune
	flags []uint16
	offs  []int32 // byte offset of each code point; offs[len(cpts)] is the text length
	ends  []int32
	next  []int32
}

// load decodes text. Invalid UTF-8 bytes become code points of their own
// (see decodeRune); llama.cpp rejects such text.
func (st *splitState) load(text string) {
	if cap(st.offs) <= len(text) {
		st.cpts = make([]rune, 0, len(text))
		st.flags = make([]uint16, 0, len(text))
		st.offs = make([]int32, 0, len(text)+1)
	}
	st.cpts, st.flags, st.offs = st.cpts[:0], st.flags[:0], st.offs[:0]
	for i := 0; i < len(text); {
		r, n := decodeRune(text[i:])
		st.cpts = append(st.cpts, r)
		st.flags = append(st.flags, runeFlags(r))
		st.offs = append(st.offs, int32(i))
		i += n
	}
	st.offs = append(st.offs, int32(len(text)))
}

// run applies the steps in order and returns the ends of the pieces, as
// code point indices.
func (st *splitState) run(steps []splitStep) []int32 {
	st.ends = st.ends[:0]
	if len(st.cpts) == 0 {
		return st.ends
	}
	st.ends = append(st.ends, int32(len(st.cpts)))
	for _, s := range steps {
		next := st.next[:0]
		start := 0
		for _, e := range st.ends {
			next = s.split(st, start, int(e), next)
			start = int(e)
		}
		st.ends, st.next = next, st.ends
	}
	return st.ends
}

// splitStep splits one piece [start, end) of the code points: it appends
// the ends of the sub-pieces to out, the last one being end.
type splitStep interface {
	split(st *splitState, start, end int, out []int32) []int32
}

// pieceWriter appends piece ends, dropping empty pieces.
type pieceWriter struct {
	out  []int32
	prev int
}

func (w *pieceWriter) add(end int) {
	if end > w.prev {
		w.out = append(w.out, int32(end))
		w.prev = end
	}
}

// matchWriter emits regex-style matches: the text between two matches
// becomes a piece of its own.
func (w *pieceWriter) match(start, end int) {
	w.add(start)
	w.add(end)
}

// gpt2Step is llama.cpp's scanner for exprGPT2:
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
type gpt2Step struct{}

func (gpt2Step) split(st *splitState, start, end int, out []int32) []int32 {
	w := pieceWriter{out: out, prev: start}
	cpt := func(i int) rune {
		if i < end {
			return st.cpts[i]
		}
		return -1
	}
	flags := func(i int) uint16 {
		if i < end {
			return st.flags[i]
		}
		return 0
	}
	for pos := start; pos < end; {
		c := st.cpts[pos]
		f := st.flags[pos]
		if c == '\'' && pos+1 < end {
			c1 := st.cpts[pos+1]
			if c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd' {
				pos += 2
				w.add(pos)
				continue
			}
			if pos+2 < end {
				c2 := st.cpts[pos+2]
				if c1 == 'r' && c2 == 'e' || c1 == 'v' && c2 == 'e' || c1 == 'l' && c2 == 'l' {
					pos += 3
					w.add(pos)
					continue
				}
			}
		}
		f2 := f
		if c == ' ' {
			f2 = flags(pos + 1)
		}
		if f2&cpLetter != 0 { // ' ?\p{L}+'
			if c == ' ' {
				pos++
			}
			for flags(pos)&cpLetter != 0 {
				pos++
			}
			w.add(pos)
			continue
		}
		if f2&cpNumber != 0 { // ' ?\p{N}+'
			if c == ' ' {
				pos++
			}
			for flags(pos)&cpNumber != 0 {
				pos++
			}
			w.add(pos)
			continue
		}
		if isOther(f2) { // ' ?[^\s\p{L}\p{N}]+'
			if c == ' ' {
				pos++
			}
			for isOther(flags(pos)) {
				pos++
			}
			w.add(pos)
			continue
		}
		ws := 0
		for flags(pos+ws)&cpWhitespace != 0 {
			ws++
		}
		switch {
		case ws > 1 && cpt(pos+ws) != -1: // '\s+(?!\S)': leave the last space to the next word
			pos += ws - 1
		case ws > 0: // '\s+'
			pos += ws
		default:
			pos++
		}
		w.add(pos)
	}
	return w.out
}

// isOther reports [^\s\p{L}\p{N}] for a code point inside the piece.
func isOther(f uint16) bool {
	return f != 0 && f&(cpWhitespace|cpLetter|cpNumber) == 0
}

// llama3Step is llama.cpp's scanner for the Llama 3 expression
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ and, with maxDigits 1,
// for Qwen 2's, which differs only in taking digits one at a time.
type llama3Step struct{ maxDigits int }

func (s llama3Step) split(st *splitState, start, end int, out []int32) []int32 {
	w := pieceWriter{out: out, prev: start}
	cpt := func(i int) rune {
		if i < end {
			return st.cpts[i]
		}
		return -1
	}
	flags := func(i int) uint16 {
		if i < end {
			return st.flags[i]
		}
		return 0
	}
	lower := func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	for pos := start; pos < end; {
		c := st.cpts[pos]
		f := st.flags[pos]
		if c == '\'' && pos+1 < end { // case-insensitive contractions
			c1 := lower(st.cpts[pos+1])
			if c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd' {
				pos += 2
				w.add(pos)
				continue
			}
			if pos+2 < end {
				c2 := lower(st.cpts[pos+2])
				if c1 == 'r' && c2 == 'e' || c1 == 'v' && c2 == 'e' || c1 == 'l' && c2 == 'l' {
					pos += 3
					w.add(pos)
					continue
				}
			}
		}
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if c != '\r' && c != '\n' && f&cpNumber == 0 && (f&cpLetter != 0 || flags(pos+1)&cpLetter != 0) {
			pos++
			for flags(pos)&cpLetter != 0 {
				pos++
			}
			w.add(pos)
			continue
		}
		if f&cpNumber != 0 { // \p{N}{1,maxDigits}
			n := 0
			for flags(pos)&cpNumber != 0 {
				pos++
				if n++; n == s.maxDigits {
					w.add(pos)
					n = 0
				}
			}
			w.add(pos)
			continue
		}
		// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
		f2 := f
		if c == ' ' {
			f2 = flags(pos + 1)
		}
		if f2&(cpWhitespace|cpLetter|cpNumber) == 0 {
			if c == ' ' {
				pos++
			}
			for isOther(flags(pos)) {
				pos++
			}
			for r := cpt(pos); r == '\r' || r == '\n'; r = cpt(pos) {
				pos++
			}
			w.add(pos)
			continue
		}
		ws, lastNewline := 0, -1
		for flags(pos+ws)&cpWhitespace != 0 {
			if r := cpt(pos + ws); r == '\r' || r == '\n' {
				lastNewline = pos + ws + 1
			}
			ws++
		}
		switch {
		case lastNewline >= 0: // \s*[\r\n]+
			pos = lastNewline
		case ws > 1 && cpt(pos+ws) != -1: // \s+(?!\S)
			pos += ws - 1
		case ws > 0: // \s+
			pos += ws
		default:
			pos++
		}
		w.add(pos)
	}
	return w.out
}

// Prefix kinds of a classStep.
const (
	prefixNone  = iota
	prefixSpace // \s?
)

// classStep matches P?C{min,max} left to right, where P is an optional
// white-space prefix and C a class of code points; max 0 means unbounded.
// As in llama.cpp's std::wregex path, non-ASCII white space is seen as \v.
type classStep struct {
	prefix   int
	in       func(r rune, f uint16) bool
	min, max int
}

func (s classStep) split(st *splitState, start, end int, out []int32) []int32 {
	w := pieceWriter{out: out, prev: start}
	at := func(i int) bool {
		r, f := st.cpts[i], st.flags[i]
		if r > 0x7F && f&cpWhitespace != 0 {
			r = '\v'
		}
		return s.in(r, f)
	}
	// run returns how many code points of C start at i, up to max.
	run := func(i int) int {
		n := 0
		for i+n < end && (s.max == 0 || n < s.max) && at(i+n) {
			n++
		}
		return n
	}
	for pos := start; pos < end; {
		if s.prefix == prefixSpace && st.flags[pos]&cpWhitespace != 0 {
			if n := run(pos + 1); n >= s.min {
				w.match(pos, pos+1+n)
				pos += 1 + n
				continue
			}
		}
		if n := run(pos); n >= s.min && n > 0 {
			w.match(pos, pos+n)
			pos += n
			continue
		}
		pos++
	}
	w.add(end)
	return w.out
}

// trailingSpaceStep is \s+$: the white space that ends the piece.
type trailingSpaceStep struct{}

func (trailingSpaceStep) split(st *splitState, start, end int, out []int32) []int32 {
	w := pieceWriter{out: out, prev: start}
	i := end
	for i > start && st.flags[i-1]&cpWhitespace != 0 {
		i--
	}
	w.add(i)
	w.add(end)
	return w.out
}

// Class predicates. r is the code point as the expression sees it; f its
// flags.

func isNumber(_ rune, f uint16) bool { return f&cpNumber != 0 }
func isLetter(_ rune, f uint16) bool { return f&cpLetter != 0 }
func isPunct(_ rune, f uint16) bool  { return f&cpPunctuation != 0 }

func isASCIIDigit(r rune, _ uint16) bool { return r >= '0' && r <= '9' }
func isNewline(r rune, _ uint16) bool    { return r == '\r' || r == '\n' }

func isDefaultPunct(r rune, f uint16) bool {
	return f&cpPunctuation != 0 || r == '$' || r == '+' || r == '<' || r == '=' || r == '>' || r == '^' || r == '~' || r == '|'
}

func isFalconPunct(r rune, f uint16) bool { return isDefaultPunct(r, f) || r == '`' }

func isCJK(r rune, _ uint16) bool {
	return r >= 0x4E00 && r <= 0x9FA5 || r >= 0x0800 && r <= 0x4E00 || r >= 0xAC00 && r <= 0xD7FF
}

func isDeepSeekPunct(r rune, _ uint16) bool {
	return r >= '!' && r <= '/' || r >= ':' && r <= '~' || r >= 0xFF01 && r <= 0xFF0F ||
		r >= 0xFF1A && r <= 0xFF5E || r >= 0x2018 && r <= 0x201F || r >= 0x3000 && r <= 0x3002
}

func isDeepSeekLetter(r rune, _ uint16) bool {
	if r < 0x80 {
		return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z'
	}
	lo, hi := 0, len(deepSeekLetters)
	for lo < hi { // the ranges are sorted
		m := (lo + hi) / 2
		switch {
		case r < deepSeekLetters[m][0]:
			hi = m
		case r > deepSeekLetters[m][1]:
			lo = m + 1
		default:
			return true
		}
	}
	return false
}
