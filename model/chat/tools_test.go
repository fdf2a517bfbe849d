package chat

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/m40llm/m40llm/model/grammar"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func loadTemplate(t *testing.T, file string) *Template {
	t.Helper()
	src, err := os.ReadFile("testdata/" + file)
	require.NoError(t, err)
	tmpl, err := Parse(string(src))
	require.NoError(t, err)
	return tmpl
}

// The tools of the render tests, in OpenAI's shape, keys in this order.
const weatherTools = `[{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", ` +
	`"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]`

var weatherTurns = []Message{
	{Role: "user", Content: "What is the weather in Paris?"},
	{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_1", Name: "get_weather", Arguments: json.RawMessage(`{"city":"Paris"}`)}}},
	{Role: "tool", ToolCallID: "call_1", Content: `{"temp": 21}`},
}

// The expected prompts below were written by hand from the templates'
// logic under Jinja2 and transformers' tojson (json.dumps with
// ensure_ascii=False): what apply_chat_template returns for these
// messages, tools and add_generation_prompt=True.

// Llama 3.1: tools in the first user message (tools_in_user_message
// defaults to true) as tojson(indent=4), the call as {"name",
// "parameters"}, the tool result under the ipython header and, since a
// string "is iterable" in Jinja2, written with tojson.
func TestRenderToolsLlama31(t *testing.T) {
	tmpl := loadTemplate(t, "llama-3.1-8b-instruct.jinja")
	assert.Equal(t, ToolsLlama3, tmpl.ToolFormat())
	got, err := tmpl.Render(context.Background(), weatherTurns, RenderOptions{
		AddGenerationPrompt: true, BOSToken: "<|begin_of_text|>", Tools: json.RawMessage(weatherTools)})
	require.NoError(t, err)
	want := "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
		"Environment: ipython\n" +
		"Cutting Knowledge Date: December 2023\n" +
		"Today Date: 26 Jul 2024\n\n" +
		"<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\n" +
		"Given the following functions, please respond with a JSON for a function call " +
		"with its proper arguments that best answers the given prompt.\n\n" +
		`Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.` +
		"Do not use variables.\n\n" +
		"{\n" +
		"    \"type\": \"function\",\n" +
		"    \"function\": {\n" +
		"        \"name\": \"get_weather\",\n" +
		"        \"description\": \"Get the weather\",\n" +
		"        \"parameters\": {\n" +
		"            \"type\": \"object\",\n" +
		"            \"properties\": {\n" +
		"                \"city\": {\n" +
		"                    \"type\": \"string\"\n" +
		"                }\n" +
		"            },\n" +
		"            \"required\": [\n" +
		"                \"city\"\n" +
		"            ]\n" +
		"        }\n" +
		"    }\n" +
		"}\n\n" +
		"What is the weather in Paris?<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\n" +
		`{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>` +
		"<|start_header_id|>ipython<|end_header_id|>\n\n" +
		`"{\"temp\": 21}"<|eot_id|>` +
		"<|start_header_id|>assistant<|end_header_id|>\n\n"
	assert.Equal(t, want, got)

	// Without tools: no Environment line, the user message in the loop.
	got, err = tmpl.Render(context.Background(), weatherTurns[:1], RenderOptions{AddGenerationPrompt: true, BOSToken: "<|begin_of_text|>"})
	require.NoError(t, err)
	assert.Equal(t, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"+
		"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"+
		"<|start_header_id|>user<|end_header_id|>\n\nWhat is the weather in Paris?<|eot_id|>"+
		"<|start_header_id|>assistant<|end_header_id|>\n\n", got)

	// The template refuses two calls in one message.
	two := []Message{weatherTurns[0], {Role: "assistant", ToolCalls: []ToolCall{
		{Name: "get_weather", Arguments: json.RawMessage(`{"city":"Paris"}`)},
		{Name: "get_weather", Arguments: json.RawMessage(`{"city":"Rome"}`)}}}}
	_, err = tmpl.Render(context.Background(), two, RenderOptions{Tools: json.RawMessage(weatherTools)})
	var te *TemplateError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "This model only supports single tool-calls at once!", te.Message)
}

