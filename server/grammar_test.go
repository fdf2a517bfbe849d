package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/grammar"
	"github.com/ollama/ollama/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A bounded schema, so that every generation can finish within max_tokens.
const storySchema = `{
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 8},
    "mood": {"enum": ["happy", "sad"]},
    "friends": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
    "big": {"type": "boolean"}
  },
  "required": ["name", "mood"],
  "additionalProperties": false
}`

// validator compiles schema with an independent JSON-schema validator.
func validator(t *testing.T, schema string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("s.json", doc))
	v, err := c.Compile("s.json")
	require.NoError(t, err)
	return v
}

func schemaMap(t *testing.T, schema string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(schema), &m))
	return m
}

func schemaFormat(t *testing.T, schema string, strict bool) openai.ChatCompletionNewParamsResponseFormatUnion {
	return openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
		JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "story", Schema: schemaMap(t, schema), Strict: openai.Bool(strict)},
	}}
}

// Chat outputs under response_format json_schema, on 50 seeds, validate
// against the schema; so do completions under llama.cpp's json_schema.
func TestJSONSchemaOutput(t *testing.T) {
	ts := startServer(t, 1, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	val := validator(t, storySchema)
	for seed := range int64(50) {
		res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:          modelName,
			Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about a cat.")},
			ResponseFormat: schemaFormat(t, storySchema, seed%2 == 0),
			Temperature:    openai.Float(1),
			Seed:           openai.Int(seed),
			MaxTokens:      openai.Int(450),
		})
		require.NoError(t, err, "seed %d", seed)
		out := res.Choices[0].Message.Content
		require.Equal(t, "stop", res.Choices[0].FinishReason, "seed %d: %q", seed, out)
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(out))
		require.NoError(t, err, "seed %d: %q", seed, out)
		assert.NoError(t, val.Validate(v), "seed %d: %q", seed, out)
	}
	for seed := range int64(5) {
		res, err := c.Completions.New(ctx, openai.CompletionNewParams{
			Model:       modelName,
			Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
			Temperature: openai.Float(1),
			Seed:        openai.Int(seed),
			MaxTokens:   openai.Int(450),
		}, option.WithJSONSet("json_schema", schemaMap(t, storySchema)))
		require.NoError(t, err, "seed %d", seed)
		out := res.Choices[0].Text
		require.Equal(t, openai.CompletionChoiceFinishReasonStop, res.Choices[0].FinishReason, "seed %d: %q", seed, out)
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(out))
		require.NoError(t, err, "seed %d: %q", seed, out)
		assert.NoError(t, val.Validate(v), "seed %d: %q", seed, out)
	}
}

// response_format json_object gives one JSON object, on both routes.
func TestJSONObjectOutput(t *testing.T) {
	ts := startServer(t, 1, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	for seed := range int64(10) {
		res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    modelName,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about a cat.")},
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{
				OfJSONObject: &shared.ResponseFormatJSONObjectParam{},
			},
			Temperature: openai.Float(1),
			Seed:        openai.Int(seed),
			MaxTokens:   openai.Int(400),
		})
		require.NoError(t, err, "seed %d", seed)
		out := res.Choices[0].Message.Content
		if res.Choices[0].FinishReason == "length" {
			continue // an object may be longer than max_tokens
		}
		var obj map[string]any
		assert.NoError(t, json.Unmarshal([]byte(out), &obj), "seed %d: %q", seed, out)
	}
	res, err := c.Completions.New(ctx, openai.CompletionNewParams{
		Model:     modelName,
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")},
		MaxTokens: openai.Int(400),
	}, option.WithJSONSet("response_format", map[string]any{"type": "json_object"}))
	require.NoError(t, err)
	if res.Choices[0].FinishReason == openai.CompletionChoiceFinishReasonStop {
		var obj map[string]any
		assert.NoError(t, json.Unmarshal([]byte(res.Choices[0].Text), &obj), "%q", res.Choices[0].Text)
	} else {
		assert.True(t, strings.HasPrefix(strings.TrimSpace(res.Choices[0].Text), "{"), "%q", res.Choices[0].Text)
	}
}

