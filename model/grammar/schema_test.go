package grammar

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// validator compiles schema with an independent JSON-schema library.
func validator(t testing.TB, schema string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("schema.json", doc))
	s, err := c.Compile("schema.json")
	require.NoError(t, err)
	return s
}

func valid(t testing.TB, s *jsonschema.Schema, text string) bool {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return false
	}
	return s.Validate(v) == nil
}

const personSchema = `{
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 12},
    "age": {"type": "integer"},
    "pet": {"enum": ["cat", "dog", null]},
    "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 1, "maxItems": 3},
    "ok": {"type": "boolean"},
    "kind": {"const": "person"},
    "score": {"anyOf": [{"type": "number"}, {"type": "null"}]}
  },
  "required": ["name", "age", "kind"],
  "additionalProperties": false,
  "$defs": {"tag": {"type": "string", "maxLength": 5}}
}`

func TestSchemaStrings(t *testing.T) {
	g, err := CompileJSONSchema([]byte(personSchema))
	require.NoError(t, err, "grammar")
	v := validator(t, personSchema)
	for _, s := range []string{
		`{"age": 3, "kind": "person", "name": "Al"}`,
		`{"age": -12, "kind": "person", "name": "Al", "ok": true, "pet": null, "score": 1.5e3, "tags": ["a", "bb"]}`,
		`{"age":0,"kind":"person","name":"x\"y","pet":"dog"}`,
		`{"age":0,"kind":"person","name":"x", "score": null, "tags": ["é"]}`,
	} {
		require.True(t, valid(t, v, s), "fixture %s", s)
		assert.True(t, matches(g, s), "grammar should accept %s", s)
	}
	for _, s := range []string{
		`{"age": 3, "name": "Al"}`,                                       // kind missing
		`{"age": 3.5, "kind": "person", "name": "Al"}`,                   // not an integer
		`{"age": 3, "kind": "person", "name": ""}`,                       // minLength
		`{"age": 3, "kind": "person", "name": "abcdefghijklm"}`,          // maxLength
		`{"age": 3, "kind": "person", "name": "Al", "pet": "cow"}`,       // enum
		`{"age": 3, "kind": "person", "name": "Al", "x": 1}`,             // additional
		`{"age": 3, "kind": "person", "name": "Al", "tags": []}`,         // minItems
		`{"age": 3, "kind": "person", "name": "Al", "tags": ["abcdef"]}`, // $ref maxLength
		`{"age": 3, "kind": "robot", "name": "Al"}`,                      // const
		`[]`,
	} {
		require.False(t, valid(t, v, s), "fixture %s", s)
		assert.False(t, matches(g, s), "grammar should reject %s", s)
	}
}

func TestJSONObjectGrammar(t *testing.T) {
	g := MustParse(JSONObjectGrammar)
	for _, s := range []string{`{}`, `{"a": [1, 2.5, -3e2, true, null, "x"], "b": {"c": {}}}`} {
		assert.True(t, matches(g, s), s)
	}
	for _, s := range []string{`[]`, `1`, `"x"`, `{"a" 1}`, `{"a": 01}`} {
		assert.False(t, matches(g, s), s)
	}
}

// Documents drawn at random through the token mask validate against the
// schema with the independent validator.
func TestSchemaRandomDocuments(t *testing.T) {
	toks := ggufTokens(t, "vocab/ggml-vocab-llama-spm.gguf")
	voc := NewVocab(toks)
	g, err := CompileJSONSchema([]byte(personSchema))
	require.NoError(t, err)
	v := validator(t, personSchema)
	done := 0
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 9))
		m := g.NewMatcher()
		text := ""
		for step := 0; step < 400 && !m.Accepting(); step++ {
			mask := m.Mask(voc, nil)
			var allowed []int32
			for id := range voc.Len() {
				if Allowed(mask, int32(id)) {
					allowed = append(allowed, int32(id))
				}
			}
			require.NotEmpty(t, allowed, "dead end after %q", text)
			id := allowed[rng.IntN(len(allowed))]
			require.NoError(t, m.AcceptToken(voc, id))
			text += toks[id]
		}
		if !m.Accepting() {
			continue // ran long (a free integer); not a verdict
		}
		done++
		assert.True(t, valid(t, v, text), "seed %d: %s", seed, text)
	}
	assert.Greater(t, done, 10)
}

func TestSchemaErrors(t *testing.T) {
	tests := []struct{ schema, path, msg string }{
		{`{"type": "string", "pattern": "^a+$"}`, "/pattern", `keyword "pattern" is not supported`},
		{`{"type": "object", "properties": {"a": {"type": "integer", "minimum": 3}}}`, "/properties/a/minimum", "not supported"},
		{`{"type": "thing"}`, "/type", "unknown type"},
		{`{"$ref": "#/$defs/missing"}`, "/$ref", "does not resolve"},
		{`{"$ref": "https://example.com/s.json"}`, "/$ref", "only references inside"},
		{`{"type": "array", "minItems": 3, "maxItems": 2}`, "", "below minItems"},
		{`{"type": "object", "properties": {}, "required": ["a"]}`, "/required", "not among the properties"},
		{`{"type": `, "", "not valid JSON"},
		{`false`, "", "admits no value"},
		{strings.Repeat(`{"items":`, MaxSchemaDepth) + `{}` + strings.Repeat(`}`, MaxSchemaDepth), strings.Repeat("/items", MaxSchemaDepth), "nested more than"},
	}
	for _, tt := range tests {
		_, err := FromJSONSchema([]byte(tt.schema))
		var se *SchemaError
		require.True(t, errors.As(err, &se), "%s: %v", tt.schema, err)
		assert.Equal(t, tt.path, se.Path, tt.schema)
		assert.Contains(t, se.Msg, tt.msg, tt.schema)
	}
	// a recursive schema compiles
	_, err := CompileJSONSchema([]byte(`{"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}, "additionalProperties": false}}, "$ref": "#/$defs/n"}`))
	assert.NoError(t, err)
	_ = json.Valid
}

// Two schemas embedded in one grammar through SchemaRules keep their own
// rules apart, and share JSONRules.
func TestSchemaRulesEmbedded(t *testing.T) {
	a, err := SchemaRules([]byte(`{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}`), "tool-a")
	require.NoError(t, err)
	b, err := SchemaRules([]byte(`{"type":"object","properties":{"s":{"enum":["x","y"]}},"required":["s"],"additionalProperties":false}`), "tool-b")
	require.NoError(t, err)
	require.NotContains(t, a, "root ::=")
	src := `root ::= "A" tool-a | "B" tool-b` + "\n" + a + b + JSONRules
	g, err := Parse(src)
	require.NoError(t, err, src)
	for s, want := range map[string]bool{
		`A{"n": 12}`: true, `B{"s": "y"}`: true,
		`A{"s": "y"}`: false, `B{"n": 1}`: false, `A{"n": "1"}`: false,
	} {
		m := g.NewMatcher()
		ok := m.AcceptString(s) == nil && m.Accepting()
		assert.Equal(t, want, ok, "%s", s)
	}
	for _, name := range []string{"", "root", "space", "value", "a b", "x_y"} {
		_, err := SchemaRules([]byte(`{}`), name)
		var se *SchemaError
		assert.ErrorAs(t, err, &se, "name %q", name)
	}
}
