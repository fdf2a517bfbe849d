package chat

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// Chat templates are written for Python's Jinja2 as HuggingFace transformers
// configures it: trim_blocks, lstrip_blocks and keep_trailing_newline off.
// ardanlabs/jinja v1.8.0 applies the whitespace rules to the nearest text
// segment rather than the adjacent one, so in "Text {{ x }}{%- endif %}" it
// strips the space after "Text", and it eats the newline in
// "{% if a %}{{ x }}\n". normalize applies every whitespace rule itself and
// hands the engine a source without text segments, which it then has
// nothing to trim in (instrument.go then adds the calls that bound the
// render):
//
//   - each run of literal text becomes a string expression {{ '…' }};
//   - the -/+ markers are removed from the tags, comments are dropped;
//   - newlines that the rules removed are kept inside the neighbouring tag
//     (or an empty comment), so that the engine's line numbers in error
//     messages still match the original source.
//
// The rules, as in Jinja2's lexer (jinja2/lexer.py):
//
//   - \r\n and \r are read as \n, and one trailing newline of the source
//     is dropped (keep_trailing_newline=False);
//   - "{%-", "{{-", "{#-" strip all whitespace before the tag, "-%}",
//     "-}}", "-#}" all whitespace after it;
//   - otherwise a block or comment tag strips the spaces and tabs between
//     the start of its line and itself when nothing else is on that part of
//     the line (lstrip_blocks; "{%+" opts out), and removes one newline
//     right after itself (trim_blocks; "+%}" opts out, and so does the end
//     of {% raw %}).

type tagKind int

const (
	tagExpr tagKind = iota
	tagBlock
	tagComment
)

type tag struct {
	kind        tagKind
	start, end  int    // offsets of the opener and just past the closer
	content     string // between the markers
	left, right byte   // '-', '+' or 0
}

// isBlockLike reports whether lstrip_blocks and trim_blocks apply.
func (t *tag) isBlockLike() bool { return t.kind != tagExpr }