// Qwen 2.5: tools as one tojson line each in the system message, calls
// as <tool_call> blocks after the content, consecutive tool results in
// one user turn.
func TestRenderToolsQwen25(t *testing.T) {
	tmpl := loadTemplate(t, "qwen2.5-7b-instruct.jinja")
	assert.Equal(t, ToolsHermes, tmpl.ToolFormat())
	sysTools := "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
		"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
		`{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", ` +
		`"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}` +
		"\n</tools>\n\nFor each function call, return a json object with function name and arguments within " +
		"<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n" +
		"</tool_call><|im_end|>\n"
	got, err := tmpl.Render(context.Background(), weatherTurns, RenderOptions{AddGenerationPrompt: true, Tools: json.RawMessage(weatherTools)})
	require.NoError(t, err)
	want := "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant." + sysTools +
		"<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n" +
		"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>\n" +
		"<|im_start|>assistant\n"
	assert.Equal(t, want, got)

	// A system message, a reply with text and two calls, two results.
	msgs := []Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Paris or Rome, which is warmer?"},
		{Role: "assistant", Content: "Let me check.", ToolCalls: []ToolCall{
			{ID: "a", Name: "get_weather", Arguments: json.RawMessage(`{"city": "Paris", "unit": "°C"}`)},
			{ID: "b", Name: "get_weather", Arguments: json.RawMessage(`{"city":"Rome","days":[1,2.5]}`)}}},
		{Role: "tool", ToolCallID: "a", Content: "18"},
		{Role: "tool", ToolCallID: "b", Content: "24"},
	}
	got, err = tmpl.Render(context.Background(), msgs, RenderOptions{AddGenerationPrompt: true, Tools: json.RawMessage(weatherTools)})
	require.NoError(t, err)
	want = "<|im_start|>system\nBe brief." + sysTools +
		"<|im_start|>user\nParis or Rome, which is warmer?<|im_end|>\n" +
		"<|im_start|>assistant\nLet me check." +
		"\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"°C\"}}\n</tool_call>" +
		"\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"days\": [1, 2.5]}}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\n<tool_response>\n18\n</tool_response>\n<tool_response>\n24\n</tool_response><|im_end|>\n" +
		"<|im_start|>assistant\n"
	assert.Equal(t, want, got)

	// Arguments that are not JSON fail the render, naming the message.
	_, err = tmpl.Render(context.Background(), []Message{{Role: "assistant", ToolCalls: []ToolCall{{Name: "f", Arguments: json.RawMessage(`{"a":`)}}}}, RenderOptions{})
	var ce *Error
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Error(), "messages[0]: tool_calls[0].arguments")
}

// Python's json.dumps as transformers' tojson calls it.
func TestToJSONPython(t *testing.T) {
	tmpl, err := Parse(`{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ v|tojson(separators=(',', ':')) }}|{{ v | tojson(sort_keys=true) }}|{{ "| tojson" }}`)
	require.NoError(t, err)
	got, err := tmpl.Render(context.Background(), nil, RenderOptions{Extra: map[string]any{
		"v": json.RawMessage(`{"z": [1, 1.5, 1e20, 0.0001, 1e-5, -0.0, true, null], "a": "<é>\n\"\u0001", "e": {}, "l": []}`)}})
	require.NoError(t, err)
	want := `{"z": [1, 1.5, 1e+20, 0.0001, 1e-05, -0.0, true, null], "a": "<é>\n\"\u0001", "e": {}, "l": []}` + "|" +
		"{\n  \"z\": [\n    1,\n    1.5,\n    1e+20,\n    0.0001,\n    1e-05,\n    -0.0,\n    true,\n    null\n  ],\n" +
		"  \"a\": \"<é>\\n\\\"\\u0001\",\n  \"e\": {},\n  \"l\": []\n}" + "|" +
		`{"z":[1,1.5,1e+20,0.0001,1e-05,-0.0,true,null],"a":"<é>\n\"\u0001","e":{},"l":[]}` + "|" +
		`{"a": "<é>\n\"\u0001", "e": {}, "l": [], "z": [1, 1.5, 1e+20, 0.0001, 1e-05, -0.0, true, null]}` + "|" +
		"| tojson"
	assert.Equal(t, want, got)
}

func TestToolFormatDetection(t *testing.T) {
	for src, want := range map[string]ToolFormat{
		`{{ messages[0].content }}`:                                                ToolsUnsupported,
		`{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>`:              ToolsHermes,
		`{% if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}{% endif %}[TOOL_CALLS]`: ToolsMistral,
		`{% if tools %}<|start_header_id|>"parameters"{% endif %}`:                 ToolsLlama3,
		`{% if tools %}{{ tools }}{% endif %}`:                                     ToolsUnsupported,
	} {
		tmpl, err := Parse(src)
		require.NoError(t, err)
		assert.Equal(t, want, tmpl.ToolFormat(), "%s", src)
	}
	for _, name := range []string{"chatml", "llama2", "llama3", "plain", "zephyr", "gemma"} {
		if tmpl, err := Builtin(name); err == nil {
			assert.Equal(t, ToolsUnsupported, tmpl.ToolFormat(), name)
		}
	}
}

