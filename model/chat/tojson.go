package chat

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// The tojson filter. transformers defines it as json.dumps(x,
// ensure_ascii=False, indent=indent, separators=separators,
// sort_keys=sort_keys), and chat templates print tool definitions and
// tool-call arguments with it, so its output becomes prompt text. The
// engine's own tojson sorts the keys of mappings and escapes <, > and &
// when given an indent (Llama 3.1 writes its tools with tojson(indent=4)),
// so instrument replaces every use of the filter with hookToJSON, which
// writes what Python writes: keys in insertion order, ", " and ": "
// between items and keys (",", ": " with an indent), non-ASCII text and
// HTML characters as they are, floats as Python's repr.

// tojsonFilter finds uses of the filter in code whose strings are blanked.
var tojsonFilter = regexp.MustCompile(`\|\s*tojson\b`)

// rewriteFilters replaces the tojson filters of the code of a tag with
// hookToJSON, leaving string literals alone.
func rewriteFilters(content string) string {
	locs := tojsonFilter.FindAllStringIndex(blankStrings(content), -1)
	if locs == nil {
		return content
	}
	var b strings.Builder
	last := 0
	for _, l := range locs {
		b.WriteString(content[last:l[0]])
		b.WriteString("|" + hookToJSON)
		last = l[1]
	}
	b.WriteString(content[last:])
	return b.String()
}

// toJSON is the tojson filter: args[0] is the value; the keyword
// arguments indent, separators and sort_keys are Python's. Its output
// counts against MaxOutput and values nest at most maxValueDepth deep.
func (g *guard) toJSON(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if err := g.check(); err != nil {
		return jinja.Undefined(), err
	}
	if len(args) != 1 {
		return jinja.Undefined(), errors.New("tojson takes no positional arguments")
	}
	e := jsonEncoder{item: ", ", key: ": ", budget: g.lim.MaxOutput - g.output}
	if v, ok := kwargs["indent"]; ok && !v.IsNone() && !v.IsUndefined() {
		switch {
		case v.IsInt():
			n := v.AsInt()
			if n < 0 || n > 64 {
				return jinja.Undefined(), fmt.Errorf("tojson: indent %d out of range [0, 64]", n)
			}
			e.indent, e.indented = strings.Repeat(" ", int(n)), true
		case v.IsString():
			if len(v.AsString()) > 64 {
				return jinja.Undefined(), errors.New("tojson: indent longer than 64 characters")
			}
			e.indent, e.indented = v.AsString(), true
		default:
			return jinja.Undefined(), errors.New("tojson: indent must be an integer or a string")
		}
		e.item = ","
	}
	if v, ok := kwargs["separators"]; ok && !v.IsNone() && !v.IsUndefined() {
		if !v.IsList() || v.AsList().Len() != 2 || !v.AsList().Items[0].IsString() || !v.AsList().Items[1].IsString() {
			return jinja.Undefined(), errors.New("tojson: separators must be two strings")
		}
		e.item, e.key = v.AsList().Items[0].AsString(), v.AsList().Items[1].AsString()
	}
	if v, ok := kwargs["sort_keys"]; ok && v.IsBool() {
		e.sortKeys = v.AsBool()
	}
	if err := e.value(args[0], 0); err != nil {
		var le *LimitError
		if errors.As(err, &le) {
			return jinja.Undefined(), g.fail(le)
		}
		return jinja.Undefined(), err
	}
	return jinja.NewString(e.b.String()), nil
}

// jsonEncoder writes a value as Python's json.dumps does.
type jsonEncoder struct {
	b        strings.Builder
	item     string // between items
	key      string // between a key and its value
	indent   string
	indented bool // indent was given (even ""): a newline before each item
	sortKeys bool
	budget   int
}

func (e *jsonEncoder) write(s string) error {
	e.b.WriteString(s)
	if e.b.Len() > e.budget {
		return &LimitError{Limit: "MaxOutput", Max: int64(e.budget), What: "tojson output larger than the output limit"}
	}
	return nil
}

func (e *jsonEncoder) newline(depth int) error {
	if !e.indented {
		return nil
	}
	return e.write("\n" + strings.Repeat(e.indent, depth))
}

func (e *jsonEncoder) value(v jinja.Value, depth int) error {
	if depth > maxValueDepth {
		return &LimitError{Limit: "MaxNesting", Max: maxValueDepth, What: fmt.Sprintf("tojson of a value nested deeper than %d", maxValueDepth)}
	}
	switch {
	case v.IsNone(), v.IsUndefined():
		return e.write("null")
	case v.IsBool():
		if v.AsBool() {
			return e.write("true")
		}
		return e.write("false")
	case v.IsInt():
		return e.write(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		return e.write(pyFloat(v.AsFloat()))
	case v.IsString():
		return e.write(pyString(v.AsString()))
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			return e.write("[]")
		}
		if err := e.write("["); err != nil {
			return err
		}
		for i, it := range items {
			if i > 0 {
				if err := e.write(e.item); err != nil {
					return err
				}
			}
			if err := e.newline(depth + 1); err != nil {
				return err
			}
			if err := e.value(it, depth+1); err != nil {
				return err
			}
		}
		if err := e.newline(depth); err != nil {
			return err
		}
		return e.write("]")
	case v.IsDict():
		d := v.AsDict()
		keys := d.Keys
		if e.sortKeys {
			keys = append([]string(nil), keys...)
			sort.Strings(keys)
		}
		if len(keys) == 0 {
			return e.write("{}")
		}
		if err := e.write("{"); err != nil {
			return err
		}
		for i, k := range keys {
			if i > 0 {
				if err := e.write(e.item); err != nil {
					return err
				}
			}
			if err := e.newline(depth + 1); err != nil {
				return err
			}
			if err := e.write(pyString(k) + e.key); err != nil {
				return err
			}
			if err := e.value(d.Data[k], depth+1); err != nil {
				return err
			}
		}
		if err := e.newline(depth); err != nil {
			return err
		}
		return e.write("}")
	}
	return fmt.Errorf("tojson: cannot encode %s", v.String())
}

// pyFloat formats f as Python's float repr (which json.dumps uses):
// the shortest digits that read back as f, in fixed notation with at
// least one decimal for exponents from -4 to 15, otherwise as d.dddde±XX.
// NaN and infinities are written as json.dumps does by default.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	sci := strconv.FormatFloat(f, 'e', -1, 64)
	_, exp, _ := strings.Cut(sci, "e")
	x, _ := strconv.Atoi(exp)
	if x >= -4 && x < 16 {
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	}
	return sci
}

// pyString quotes s as json.dumps with ensure_ascii=False does: only the
// quote, the backslash and control characters below U+0020 are escaped.
// Invalid UTF-8 bytes (Python strings cannot hold them) are written as
// U+FFFD.
func pyString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
