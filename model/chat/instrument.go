package chat

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// instrument rewrites the tags of a template, as normalize emits them, so
// that the rendered template calls the guard (limits.go):
//
//	{{ x }}                 {{ __m40llm_out((x)) }}, and the same for text
//	{% for ... %}           the tag, then {{ __m40llm_step() }}
//	{% macro f(a, b=1) %}   the tag, then {{ __m40llm_enter(a,b) }}
//	{% endmacro %}          {{ __m40llm_leave() }}, then the tag
//	{% set t = x %}         {% set t = __m40llm_val((x)) %}
//	{% set ns.a = x %}      {% set ns.a = __m40llm_val((x), ns) %}
//	x | tojson(...)         x | __m40llm_tojson(...), Python's tojson
//
// The callbacks print nothing. The rewriting follows the engine's own
// parser (ardanlabs/jinja parse.go: parseSet, parseMacro), which splits
// these statements with strings.Cut rather than a grammar. It also checks
// what the guard cannot: the nesting of brackets and blocks, which the
// parser recurses on, and calls of list.append, list.insert and
// dict.update, the engine's only ways to change a value in place.
type instrumenter struct {
	src    string
	blocks int  // block statements open
	plain  bool // check, but leave the callbacks out
}

// blockOpeners and blockClosers are the statements that open and close a
// block, for MaxNesting.
var (
	blockOpeners = map[string]bool{"if": true, "for": true, "macro": true, "call": true, "filter": true, "generation": true}
	blockClosers = map[string]bool{"endif": true, "endfor": true, "endmacro": true, "endcall": true, "endfilter": true,
		"endgeneration": true, "endset": true}
	mutators = regexp.MustCompile(`\.\s*(append|insert|update)\b`)
)

// checkSource rejects sources over MaxSourceBytes and sources that use
// the reserved prefix of the callbacks.
func checkSource(src string) error {
	if len(src) > MaxSourceBytes {
		return &LimitError{Limit: "MaxSourceBytes", Max: MaxSourceBytes,
			What: fmt.Sprintf("a template of %d bytes, more than %d", len(src), MaxSourceBytes)}
	}
	if i := strings.Index(src, hookPrefix); i >= 0 {
		return &SyntaxError{Line: lineOf(src, i), Msg: fmt.Sprintf("the name prefix %q is reserved", hookPrefix)}
	}
	return nil
}

// text returns the engine source of a literal text: text is quoted already
// and may be followed by newlines kept for line numbers.
func (in *instrumenter) text(quoted string) string {
	if in.plain {
		return "{{" + quoted + "}}"
	}
	return "{{" + hookOut + "(" + quoted + ")}}"
}

// expr returns the engine source of the expression tag t.
func (in *instrumenter) expr(t *tag) (string, error) {
	if err := in.checkCode(t); err != nil {
		return "", err
	}
	if in.plain {
		return "{{" + t.content + "}}", nil
	}
	return "{{" + hookOut + "((" + rewriteFilters(t.content) + "))}}", nil
}

// block returns the engine source of the block tag t.
func (in *instrumenter) block(t *tag) (string, error) {
	if err := in.checkCode(t); err != nil {
		return "", err
	}
	content := t.content
	kw := keyword(content)
	switch {
	case blockOpeners[kw] || (kw == "set" && !strings.Contains(content, "=")):
		in.blocks++
		if in.blocks > MaxNesting {
			return "", &LimitError{Limit: "MaxNesting", Max: MaxNesting,
				What: fmt.Sprintf("line %d: blocks nested deeper than %d", lineOf(in.src, t.start), MaxNesting)}
		}
	case blockClosers[kw]:
		in.blocks--
	}
	tagSrc := "{%" + content + "%}"
	if in.plain {
		return tagSrc, nil
	}
	content = rewriteFilters(content)
	tagSrc = "{%" + content + "%}"
	switch kw {
	case "for":
		return tagSrc + "{{" + hookStep + "()}}", nil
	case "macro":
		return tagSrc + "{{" + hookEnter + "(" + strings.Join(macroParams(content), ",") + ")}}", nil
	case "endmacro":
		return "{{" + hookLeave + "()}}" + tagSrc, nil
	case "set":
		// parseSet: the target is what precedes the first "=", a
		// namespace attribute when it has a dot.
		i := strings.IndexByte(content, '=')
		if i < 0 {
			return tagSrc, nil // {% set x %}...{% endset %}
		}
		target := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(content[:i]), "set"))
		ns := ""
		if before, _, ok := strings.Cut(target, "."); ok && isIdent(strings.TrimSpace(before)) {
			ns = ", " + strings.TrimSpace(before)
		}
		return "{%" + content[:i+1] + " " + hookVal + "((" + content[i+1:] + ")" + ns + ")%}", nil
	}
	return tagSrc, nil
}

// macroParams returns the parameter names of a macro statement, split as
// parseMacro does.
func macroParams(content string) []string {
	expr := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(content), "macro"))
	_, params, ok := strings.Cut(expr, "(")
	if !ok {
		return nil
	}
	params = strings.TrimSuffix(params, ")")
	var names []string
	if strings.TrimSpace(params) == "" {
		return nil
	}
	for p := range strings.SplitSeq(params, ",") {
		name, _, _ := strings.Cut(p, "=")
		if name = strings.TrimSpace(name); isIdent(name) {
			names = append(names, name)
		}
	}
	return names
}

// keyword returns a statement's keyword as the engine reads it
// (stmtKeyword): its leading letters and underscores.
func keyword(content string) string {
	content = strings.TrimSpace(content)
	for i, r := range content {
		if !unicode.IsLetter(r) && r != '_' {
			return content[:i]
		}
	}
	return content
}

func isIdent(s string) bool {
	for i, r := range s {
		if !(unicode.IsLetter(r) || r == '_' || (i > 0 && unicode.IsDigit(r))) {
			return false
		}
	}
	return s != ""
}

// checkCode checks the code of a tag, its string literals left out: the
// nesting of its brackets, and calls of the methods that change a value
// in place.
func (in *instrumenter) checkCode(t *tag) error {
	code := blankStrings(t.content)
	depth := 0
	for i := 0; i < len(code); i++ {
		switch code[i] {
		case '(', '[', '{':
			depth++
			if depth > MaxNesting {
				return &LimitError{Limit: "MaxNesting", Max: MaxNesting,
					What: fmt.Sprintf("line %d: brackets nested deeper than %d", lineOf(in.src, t.start), MaxNesting)}
			}
		case ')', ']', '}':
			depth--
		}
	}
	if m := mutators.FindStringSubmatch(code); m != nil {
		return &SyntaxError{Line: lineOf(in.src, t.start), Msg: fmt.Sprintf(
			"%s() is not supported: it changes a value in place, which can make a value contain itself "+
				"(the sandbox of transformers' apply_chat_template refuses it too)", m[1])}
	}
	return nil
}

// blankStrings returns code with the contents of its quoted strings
// replaced by spaces (quotes and backslash escapes as findCloser reads
// them).
func blankStrings(code string) string {
	b := []byte(code)
	for i := 0; i < len(b); i++ {
		q := b[i]
		if q != '\'' && q != '"' {
			continue
		}
		for i++; i < len(b) && b[i] != q; i++ {
			if b[i] == '\\' && i+1 < len(b) {
				b[i] = ' '
				i++
			}
			b[i] = ' '
		}
	}
	return string(b)
}
