package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// SchemaError reports a JSON schema that FromJSONSchema cannot turn into a
// grammar: malformed, or using a keyword it does not support.
type SchemaError struct {
	Path string // JSON pointer of the offending schema, "" for the root
	Msg  string
}

func (e *SchemaError) Error() string {
	p := e.Path
	if p == "" {
		p = "/"
	}
	return fmt.Sprintf("json schema at %s: %s", p, e.Msg)
}

// MaxSchemaBytes bounds the schema text FromJSONSchema accepts.
const MaxSchemaBytes = 1 << 20

// MaxSchemaDepth bounds how deep schemas nest inside a schema (through
// properties, items, anyOf, $ref, ...), counting the root as 1.
const MaxSchemaDepth = 64

// JSONObjectGrammar is the grammar of response_format json_object: one
// JSON object (any keys and values), with the whitespace conventions of
// the schema grammars.
const JSONObjectGrammar = `root ::= object
` + jsonCommon

const jsonCommon = `value ::= object | array | string | number | ("true" | "false" | "null") space
object ::= "{" space ( string ":" space value ("," space string ":" space value)* )? "}" space
array ::= "[" space ( value ("," space value)* )? "]" space
string ::= "\"" char* "\"" space
char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
number ::= integer-part ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? space
integer ::= integer-part space
integer-part ::= "-"? ([0] | [1-9] [0-9]{0,15})
boolean ::= ("true" | "false") space
null ::= "null" space
space ::= | " " | "\n" [ \t]{0,20}
`

// FromJSONSchema returns the GBNF text of a grammar whose sentences are
// the JSON values that satisfy schema (a JSON Schema document), in
// llama.cpp's style: properties in the order the schema lists them,
// optional ones possibly left out, one optional space or a newline and
// indentation after each token.
//
// Supported: type (one or a list), properties, required,
// additionalProperties (false, true or a schema; extra keys are not checked
// against the listed names), items, minItems, maxItems, enum, const,
// minLength, maxLength, anyOf and oneOf (both as "any of"), $ref into
// #/$defs or #/definitions, and the annotations title, description,
// default, examples, $schema, $id, $comment. Anything else (pattern,
// format, minimum, allOf, not, prefixItems, ...) fails with a *SchemaError
// naming the keyword and its path; so does a malformed schema, one over
// MaxSchemaBytes, or one whose schemas nest deeper than MaxSchemaDepth.
func FromJSONSchema(schema []byte) (string, error) {
	c, err := convertSchema(schema, "")
	if err != nil {
		return "", err
	}
	return c.rulesText() + jsonCommonFor(c.rules), nil
}

// JSONRules are the GBNF rules that the rules of SchemaRules refer to
// (value, object, array, string, char, number, integer, integer-part,
// boolean, null, space), none of them named root.
const JSONRules = jsonCommon

// SchemaRules converts schema as FromJSONSchema does, for a grammar that
// embeds it: the JSON values schema accepts are the sentences of the rule
// named name, the rules that one needs are named name + "-" + a suffix,
// and JSONRules, which they refer to, are left out, so that a grammar
// embedding several schemas adds them once. name must be a GBNF rule
// name ([a-zA-Z0-9-]+) other than root and those of JSONRules. It fails
// as FromJSONSchema does, and for a name not of that form.
func SchemaRules(schema []byte, name string) (string, error) {
	if !freeRuleName(name) {
		return "", &SchemaError{Msg: fmt.Sprintf("rule name %q is not a GBNF name free for a schema", name)}
	}
	c, err := convertSchema(schema, name+"-")
	if err != nil {
		return "", err
	}
	c.rules[name] = c.rules["root"]
	delete(c.rules, "root")
	return c.rulesText(), nil
}

// freeRuleName reports whether name is a GBNF rule name other than root
// and those of JSONRules.
func freeRuleName(name string) bool {
	if name == "" || name == "root" {
		return false
	}
	for _, r := range name {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	for line := range strings.SplitSeq(jsonCommon, "\n") {
		if n, _, _ := strings.Cut(line, " ::= "); n == name {
			return false
		}
	}
	return true
}

// rulesText writes the rules of c sorted by name.
func (c *schemaConv) rulesText() string {
	var b strings.Builder
	names := make([]string, 0, len(c.rules))
	for n := range c.rules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s ::= %s\n", n, c.rules[n])
	}
	return b.String()
}