// llama.cpp's grammar field gives only the grammar's sentences.
func TestGrammarField(t *testing.T) {
	ts := startServer(t, 1, 256, Options{})
	c := ts.client()
	ctx := context.Background()
	yesNo := option.WithJSONSet("grammar", `root ::= ("yes" | "no")`)
	seen := map[string]bool{}
	for seed := range int64(12) {
		res, err := c.Completions.New(ctx, openai.CompletionNewParams{
			Model:       modelName,
			Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
			Temperature: openai.Float(1.5),
			Seed:        openai.Int(seed),
			MaxTokens:   openai.Int(10),
		}, yesNo)
		require.NoError(t, err)
		out := res.Choices[0].Text
		assert.Contains(t, []string{"yes", "no"}, out, "seed %d", seed)
		assert.Equal(t, openai.CompletionChoiceFinishReasonStop, res.Choices[0].FinishReason)
		seen[out] = true
		chat, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:       modelName,
			Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Is the cat big?")},
			Temperature: openai.Float(1.5),
			Seed:        openai.Int(seed),
			MaxTokens:   openai.Int(10),
		}, yesNo)
		require.NoError(t, err)
		assert.Contains(t, []string{"yes", "no"}, chat.Choices[0].Message.Content, "seed %d", seed)
	}
	t.Logf("answers seen: %v", seen)
}

// A streamed constrained chat at temperature 0 gives the same text and
// logprobs as the non-streamed one.
func TestConstrainedStreamMatches(t *testing.T) {
	ts := startServer(t, 2, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:          modelName,
		Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about a dog.")},
		ResponseFormat: schemaFormat(t, storySchema, true),
		Temperature:    openai.Float(0),
		MaxTokens:      openai.Int(450),
		Logprobs:       openai.Bool(true),
		TopLogprobs:    openai.Int(3),
	}
	res, err := c.Chat.Completions.New(ctx, params)
	require.NoError(t, err)
	want := res.Choices[0].Message.Content
	require.NoError(t, validator(t, storySchema).Validate(mustJSON(t, want)), "%q", want)

	stream := c.Chat.Completions.NewStreaming(ctx, params)
	var got strings.Builder
	var lps []openai.ChatCompletionTokenLogprob
	finish := ""
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			continue
		}
		got.WriteString(ch.Choices[0].Delta.Content)
		lps = append(lps, ch.Choices[0].Logprobs.Content...)
		if ch.Choices[0].FinishReason != "" {
			finish = ch.Choices[0].FinishReason
		}
	}
	require.NoError(t, stream.Err())
	assert.Equal(t, want, got.String())
	assert.Equal(t, res.Choices[0].FinishReason, finish)
	wantLps := res.Choices[0].Logprobs.Content
	require.Len(t, lps, len(wantLps))
	for i := range lps {
		assert.Equal(t, wantLps[i].Token, lps[i].Token, "token %d", i)
		assert.InDelta(t, wantLps[i].Logprob, lps[i].Logprob, 1e-4, "token %d", i) // the second request reuses the cached prompt
		assert.Len(t, lps[i].TopLogprobs, 3)
	}
}

func mustJSON(t *testing.T, s string) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(s))
	require.NoError(t, err, "%q", s)
	return v
}

