package model_test

import (
	"context"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/grammar"
)

// A bounded schema, so that every generation can finish within MaxTokens.
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

// Generations of the bundled model under a JSON schema, on 50 seeds, all
// validate against the schema with an independent validator.
func TestGenerateJSONSchema(t *testing.T) {
	m, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{}), model.Options{CtxSize: 256})
	require.NoError(t, err)
	defer m.Close()
	g, err := grammar.CompileJSONSchema([]byte(storySchema))
	require.NoError(t, err)
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(storySchema))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("s.json", doc))
	val, err := c.Compile("s.json")
	require.NoError(t, err)

	prompt := m.Tokenizer.Encode("Once upon a time", true, false)
	for seed := range uint64(50) {
		s, err := m.NewSession(0)
		require.NoError(t, err)
		p := model.Greedy()
		p.Temperature, p.Seed = 1, seed
		var out strings.Builder
		res, err := s.Generate(context.Background(), prompt, model.GenerateOptions{MaxTokens: 200, Sampling: p, Grammar: g},
			func(text string) error { out.WriteString(text); return nil })
		require.NoError(t, err, "seed %d", seed)
		require.Equal(t, model.FinishStop, res.Finish, "seed %d: %q", seed, out.String())
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(out.String()))
		require.NoError(t, err, "seed %d: %q", seed, out.String())
		assert.NoError(t, val.Validate(v), "seed %d: %q", seed, out.String())
	}
}