func TestParseToolCalls(t *testing.T) {
	type call struct{ name, args string }
	cases := []struct {
		name    string
		f       ToolFormat
		text    string
		calls   []call
		content string
		err     error
	}{
		{"hermes one", ToolsHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
			[]call{{"get_weather", `{"city":"Paris"}`}}, "", nil},
		{"hermes text before, two calls", ToolsHermes,
			" Let me look.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": [1, 2]}}\n</tool_call>\n",
			[]call{{"a", `{}`}, {"b", `{"x":[1,2]}`}}, " Let me look.", nil},
		{"hermes text after", ToolsHermes, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> done", []call{{"a", `{}`}}, "", nil},
		{"hermes unterminated", ToolsHermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"k\": 1}}",
			[]call{{"a", `{"k":1}`}}, "", nil},
		{"hermes arguments as a string", ToolsHermes, `<tool_call>{"name": "a", "arguments": "{\"k\": 1}"}</tool_call>`,
			[]call{{"a", `{"k":1}`}}, "", nil},
		{"hermes none", ToolsHermes, "It is sunny.", nil, "", ErrNoToolCall},
		{"hermes malformed", ToolsHermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"k\": }\n</tool_call>", nil, "", ErrMalformedToolCall},
		{"hermes no name", ToolsHermes, "<tool_call>{\"arguments\": {}}</tool_call>", nil, "", ErrMalformedToolCall},
		{"hermes arguments not an object", ToolsHermes, "<tool_call>{\"name\": \"a\", \"arguments\": [1]}</tool_call>", nil, "", ErrMalformedToolCall},
		{"mistral", ToolsMistral, `Sure. [TOOL_CALLS] [{"name": "a", "arguments": {"q": "x"}, "id": "abc123def"}, {"name": "b", "arguments": {}}]`,
			[]call{{"a", `{"q":"x"}`}, {"b", `{}`}}, "Sure.", nil},
		{"mistral malformed", ToolsMistral, `[TOOL_CALLS] [{"name": "a", "arguments": {"q": "x"}`, nil, "", ErrMalformedToolCall},
		{"mistral none", ToolsMistral, "No call.", nil, "", ErrNoToolCall},
		{"mistral without the marker", ToolsMistral, ` [{"name": "a", "arguments": {"q": 1}}]`, []call{{"a", `{"q":1}`}}, "", nil},
		{"mistral a plain list", ToolsMistral, `[1, 2]`, nil, "", ErrNoToolCall},
		{"llama3", ToolsLlama3, ` {"name": "get_weather", "parameters": {"city": "Paris"}}`, []call{{"get_weather", `{"city":"Paris"}`}}, "", nil},
		{"llama3 python tag, arguments key, two calls", ToolsLlama3, `<|python_tag|>{"name": "a", "arguments": {"n": 1}}; {"name": "b", "parameters": {}}`,
			[]call{{"a", `{"n":1}`}, {"b", `{}`}}, "", nil},
		{"llama3 text", ToolsLlama3, "Paris is sunny.", nil, "", ErrNoToolCall},
		{"llama3 plain JSON", ToolsLlama3, `{"answer": 42}`, nil, "", ErrNoToolCall},
		{"llama3 malformed", ToolsLlama3, `{"name": "a", "parameters": {"n": 1}`, nil, "", ErrMalformedToolCall},
		{"llama3 text after", ToolsLlama3, `{"name": "a", "parameters": {}} and more`, nil, "", ErrMalformedToolCall},
		{"unsupported", ToolsUnsupported, "<tool_call>{}</tool_call>", nil, "", ErrNoToolCall},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls, content, err := ParseToolCalls(c.f, c.text)
			if c.err != nil {
				require.Error(t, err)
				assert.True(t, errors.Is(err, c.err), "%v", err)
				if errors.Is(c.err, ErrMalformedToolCall) {
					var tce *ToolCallError
					assert.ErrorAs(t, err, &tce)
				}
				return
			}
			require.NoError(t, err)
			require.Len(t, calls, len(c.calls))
			for i, want := range c.calls {
				assert.Equal(t, want.name, calls[i].Name)
				assert.JSONEq(t, want.args, string(calls[i].Arguments))
				assert.Equal(t, want.args, string(calls[i].Arguments), "compact")
			}
			assert.Equal(t, c.content, content)
		})
	}
	// The calls before a malformed one come with the error.
	calls, _, err := ParseToolCalls(ToolsHermes, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"b")
	assert.ErrorIs(t, err, ErrMalformedToolCall)
	require.Len(t, calls, 1)
	assert.Equal(t, "a", calls[0].Name)
	calls, _, err = ParseToolCalls(ToolsMistral, `[TOOL_CALLS] [{"name": "a", "arguments": {}, "id": "abc123def"}]`)
	require.NoError(t, err)
	assert.Equal(t, "abc123def", calls[0].ID)
}