func TestConstraintErrors(t *testing.T) {
	ts := startServer(t, 1, 128, Options{})
	const chatBase = `"messages":[{"role":"user","content":"x"}],"max_tokens":1`
	const cmplBase = `"prompt":"Once","max_tokens":1`
	chatWith := func(f string) string { return `{` + chatBase + `,` + f + `}` }
	cmplWith := func(f string) string { return `{` + cmplBase + `,` + f + `}` }
	tests := []struct {
		name, path, body, param, msg string
	}{
		{"malformed grammar", "/v1/completions", cmplWith(`"grammar":"root ::= \"a\"\nitem ::= [a-z"`), "grammar", "grammar: line 2, column 10 (offset 22): unterminated character class"},
		{"undefined rule", "/v1/chat/completions", chatWith(`"grammar":"root ::= item"`), "grammar", `line 1, column 10 (offset 9): undefined rule "item"`},
		{"grammar not a string", "/v1/completions", cmplWith(`"grammar":{"root":"a"}`), "grammar", "must be a string"},
		{"grammar too deep", "/v1/completions", cmplWith(`"grammar":"root ::= ` + strings.Repeat("(", 300) + `\"a\"` + strings.Repeat(")", 300) + `"`), "grammar", "nested more than"},
		{"unsupported schema", "/v1/completions", cmplWith(`"json_schema":{"type":"object","properties":{"a":{"type":"string","pattern":"x+"}}}`), "json_schema", "/properties/a/pattern"},
		{"schema not an object", "/v1/completions", cmplWith(`"json_schema":"{}"`), "json_schema", "must be an object or a boolean"},
		{"response_format schema", "/v1/chat/completions", chatWith(`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"integer","minimum":1}}}`), "response_format", "/minimum"},
		{"response_format no json_schema", "/v1/chat/completions", chatWith(`"response_format":{"type":"json_schema"}`), "response_format", "needs json_schema"},
		{"response_format unknown key", "/v1/chat/completions", chatWith(`"response_format":{"type":"json_object","strict":true}`), "response_format", `unknown field "strict"`},
		{"response_format not an object", "/v1/chat/completions", chatWith(`"response_format":"json"`), "response_format", "must be an object"},
		{"two constraints", "/v1/chat/completions", chatWith(`"response_format":{"type":"json_object"},"grammar":"root ::= \"a\""`), "grammar", "response_format and grammar"},
		{"grammar and json_schema", "/v1/completions", cmplWith(`"grammar":"root ::= \"a\"","json_schema":{}`), "json_schema", "grammar and json_schema"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := ts.post(t, tt.path, tt.body)
			require.Equal(t, http.StatusBadRequest, status, "%s", body)
			e := decodeError(t, body)
			assert.Equal(t, TypeInvalidRequest, e.Type)
			assert.Equal(t, tt.param, deref(e.Param))
			assert.Contains(t, e.Message, tt.msg)
		})
	}
	// No constraint at all: text beside a grammar, an empty grammar, nulls.
	for _, body := range []string{
		chatWith(`"response_format":{"type":"text"},"grammar":"root ::= \"a\""`),
		cmplWith(`"grammar":"","json_schema":null,"response_format":null`),
	} {
		path := "/v1/completions"
		if strings.Contains(body, "messages") {
			path = "/v1/chat/completions"
		}
		status, _, resp := ts.post(t, path, body)
		assert.Equal(t, http.StatusOK, status, "%s", resp)
	}

	t.Run("through the SDK", func(t *testing.T) {
		_, err := ts.client().Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:          modelName,
			Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
			ResponseFormat: schemaFormat(t, `{"type":"string","format":"date"}`, true),
		})
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		assert.Equal(t, "response_format", apiErr.Param)
		assert.Contains(t, apiErr.Message, "/format")
	})
}

// The ollama routes take format "json" and a schema.
func TestOllamaFormat(t *testing.T) {
	_, c := startOllama(t, 1, 512, Options{})
	ctx := context.Background()
	no := false
	for seed := range 5 {
		var out string
		var done string
		err := c.Generate(ctx, &api.GenerateRequest{Prompt: "Tell me about a cat.", Format: json.RawMessage(`"json"`), Stream: &no,
			Options: map[string]any{"seed": seed, "temperature": 1, "num_predict": 400}},
			func(r api.GenerateResponse) error { out += r.Response; done = r.DoneReason; return nil })
		require.NoError(t, err)
		if done == "stop" {
			var obj map[string]any
			assert.NoError(t, json.Unmarshal([]byte(out), &obj), "seed %d: %q", seed, out)
		}
	}
	val := validator(t, storySchema)
	for seed := range 10 {
		var out strings.Builder
		var done string
		err := c.Chat(ctx, &api.ChatRequest{Messages: []api.Message{{Role: "user", Content: "Tell me about a cat."}},
			Format:  json.RawMessage(storySchema),
			Options: map[string]any{"seed": seed, "temperature": 1, "num_predict": 450}},
			func(r api.ChatResponse) error { out.WriteString(r.Message.Content); done = r.DoneReason; return nil })
		require.NoError(t, err)
		require.Equal(t, "stop", done, "seed %d: %q", seed, out.String())
		assert.NoError(t, val.Validate(mustJSON(t, out.String())), "seed %d: %q", seed, out.String())
	}
}

