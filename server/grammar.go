package server

import (
	"bytes"
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/m40llm/m40llm/model/grammar"
)

// Constrained output. A request may ask for at most one constraint:
// OpenAI's response_format json_object or json_schema, or llama.cpp's
// grammar (GBNF text) or json_schema (a schema object). Each becomes a
// grammar.Grammar that model.GenerateOptions.Grammar applies at every
// step: the output is then a sentence of the grammar, unless generation
// ends first (max_tokens, a stop string, a full context: finish_reason
// "length" or a stop cut it short).

// Bounds of the process-wide cache of compiled grammars.
const (
	// grammarCacheEntries bounds the grammars kept.
	grammarCacheEntries = 64
	// grammarCacheBytes bounds their source text and state caches
	// together (grammar.Grammar.CacheBytes; each is also bounded by
	// grammar.MaxCacheBytes on its own). The most recently used grammar
	// is kept even when it alone is over.
	grammarCacheBytes = 512 << 20
)

// grammarCache keeps compiled grammars by their GBNF source, least
// recently used dropped first, so that requests with the same grammar or
// schema share one grammar.Grammar and start with the states, transitions
// and token masks earlier requests computed. Sharing is safe: a Grammar
// is safe for concurrent use (its cache is under its own mutex) and every
// sequence follows it with a Matcher of its own; masks are kept per
// vocabulary, so models with different tokenizers may share a grammar.
type grammarCache struct {
	mu    sync.Mutex
	order *list.List // of *grammarEntry, most recently used first
	bySrc map[string]*list.Element
	max   int
	bytes int
}

type grammarEntry struct {
	src string
	g   *grammar.Grammar
}

func newGrammarCache(entries, bytes int) *grammarCache {
	return &grammarCache{order: list.New(), bySrc: map[string]*list.Element{}, max: entries, bytes: bytes}
}

// grammars is the cache every server of the process shares.
var grammars = newGrammarCache(grammarCacheEntries, grammarCacheBytes)

// get returns the compiled grammar of src, compiling it (outside the
// lock: requests with other grammars do not wait) when it is not cached.
// It fails as grammar.Parse does; failures are not cached.
func (c *grammarCache) get(src string) (*grammar.Grammar, error) {
	c.mu.Lock()
	if e, ok := c.bySrc[src]; ok {
		c.order.MoveToFront(e)
		c.trim()
		c.mu.Unlock()
		return e.Value.(*grammarEntry).g, nil
	}
	c.mu.Unlock()
	g, err := grammar.Parse(src)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.bySrc[src]; ok { // compiled meanwhile by another request
		c.order.MoveToFront(e)
		return e.Value.(*grammarEntry).g, nil
	}
	c.bySrc[src] = c.order.PushFront(&grammarEntry{src: src, g: g})
	c.trim()
	return g, nil
}

// trim drops the least recently used grammars past the entry or byte
// bound; the caller holds c.mu. State caches grow while grammars are in
// use, so the bytes are counted anew each time.
func (c *grammarCache) trim() {
	total := 0
	n := 0
	for e := c.order.Front(); e != nil; {
		next := e.Next()
		ge := e.Value.(*grammarEntry)
		total += len(ge.src) + ge.g.CacheBytes()
		n++
		if n > 1 && (n > c.max || total > c.bytes) {
			c.order.Remove(e)
			delete(c.bySrc, ge.src)
		}
		e = next
	}
}