// SyntaxError reports a chat template whose tags cannot be delimited, or
// that uses what this package refuses to compile (a reserved name, a
// method that changes a value in place).
type SyntaxError struct {
	Line int    // 1-based line of the offending tag
	Msg  string // what is wrong
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

var (
	newlines = strings.NewReplacer("\r\n", "\n", "\r", "\n")
	quoter   = strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	endRaw   = regexp.MustCompile(`\{%([-+]?)\s*endraw\s*([-+]?)%\}`)
)

// normalize rewrites a Jinja2 chat template as described above, with the
// calls of the guard when instrumented (always, but in tests that compare
// with the plain source).
func normalize(src string, instrumented bool) (string, error) {
	src = newlines.Replace(src)
	src = strings.TrimSuffix(src, "\n")

	in := &instrumenter{src: src, plain: !instrumented}
	var out strings.Builder
	var prev *tag
	pos := 0
	lineStarting := true
	for {
		t, err := nextTag(src, pos)
		if err != nil {
			return "", err
		}
		textEnd := len(src)
		if t != nil {
			textEnd = t.start
		}
		text := src[pos:textEnd]
		lost := strings.Count(text, "\n")
		if prev != nil {
			text, lineStarting = trimAfter(prev, text, prev.isBlockLike())
		}
		if t != nil {
			text = trimBefore(t, text, lineStarting)
		}
		lost -= strings.Count(text, "\n")
		emitText(&out, in, text, lost)
		if t == nil {
			return out.String(), nil
		}

		if t.kind == tagBlock && strings.TrimSpace(t.content) == "raw" {
			m := endRaw.FindStringSubmatchIndex(src[t.end:])
			if m == nil {
				return "", &SyntaxError{Line: lineOf(src, t.start), Msg: "raw block without endraw"}
			}
			end := &tag{kind: tagBlock, start: t.end + m[0], end: t.end + m[1],
				left: marker(src, t.end+m[2], t.end+m[3]), right: marker(src, t.end+m[4], t.end+m[5])}
			raw := src[t.end:end.start]
			lost := strings.Count(raw, "\n")
			// The end of "{% raw %}" strips with "-" only: no trim_blocks.
			raw, lineStarting = trimAfter(t, raw, false)
			raw = trimBefore(end, raw, lineStarting)
			lost -= strings.Count(raw, "\n")
			emitComment(&out, strings.Count(src[t.start:t.end], "\n"))
			emitText(&out, in, raw, lost)
			emitComment(&out, strings.Count(src[end.start:end.end], "\n"))
			prev, pos = end, end.end
			continue
		}

		switch t.kind {
		case tagExpr, tagBlock:
			emit := in.expr
			if t.kind == tagBlock {
				emit = in.block
			}
			s, err := emit(t)
			if err != nil {
				return "", err
			}
			out.WriteString(s)
		case tagComment:
			emitComment(&out, strings.Count(t.content, "\n"))
		}
		prev, pos = t, t.end
	}
}

func marker(src string, i, j int) byte {
	if i < j {
		return src[i]
	}
	return 0
}

// trimAfter applies the right-hand rule of prev to the text that follows
// it and reports whether the whitespace it consumed ended a line (Jinja2's
// line_starting for the next tag).
func trimAfter(prev *tag, text string, trimBlocks bool) (string, bool) {
	rest := text
	switch {
	case prev.right == '-':
		rest = strings.TrimLeftFunc(text, unicode.IsSpace)
	case trimBlocks && prev.right != '+':
		rest = strings.TrimPrefix(text, "\n")
	}
	return rest, strings.HasSuffix(text[:len(text)-len(rest)], "\n")
}

// trimBefore applies the left-hand rule of t to the text before it.
func trimBefore(t *tag, text string, lineStarting bool) string {
	switch {
	case t.left == '-':
		return strings.TrimRightFunc(text, unicode.IsSpace)
	case t.isBlockLike() && t.left != '+':
		lpos := strings.LastIndexByte(text, '\n') + 1
		if (lpos > 0 || lineStarting) && strings.Trim(text[lpos:], " \t") == "" {
			return text[:lpos]
		}
	}
	return text
}

// emitText writes text as a string expression, followed by the lost
// newlines inside the tag.
func emitText(out *strings.Builder, in *instrumenter, text string, lost int) {
	if text == "" {
		emitComment(out, lost)
		return
	}
	out.WriteString(in.text("'" + quoter.Replace(text) + "'" + strings.Repeat("\n", lost)))
}

// emitComment writes an empty comment spanning n newlines, if n > 0.
func emitComment(out *strings.Builder, n int) {
	if n > 0 {
		out.WriteString("{#" + strings.Repeat("\n", n) + "#}")
	}
}

func lineOf(src string, off int) int { return strings.Count(src[:off], "\n") + 1 }

// nextTag finds the first tag at or after pos, or returns nil.
func nextTag(src string, pos int) (*tag, error) {
	for {
		i := strings.IndexByte(src[pos:], '{')
		if i < 0 || pos+i+1 >= len(src) {
			return nil, nil
		}
		start := pos + i
		var kind tagKind
		switch src[start+1] {
		case '{':
			kind = tagExpr
		case '%':
			kind = tagBlock
		case '#':
			kind = tagComment
		default:
			pos = start + 1
			continue
		}
		t := &tag{kind: kind, start: start}
		p := start + 2
		if p < len(src) && (src[p] == '-' || src[p] == '+') {
			t.left = src[p]
			p++
		}
		closer := map[tagKind]string{tagExpr: "}}", tagBlock: "%}", tagComment: "#}"}[kind]
		end, err := findCloser(src, p, closer, kind != tagComment)
		if err != nil {
			return nil, &SyntaxError{Line: lineOf(src, start), Msg: err.Error()}
		}
		contentEnd := end
		if end > p {
			if m := src[end-1]; m == '-' || (m == '+' && kind != tagExpr) {
				t.right = m
				contentEnd = end - 1
			}
		}
		t.content = src[p:contentEnd]
		t.end = end + 2
		return t, nil
	}
}

// findCloser returns the offset of closer at or after p, skipping quoted
// strings when quotes is set.
func findCloser(src string, p int, closer string, quotes bool) (int, error) {
	for p < len(src) {
		c := src[p]
		if quotes && (c == '\'' || c == '"') {
			p++
			for p < len(src) && src[p] != c {
				if src[p] == '\\' {
					p++
				}
				p++
			}
			if p >= len(src) {
				return 0, fmt.Errorf("unterminated string")
			}
			p++
			continue
		}
		if strings.HasPrefix(src[p:], closer) {
			return p, nil
		}
		p++
	}
	return 0, fmt.Errorf("tag not closed with %q", closer)
}