// Undecided holds back exactly the text that may still become a call.
func TestUndecided(t *testing.T) {
	for _, c := range []struct {
		f    ToolFormat
		text string
		want int
	}{
		{ToolsHermes, "Hello", 5},
		{ToolsHermes, "Hello <tool", 5},
		{ToolsHermes, "Hello <", 5},
		{ToolsHermes, "Hello\n<tool_call>{", 5},
		{ToolsHermes, "Hello \n", 5},
		{ToolsHermes, "a < b", 5},
		{ToolsMistral, "x [TOOL", 1},
		{ToolsMistral, " [{", 0},
		{ToolsLlama3, "", 0},
		{ToolsLlama3, "  ", 0},
		{ToolsLlama3, " {\"na", 0},
		{ToolsLlama3, "<|python", 0},
		{ToolsLlama3, "Paris", 5},
		{ToolsUnsupported, "<tool_call>", 11},
	} {
		assert.Equal(t, c.want, c.f.Undecided(c.text), "%v %q", c.f, c.text)
	}
}

func TestComplete(t *testing.T) {
	one := "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>"
	for _, c := range []struct {
		f    ToolFormat
		text string
		want int
	}{
		{ToolsHermes, "Hi", 0},
		{ToolsHermes, "Hi " + one[:20], 0},
		{ToolsHermes, "Hi " + one, 3 + len(one)},
		{ToolsHermes, "Hi " + one + "\n" + one[:30], 3 + len(one)},
		{ToolsHermes, "</tool_call> then " + one[:30], 0},
		{ToolsMistral, `[TOOL_CALLS] [{"name": "a", "arguments": {}}]`, 0},
		{ToolsLlama3, `{"name": "a", "parameters": {}}`, 0},
	} {
		n := c.f.Complete(c.text)
		assert.Equal(t, c.want, n, "%v %q", c.f, c.text)
		if n > 0 {
			calls, _, err := ParseToolCalls(c.f, c.text[:n])
			require.NoError(t, err)
			assert.NotEmpty(t, calls)
		}
	}
}

// CallGrammar's sentences are calls that ParseToolCalls reads back.
func TestCallGrammar(t *testing.T) {
	args, err := grammar.SchemaRules([]byte(`{"type":"object","properties":{"city":{"enum":["Paris","Rome"]}},"required":["city"],"additionalProperties":false}`), "args-0")
	require.NoError(t, err)
	empty, err := grammar.SchemaRules([]byte(`{"type":"object","properties":{},"additionalProperties":false}`), "args-1")
	require.NoError(t, err)
	tools := []GrammarTool{{Name: "get_weather", Rule: "args-0"}, {Name: "now", Rule: "args-1"}}
	for _, c := range []struct {
		f        ToolFormat
		parallel bool
		text     string
		ok       bool
	}{
		{ToolsHermes, false, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>", true},
		{ToolsHermes, false, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>", true},
		{ToolsHermes, false, "<tool_call>\n{\"name\": \"now\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>", false},
		{ToolsHermes, false, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>", false},
		{ToolsHermes, true, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", true},
		{ToolsHermes, false, "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>", false},
		{ToolsLlama3, true, `{"name": "get_weather", "parameters": {"city": "Paris"}}`, true},
		{ToolsLlama3, true, `{"name": "get_weather", "arguments": {"city": "Paris"}}`, false},
		{ToolsMistral, true, `[TOOL_CALLS] [{"name": "now", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Paris"}}]`, true},
	} {
		src, err := c.f.CallGrammar(tools, c.parallel)
		require.NoError(t, err)
		g, err := grammar.Parse(src + args + empty + grammar.JSONRules)
		require.NoError(t, err, src)
		m := g.NewMatcher()
		ok := m.AcceptString(c.text) == nil && m.Accepting()
		require.Equal(t, c.ok, ok, "%v %q", c.f, c.text)
		if ok {
			calls, _, err := ParseToolCalls(c.f, c.text)
			require.NoError(t, err)
			assert.NotEmpty(t, calls)
		}
	}
	_, err = ToolsUnsupported.CallGrammar(tools, false)
	assert.Error(t, err)
	_, err = ToolsHermes.CallGrammar(nil, false)
	assert.Error(t, err)
}