// convertSchema converts schema into rules named root and prefix + r1,
// ref2, ...
func convertSchema(schema []byte, prefix string) (*schemaConv, error) {
	if len(schema) > MaxSchemaBytes {
		return nil, &SchemaError{Msg: fmt.Sprintf("schema is %d bytes, more than the limit of %d", len(schema), MaxSchemaBytes)}
	}
	d := json.NewDecoder(bytes.NewReader(schema))
	d.UseNumber()
	var root any
	if err := d.Decode(&root); err != nil {
		return nil, &SchemaError{Msg: "not valid JSON: " + err.Error()}
	}
	c := &schemaConv{root: root, rules: map[string]string{}, refs: map[string]string{}, prefix: prefix}
	body, err := c.value(root, "")
	if err != nil {
		return nil, err
	}
	c.rules["root"] = body
	return c, nil
}

// jsonCommonFor returns the shared rules not defined by the schema rules.
func jsonCommonFor(rules map[string]string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(jsonCommon), "\n") {
		name, _, _ := strings.Cut(line, " ::= ")
		if _, ok := rules[name]; !ok {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// CompileJSONSchema is FromJSONSchema followed by Parse.
func CompileJSONSchema(schema []byte) (*Grammar, error) {
	src, err := FromJSONSchema(schema)
	if err != nil {
		return nil, err
	}
	return Parse(src)
}

type schemaConv struct {
	root   any
	rules  map[string]string
	refs   map[string]string // $ref → rule name
	n      int
	depth  int    // schemas being converted, outermost first
	prefix string // of the rule names but root
}

var annotations = map[string]bool{"title": true, "description": true, "default": true, "examples": true,
	"$schema": true, "$id": true, "$comment": true, "$defs": true, "definitions": true}

func (c *schemaConv) errf(path, format string, args ...any) error {
	return &SchemaError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// literal returns the GBNF literal for the JSON text of v.
func literal(v any) string {
	b, _ := json.Marshal(v)
	return Quote(string(b))
}

// Quote returns s as a GBNF string literal that matches exactly s: quotes
// and backslashes escaped, newline, carriage return and tab as \n \r \t,
// other control characters as \xHH.
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\x%02X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (c *schemaConv) rule(body string) string {
	c.n++
	name := c.prefix + "r" + strconv.Itoa(c.n)
	c.rules[name] = body
	return name
}

func count(v any, path, key string) (int, bool, error) {
	if v == nil {
		return 0, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, false, &SchemaError{Path: path, Msg: key + " must be a non-negative integer"}
	}
	i, err := strconv.Atoi(n.String())
	if err != nil || i < 0 || i > MaxRepetition {
		return 0, false, &SchemaError{Path: path, Msg: fmt.Sprintf("%s must be an integer in [0, %d]", key, MaxRepetition)}
	}
	return i, true, nil
}

// value returns a GBNF expression for schema s at path.
func (c *schemaConv) value(s any, path string) (string, error) {
	if c.depth >= MaxSchemaDepth {
		return "", c.errf(path, "schemas nested more than %d deep", MaxSchemaDepth)
	}
	c.depth++
	defer func() { c.depth-- }()
	switch s := s.(type) {
	case bool:
		if s {
			return "value", nil
		}
		return "", c.errf(path, "the schema false admits no value")
	case map[string]any:
		return c.object(s, path)
	}
	return "", c.errf(path, "a schema must be an object or a boolean")
}

func (c *schemaConv) object(s map[string]any, path string) (string, error) {
	known := map[string]bool{"type": true, "properties": true, "required": true, "additionalProperties": true,
		"items": true, "minItems": true, "maxItems": true, "enum": true, "const": true, "minLength": true,
		"maxLength": true, "anyOf": true, "oneOf": true, "$ref": true}
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !known[k] && !annotations[k] {
			return "", c.errf(path+"/"+k, "keyword %q is not supported", k)
		}
	}
	if ref, ok := s["$ref"]; ok {
		return c.ref(ref, path+"/$ref")
	}
	if v, ok := s["const"]; ok {
		return literal(v) + " space", nil
	}
	if v, ok := s["enum"]; ok {
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return "", c.errf(path+"/enum", "enum must be a non-empty array")
		}
		alts := make([]string, len(list))
		for i, x := range list {
			alts[i] = literal(x)
		}
		return "(" + strings.Join(alts, " | ") + ") space", nil
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if v, ok := s[k]; ok {
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				return "", c.errf(path+"/"+k, "%s must be a non-empty array", k)
			}
			alts := make([]string, len(list))
			for i, x := range list {
				e, err := c.value(x, fmt.Sprintf("%s/%s/%d", path, k, i))
				if err != nil {
					return "", err
				}
				alts[i] = e
			}
			return "(" + strings.Join(alts, " | ") + ")", nil
		}
	}
	var types []string
	switch t := s["type"].(type) {
	case nil:
		switch {
		case s["properties"] != nil || s["additionalProperties"] != nil || s["required"] != nil:
			types = []string{"object"}
		case s["items"] != nil:
			types = []string{"array"}
		case s["minLength"] != nil || s["maxLength"] != nil:
			types = []string{"string"}
		default:
			return "value", nil
		}
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			n, ok := x.(string)
			if !ok {
				return "", c.errf(path+"/type", "type must be a string or an array of strings")
			}
			types = append(types, n)
		}
	default:
		return "", c.errf(path+"/type", "type must be a string or an array of strings")
	}
	alts := make([]string, 0, len(types))
	for _, t := range types {
		e, err := c.typed(t, s, path)
		if err != nil {
			return "", err
		}
		alts = append(alts, e)
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return "(" + strings.Join(alts, " | ") + ")", nil
}