func TestGrammarCache(t *testing.T) {
	c := newGrammarCache(2, 1<<30)
	a1, err := c.get(`root ::= "a"`)
	require.NoError(t, err)
	a2, err := c.get(`root ::= "a"`)
	require.NoError(t, err)
	assert.Same(t, a1, a2, "a source compiled once")
	_, err = c.get(`root ::= "b"`)
	require.NoError(t, err)
	_, err = c.get(`root ::= "a"`) // a is now the most recent
	require.NoError(t, err)
	_, err = c.get(`root ::= "c"`) // drops b
	require.NoError(t, err)
	assert.Equal(t, 2, c.len())
	a3, _ := c.get(`root ::= "a"`)
	assert.Same(t, a1, a3)
	_, err = c.get(`root ::= (`)
	var pe *grammar.ParseError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, 2, c.len(), "failures are not kept")

	// Over the byte budget only the most recent grammar stays.
	small := newGrammarCache(10, 1)
	for _, src := range []string{`root ::= "a"`, `root ::= "b"`, `root ::= "c"`} {
		_, err := small.get(src)
		require.NoError(t, err)
	}
	assert.Equal(t, 1, small.len())

	// The server's cache serves repeated schemas with one grammar.
	g1, err := schemaGrammar("json_schema", json.RawMessage(storySchema))
	require.NoError(t, err)
	g2, err := schemaGrammar("json_schema", json.RawMessage(" "+storySchema))
	require.NoError(t, err)
	assert.Same(t, g1, g2)
}

// BenchmarkConstrainedDecode compares decoding the bundled model on the
// CPU backend without a constraint and under storySchema's grammar (from
// the process-wide cache, so warm after the first document), per
// generated token.
func BenchmarkConstrainedDecode(b *testing.B) {
	m, _ := loadModel(b, 1, 512)
	defer m.Close()
	prompt := m.Tokenizer.Encode("Once upon a time", true, false)
	g, err := schemaGrammar("json_schema", json.RawMessage(storySchema))
	require.NoError(b, err)
	for _, bc := range []struct {
		name string
		g    *grammar.Grammar
	}{{"none", nil}, {"json_schema", g}} {
		b.Run(bc.name, func(b *testing.B) {
			tokens := 0
			for i := range b.N {
				s, err := m.NewSession(0)
				require.NoError(b, err)
				p := model.Greedy()
				p.Temperature, p.Seed = 1, uint64(i)
				res, err := s.Generate(context.Background(), prompt,
					model.GenerateOptions{MaxTokens: 64, IgnoreEOS: bc.g == nil, Sampling: p, Grammar: bc.g},
					func(string) error { return nil })
				require.NoError(b, err)
				tokens += len(res.Tokens)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(tokens, 1)), "ns/token")
		})
	}
}

// A grammar the vocabulary cannot follow (model.ErrGrammarDeadEnd, met
// while generating) is the client's: 400 naming the field that set the
// constraint.
func TestGrammarDeadEndIs400(t *testing.T) {
	s := testServed(t)
	for _, c := range []struct{ body, param string }{
		{`{"prompt":"x","grammar":"root ::= \"a\""}`, "grammar"},
		{`{"prompt":"x","response_format":{"type":"json_object"}}`, "response_format"},
		{`{"prompt":"x","json_schema":{"type":"string"}}`, "json_schema"},
	} {
		t.Run(c.param, func(t *testing.T) {
			var req CompletionRequest
			require.NoError(t, decodeJSON(strings.NewReader(c.body), &req))
			gr, err := FromCompletionRequest(&req, s, 1)
			require.NoError(t, err)
			require.NotNil(t, gr.Options.Grammar)
			dead := fmt.Errorf("%w after 3 generated tokens (position 9 of the sequence)", model.ErrGrammarDeadEnd)
			ae := gr.requestError(dead)
			assert.Equal(t, http.StatusBadRequest, ae.Status)
			assert.Equal(t, TypeInvalidRequest, ae.Type)
			assert.Equal(t, CodeInvalidValue, ae.Code)
			assert.Equal(t, c.param, ae.Param)
			assert.Contains(t, ae.Message, "cannot follow the constraint")
			assert.Contains(t, ae.Message, "after 3 generated tokens")
		})
	}
}