// len returns the number of cached grammars.
func (c *grammarCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// ConstraintFields are the request fields that constrain the output of
// /v1/chat/completions and /v1/completions; at most one may be set.
type ConstraintFields struct {
	// ResponseFormat is OpenAI's response_format: {"type":"text"} (no
	// constraint), {"type":"json_object"} (the output is one JSON object),
	// or {"type":"json_schema","json_schema":{"name":...,"schema":{...},
	// "strict":...}} (the output is a JSON value that the schema accepts,
	// constrained whether strict is true or false). As llama.cpp does,
	// json_object may carry a "schema" too, and the server takes it on
	// /v1/completions as well.
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
	// Grammar is llama.cpp's grammar: GBNF text the output must match.
	Grammar json.RawMessage `json:"grammar,omitempty"`
	// JSONSchema is llama.cpp's json_schema: a JSON schema the output
	// must satisfy.
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
}

// responseFormat is the wire form of response_format.
type responseFormat struct {
	Type       string            `json:"type"`
	JSONSchema *jsonSchemaFormat `json:"json_schema,omitempty"`
	// Schema is llama.cpp's schema of a json_object format.
	Schema json.RawMessage `json:"schema,omitempty"`
}

// jsonSchemaFormat is response_format.json_schema. Name and Description
// are accepted and change nothing.
type jsonSchemaFormat struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// constraint returns the grammar the fields ask for and the field that
// asked for it, or nil and "" when they ask for none. Fields that are not well formed, more than one constraint, a
// grammar that does not compile (the message gives its line and column)
// and a schema that cannot be converted (the message gives the JSON
// pointer of the offending part) are 400 *Errors naming the field.
func (f *ConstraintFields) constraint() (*grammar.Grammar, string, error) {
	type source struct {
		param string
		get   func() (*grammar.Grammar, error)
	}
	var set []source
	if !isNull(f.ResponseFormat) {
		rf, err := decodeResponseFormat(f.ResponseFormat)
		if err != nil {
			return nil, "", err
		}
		switch rf.Type {
		case "text":
		case "json_object":
			if isNull(rf.Schema) {
				set = append(set, source{"response_format", func() (*grammar.Grammar, error) { return grammars.get(grammar.JSONObjectGrammar) }})
			} else {
				set = append(set, source{"response_format", func() (*grammar.Grammar, error) { return schemaGrammar("response_format", rf.Schema) }})
			}
		case "json_schema":
			schema := json.RawMessage(`{}`) // as llama.cpp: no schema, any JSON value
			if !isNull(rf.JSONSchema.Schema) {
				schema = rf.JSONSchema.Schema
			}
			set = append(set, source{"response_format", func() (*grammar.Grammar, error) { return schemaGrammar("response_format", schema) }})
		}
	}
	if !isNull(f.Grammar) {
		var src string
		if err := json.Unmarshal(f.Grammar, &src); err != nil {
			return nil, "", badRequest("grammar", CodeInvalidValue, "grammar must be a string of GBNF rules, not %s", jsonKindOf(f.Grammar))
		}
		if src != "" { // llama.cpp's "no grammar"
			set = append(set, source{"grammar", func() (*grammar.Grammar, error) { return gbnfGrammar("grammar", src) }})
		}
	}
	if !isNull(f.JSONSchema) {
		set = append(set, source{"json_schema", func() (*grammar.Grammar, error) { return schemaGrammar("json_schema", f.JSONSchema) }})
	}
	switch len(set) {
	case 0:
		return nil, "", nil
	case 1:
		g, err := set[0].get()
		return g, set[0].param, err
	}
	names := make([]string, len(set))
	for i, s := range set {
		names[i] = s.param
	}
	return nil, "", badRequest(set[1].param, CodeInvalidValue,
		"at most one of response_format (json_object or json_schema), grammar and json_schema may be given; this request sets %s",
		strings.Join(names, " and "))
}

// decodeResponseFormat decodes and checks response_format; its errors
// are 400 *Errors naming response_format.
func decodeResponseFormat(raw json.RawMessage) (*responseFormat, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var rf responseFormat
	if err := dec.Decode(&rf); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return nil, badRequest("response_format", CodeInvalidValue, "response_format must be an object, not %s", jsonKindOf(raw))
		}
		return nil, badRequest("response_format", CodeInvalidValue, "response_format: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	switch rf.Type {
	case "text":
		if rf.JSONSchema != nil || !isNull(rf.Schema) {
			return nil, badRequest("response_format", CodeInvalidValue, "response_format of type text takes no schema")
		}
	case "json_object":
		if rf.JSONSchema != nil {
			return nil, badRequest("response_format", CodeInvalidValue, "response_format of type json_object takes no json_schema; use type json_schema")
		}
	case "json_schema":
		if rf.JSONSchema == nil {
			return nil, badRequest("response_format", CodeInvalidValue, "response_format of type json_schema needs json_schema: {\"name\": ..., \"schema\": {...}}")
		}
		if !isNull(rf.Schema) {
			return nil, badRequest("response_format", CodeInvalidValue, "response_format of type json_schema takes its schema in json_schema.schema")
		}
	case "":
		return nil, badRequest("response_format", CodeInvalidValue, "response_format needs a type: text, json_object or json_schema")
	default:
		return nil, badRequest("response_format", CodeUnsupported, "response_format type %q is not supported; want text, json_object or json_schema", rf.Type)
	}
	return &rf, nil
}

// gbnfGrammar compiles GBNF text through the cache; a *grammar.ParseError
// becomes a 400 naming param, with the line and column.
func gbnfGrammar(param, src string) (*grammar.Grammar, error) {
	g, err := grammars.get(src)
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: CodeInvalidValue,
			Message: err.Error(), Err: err} // "grammar: line 2, column 10 (offset 22): ..."
	}
	return g, nil
}

// schemaGrammar converts a JSON schema and compiles its grammar through
// the cache. A schema that is not an object or a boolean, or that
// grammar.FromJSONSchema refuses (the message gives the JSON pointer), is
// a 400 naming param.
func schemaGrammar(param string, schema json.RawMessage) (*grammar.Grammar, error) {
	schema = bytes.TrimSpace(schema)
	if len(schema) == 0 || schema[0] != '{' && !bytes.Equal(schema, []byte("true")) && !bytes.Equal(schema, []byte("false")) {
		return nil, badRequest(param, CodeInvalidValue, "%s: a JSON schema must be an object or a boolean, not %s", param, jsonKindOf(schema))
	}
	src, err := grammar.FromJSONSchema(schema)
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: CodeInvalidValue,
			Message: fmt.Sprintf("%s: %v", param, err), Err: err}
	}
	g, err := grammars.get(src)
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: CodeInvalidValue,
			Message: fmt.Sprintf("%s: the grammar made from the schema is refused: %v", param, err), Err: err}
	}
	return g, nil
}

// jsonKindOf names the kind of a raw JSON value, for messages.
func jsonKindOf(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch c := raw[0]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "a list"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	}
	return "a number"
}

// ollamaConstraint returns the grammar of an ollama request's format:
// none for absent, null or "", a JSON object for "json", the schema's
// grammar for a schema object. Anything else, and a schema the server
// cannot convert, is a 400 naming format.
func ollamaConstraint(format json.RawMessage) (*grammar.Grammar, error) {
	f := bytes.TrimSpace(format)
	if isNull(f) {
		return nil, nil
	}
	if f[0] == '"' {
		var s string
		if err := json.Unmarshal(f, &s); err != nil {
			return nil, badRequest("format", CodeInvalidValue, "invalid format: %v", err)
		}
		switch s {
		case "":
			return nil, nil
		case "json":
			return grammars.get(grammar.JSONObjectGrammar)
		}
		return nil, badRequest("format", CodeInvalidValue, `invalid format: %q; expected "json" or a valid JSON Schema`, s)
	}
	if f[0] != '{' {
		return nil, badRequest("format", CodeInvalidValue, `invalid format: %s; expected "json" or a valid JSON Schema`, jsonKindOf(f))
	}
	return schemaGrammar("format", f)
}