func (c *schemaConv) typed(t string, s map[string]any, path string) (string, error) {
	switch t {
	case "null", "boolean", "integer", "number":
		return t, nil
	case "string":
		lo, _, err := count(s["minLength"], path+"/minLength", "minLength")
		if err != nil {
			return "", err
		}
		hi, hasHi, err := count(s["maxLength"], path+"/maxLength", "maxLength")
		if err != nil {
			return "", err
		}
		if !hasHi {
			if lo == 0 {
				return "string", nil
			}
			return fmt.Sprintf(`"\"" char{%d,} "\"" space`, lo), nil
		}
		if hi < lo {
			return "", c.errf(path, "maxLength %d is below minLength %d", hi, lo)
		}
		return fmt.Sprintf(`"\"" char{%d,%d} "\"" space`, lo, hi), nil
	case "array":
		item := "value"
		if it, ok := s["items"]; ok {
			if _, list := it.([]any); list {
				return "", c.errf(path+"/items", "items as an array (tuple validation) is not supported")
			}
			e, err := c.value(it, path+"/items")
			if err != nil {
				return "", err
			}
			item = c.rule(e)
		}
		lo, _, err := count(s["minItems"], path+"/minItems", "minItems")
		if err != nil {
			return "", err
		}
		hi, hasHi, err := count(s["maxItems"], path+"/maxItems", "maxItems")
		if err != nil {
			return "", err
		}
		if hasHi && hi < lo {
			return "", c.errf(path, "maxItems %d is below minItems %d", hi, lo)
		}
		if hasHi && hi == 0 {
			return `"[" space "]" space`, nil
		}
		more := fmt.Sprintf(`("," space %s){%d,}`, item, max(lo-1, 0))
		if hasHi {
			more = fmt.Sprintf(`("," space %s){%d,%d}`, item, max(lo-1, 0), hi-1)
		}
		body := item + " " + more
		if lo == 0 {
			body = "(" + body + ")?"
		}
		return `"[" space ` + body + ` "]" space`, nil
	case "object":
		return c.objectType(s, path)
	}
	return "", c.errf(path+"/type", "unknown type %q", t)
}

func (c *schemaConv) objectType(s map[string]any, path string) (string, error) {
	props, _ := s["properties"].(map[string]any)
	if s["properties"] != nil && props == nil {
		return "", c.errf(path+"/properties", "properties must be an object")
	}
	required := map[string]bool{}
	if r, ok := s["required"]; ok {
		list, ok := r.([]any)
		if !ok {
			return "", c.errf(path+"/required", "required must be an array of strings")
		}
		for _, x := range list {
			n, ok := x.(string)
			if !ok {
				return "", c.errf(path+"/required", "required must be an array of strings")
			}
			required[n] = true
		}
	}
	// The schema's order of properties: decode order is lost in a map, so
	// sort by name (llama.cpp keeps the schema's order; both are valid).
	names := make([]string, 0, len(props))
	for n := range props {
		names = append(names, n)
	}
	sort.Strings(names)
	var req, opt []string
	for _, n := range names {
		e, err := c.value(props[n], path+"/properties/"+escapePointer(n))
		if err != nil {
			return "", err
		}
		kv := c.rule(literal(n) + ` space ":" space ` + e)
		if required[n] {
			req = append(req, kv)
		} else {
			opt = append(opt, kv)
		}
	}
	for n := range required {
		if _, ok := props[n]; !ok {
			return "", c.errf(path+"/required", "required property %q is not among the properties", n)
		}
	}
	extra := ""
	switch ap := s["additionalProperties"].(type) {
	case bool:
		if ap {
			extra = c.rule(`string ":" space value`)
		}
	case nil:
		if len(props) == 0 {
			extra = c.rule(`string ":" space value`)
		}
	default:
		e, err := c.value(ap, path+"/additionalProperties")
		if err != nil {
			return "", err
		}
		extra = c.rule(`string ":" space ` + e)
	}
	if extra != "" {
		opt = append(opt, extra+"*")
	}
	tail := func(from int) string {
		var b strings.Builder
		for _, o := range opt[from:] {
			if strings.HasSuffix(o, "*") {
				fmt.Fprintf(&b, ` ("," space %s)*`, strings.TrimSuffix(o, "*"))
			} else {
				fmt.Fprintf(&b, ` ("," space %s)?`, o)
			}
		}
		return b.String()
	}
	var body string
	if len(req) > 0 {
		body = strings.Join(req, ` "," space `) + tail(0)
	} else if len(opt) > 0 {
		alts := make([]string, len(opt))
		for i, o := range opt {
			alts[i] = strings.TrimSuffix(o, "*") + tail(i+1)
			if strings.HasSuffix(o, "*") {
				alts[i] = strings.TrimSuffix(o, "*") + tail(i)
			}
		}
		body = "(" + strings.Join(alts, " | ") + ")?"
	}
	return `"{" space ` + body + ` "}" space`, nil
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func (c *schemaConv) ref(v any, path string) (string, error) {
	ref, ok := v.(string)
	if !ok {
		return "", c.errf(path, "$ref must be a string")
	}
	if name, ok := c.refs[ref]; ok {
		return name, nil
	}
	var target any
	switch {
	case ref == "#":
		target = c.root
	case strings.HasPrefix(ref, "#/"):
		target = c.root
		for _, part := range strings.Split(ref[2:], "/") {
			part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
			m, ok := target.(map[string]any)
			if !ok {
				return "", c.errf(path, "$ref %q does not resolve", ref)
			}
			if target, ok = m[part]; !ok {
				return "", c.errf(path, "$ref %q does not resolve", ref)
			}
		}
	default:
		return "", c.errf(path, "$ref %q: only references inside the schema (#/...) are supported", ref)
	}
	c.n++
	name := c.prefix + "ref" + strconv.Itoa(c.n)
	c.refs[ref] = name
	c.rules[name] = "" // reserved while the body is built (recursive refs)
	body, err := c.value(target, strings.TrimPrefix(ref, "#"))
	if err != nil {
		return "", err
	}
	c.rules[name] = body
	return name, nil
}
