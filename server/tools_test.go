package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The templates with tool calling, as their models ship them.
var toolTemplates = []string{"llama-3.1-8b-instruct.jinja", "qwen2.5-7b-instruct.jinja"}

func toolTemplate(t *testing.T, file string) *chat.Template {
	t.Helper()
	tmpl, err := chat.ParseFile("../model/chat/testdata/" + file)
	require.NoError(t, err)
	return tmpl
}

// Bounded schemas, so that every constrained call ends within max_tokens.
const (
	weatherSchema = `{"type": "object", "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 10},
		"unit": {"enum": ["c", "f"]}}, "required": ["city"], "additionalProperties": false}`
	alarmSchema = `{"type": "object", "properties": {"hour": {"type": "integer"}, "label": {"type": "string", "maxLength": 6}},
		"required": ["hour"], "additionalProperties": false}`
)

func toolParams(t *testing.T) []openai.ChatCompletionToolUnionParam {
	return []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather",
			Description: openai.String("Get the weather in a city"), Parameters: schemaMap(t, weatherSchema)}),
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "set_alarm",
			Description: openai.String("Set an alarm"), Parameters: schemaMap(t, alarmSchema)}),
	}
}

// checkCall asserts that call is a well-formed call of one of the tools
// whose arguments the tool's schema (by an independent validator)
// accepts.
func checkCall(t *testing.T, call openai.ChatCompletionMessageToolCallUnion, what string) {
	t.Helper()
	schemas := map[string]*jsonschema.Schema{"get_weather": validator(t, weatherSchema), "set_alarm": validator(t, alarmSchema)}
	assert.True(t, strings.HasPrefix(call.ID, "call_"), "%s: id %q", what, call.ID)
	assert.Equal(t, "function", call.Type, what)
	v, ok := schemas[call.Function.Name]
	require.True(t, ok, "%s: a call of %q", what, call.Function.Name)
	args, err := jsonschema.UnmarshalJSON(strings.NewReader(call.Function.Arguments))
	require.NoError(t, err, "%s: %q", what, call.Function.Arguments)
	assert.NoError(t, v.Validate(args), "%s: %q", what, call.Function.Arguments)
}

// tool_choice required and a named function give calls whose arguments
// validate against the function's schema, on several seeds, with both
// templates; parallel_tool_calls false gives one call.
func TestToolChoiceConstrained(t *testing.T) {
	for _, file := range toolTemplates {
		t.Run(file, func(t *testing.T) {
			ts := startServer(t, 1, 4096, Options{ChatTemplate: toolTemplate(t, file)})
			c := ts.client()
			ctx := context.Background()
			names := map[string]int{}
			for seed := range int64(12) {
				choice := openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
				if seed%3 == 2 {
					choice = openai.ChatCompletionToolChoiceOptionUnionParam{OfFunctionToolChoice: &openai.ChatCompletionNamedToolChoiceParam{
						Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "set_alarm"}}}
				}
				res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model:             modelName,
					Messages:          []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
					Tools:             toolParams(t),
					ToolChoice:        choice,
					ParallelToolCalls: openai.Bool(false),
					Temperature:       openai.Float(1),
					Seed:              openai.Int(seed),
					MaxTokens:         openai.Int(400),
				})
				what := fmt.Sprintf("seed %d", seed)
				require.NoError(t, err, what)
				ch := res.Choices[0]
				require.Equal(t, "tool_calls", ch.FinishReason, "%s: %q", what, ch.Message.Content)
				require.Len(t, ch.Message.ToolCalls, 1, what)
				assert.Empty(t, ch.Message.Content, what)
				checkCall(t, ch.Message.ToolCalls[0], what)
				if seed%3 == 2 {
					assert.Equal(t, "set_alarm", ch.Message.ToolCalls[0].Function.Name, what)
				}
				names[ch.Message.ToolCalls[0].Function.Name]++
			}
			t.Logf("calls: %v", names)
		})
	}
}

// The round trip: a call, then the assistant message with its tool_calls
// and the tool's result sent back, renders as the template renders it
// (the prompt's token count is that of the conversation rendered and
// tokenized here) and generates.
func TestToolRoundTrip(t *testing.T) {
	for _, file := range toolTemplates {
		t.Run(file, func(t *testing.T) {
			tmpl := toolTemplate(t, file)
			ts := startServer(t, 1, 4096, Options{ChatTemplate: tmpl})
			c := ts.client()
			ctx := context.Background()
			params := openai.ChatCompletionNewParams{
				Model:             modelName,
				Messages:          []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
				Tools:             toolParams(t)[:1],
				ToolChoice:        openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
				ParallelToolCalls: openai.Bool(false),
				Temperature:       openai.Float(0),
				MaxTokens:         openai.Int(300),
			}
			first, err := c.Chat.Completions.New(ctx, params)
			require.NoError(t, err)
			require.Equal(t, "tool_calls", first.Choices[0].FinishReason)
			call := first.Choices[0].Message.ToolCalls[0]
			checkCall(t, call, "first")

			params.Messages = append(params.Messages, first.Choices[0].Message.ToParam(), openai.ToolMessage(`{"temp": 21}`, call.ID))
			params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("auto")}
			params.MaxTokens = openai.Int(20)
			second, err := c.Chat.Completions.New(ctx, params)
			require.NoError(t, err)
			assert.Contains(t, []string{"stop", "length", "tool_calls"}, second.Choices[0].FinishReason)
			assert.Positive(t, second.Usage.CompletionTokens)

			toolsJSON, err := json.Marshal(params.Tools) // as the client sends them
			require.NoError(t, err)
			msgs := []chat.Message{
				{Role: "user", Content: "What is the weather in Paris?"},
				{Role: "assistant", ToolCalls: []chat.ToolCall{{ID: call.ID, Name: call.Function.Name, Arguments: json.RawMessage(call.Function.Arguments)}}},
				{Role: "tool", ToolCallID: call.ID, Content: `{"temp": 21}`},
			}
			ids, text, err := ts.m.ChatTokens(ctx, tmpl, msgs, model.ChatOptions{AddGenerationPrompt: true, Tools: toolsJSON})
			require.NoError(t, err)
			assert.Equal(t, int64(len(ids)), second.Usage.PromptTokens)
			// The call is in the prompt as the template writes calls.
			var args map[string]any
			require.NoError(t, json.Unmarshal([]byte(call.Function.Arguments), &args))
			key := `"arguments": `
			if strings.HasPrefix(file, "llama") {
				key = `"parameters": `
			}
			assert.Contains(t, text, `{"name": "`+call.Function.Name+`", `+key)
			result := `{"temp": 21}`
			if strings.HasPrefix(file, "llama") {
				result = `"{\"temp\": 21}"` // a string "is iterable": tojson
			}
			assert.Contains(t, text, result)
		})
	}
}

// A streamed reply at temperature 0 reassembles to the non-streamed one:
// the same calls (names and arguments), content and finish reason.
func TestToolCallsStreamed(t *testing.T) {
	for _, file := range toolTemplates {
		t.Run(file, func(t *testing.T) {
			ts := startServer(t, 1, 4096, Options{ChatTemplate: toolTemplate(t, file)})
			c := ts.client()
			ctx := context.Background()
			for _, choice := range []string{"required", "auto"} {
				params := openai.ChatCompletionNewParams{
					Model:             modelName,
					Messages:          []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
					Tools:             toolParams(t),
					ToolChoice:        openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String(choice)},
					ParallelToolCalls: openai.Bool(false),
					Temperature:       openai.Float(0),
					MaxTokens:         openai.Int(300),
				}
				res, err := c.Chat.Completions.New(ctx, params)
				require.NoError(t, err)
				want := res.Choices[0]
				if choice == "required" {
					require.Equal(t, "tool_calls", want.FinishReason)
				}

				stream := c.Chat.Completions.NewStreaming(ctx, params)
				acc := openai.ChatCompletionAccumulator{}
				var content strings.Builder
				finish := ""
				for stream.Next() {
					ch := stream.Current()
					acc.AddChunk(ch)
					if len(ch.Choices) > 0 {
						content.WriteString(ch.Choices[0].Delta.Content)
						if ch.Choices[0].FinishReason != "" {
							finish = ch.Choices[0].FinishReason
						}
					}
				}
				require.NoError(t, stream.Err())
				assert.Equal(t, want.FinishReason, finish, choice)
				assert.Equal(t, want.Message.Content, content.String(), choice)
				got := acc.Choices[0].Message.ToolCalls
				require.Len(t, got, len(want.Message.ToolCalls), choice)
				for i := range got {
					assert.Equal(t, want.Message.ToolCalls[i].Function.Name, got[i].Function.Name, choice)
					assert.Equal(t, want.Message.ToolCalls[i].Function.Arguments, got[i].Function.Arguments, choice)
					assert.True(t, strings.HasPrefix(got[i].ID, "call_"), choice)
				}
			}
		})
	}
}

// The streaming of a reply with text before its calls, piece by piece
// (the pieces cut through the call marker): each call is sent once it
// closes, and the content deltas and the call deltas add up to the
// non-streamed message.
func TestChatFormatToolDeltas(t *testing.T) {
	reply := "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n" +
		"<tool_call>\n{\"name\": \"set_alarm\", \"arguments\": {\"hour\": 7}}\n</tool_call>"
	for _, cut := range []int{1, 3, 7, 16} {
		f := &chatFormat{id: "x", model: modelName, tools: &toolUse{format: chat.ToolsHermes, parse: true, parallel: true}}
		var chunks []any
		for i := 0; i < len(reply); i += cut {
			chunks = append(chunks, f.delta(model.Piece{Text: reply[i:min(i+cut, len(reply))]})...)
		}
		streamed := 0 // call deltas sent before the reply ended
		for _, c := range chunks {
			streamed += len(c.(*ChatCompletionChunk).Choices[0].Delta.ToolCalls)
		}
		assert.Equal(t, 4, streamed, "cut %d: both calls are sent as they close", cut)
		chunks = append(chunks, f.end(model.FinishStop)...)
		var content strings.Builder
		type call struct{ id, name, args string }
		var calls []call
		finish := ""
		for _, c := range chunks {
			ch := c.(*ChatCompletionChunk).Choices[0]
			if ch.Delta.Content != nil {
				content.WriteString(*ch.Delta.Content)
				assert.NotContains(t, *ch.Delta.Content, "<", "cut %d: a piece of the marker was sent", cut)
			}
			for _, d := range ch.Delta.ToolCalls {
				if d.Index == len(calls) {
					calls = append(calls, call{id: d.ID, name: d.Function.Name})
				}
				require.Less(t, d.Index, len(calls))
				calls[d.Index].args += d.Function.Arguments
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		whole := f.whole(reply, &model.Result{Finish: model.FinishStop}).(*ChatCompletionResponse).Choices[0]
		assert.Equal(t, "Let me check.", content.String(), "cut %d", cut)
		assert.Equal(t, *whole.Message.Content, content.String(), "cut %d", cut)
		assert.Equal(t, "tool_calls", finish)
		assert.Equal(t, whole.FinishReason, finish)
		require.Len(t, calls, 2)
		for i, c := range calls {
			assert.Equal(t, whole.Message.ToolCalls[i].Function.Name, c.name)
			assert.Equal(t, whole.Message.ToolCalls[i].Function.Arguments, c.args)
			assert.True(t, strings.HasPrefix(c.id, "call_"))
		}
		assert.Equal(t, `{"city":"Paris"}`, calls[0].args)
	}
	// Mistral's templates want ids of 9 letters and digits.
	mistral := &chatFormat{id: "x", model: modelName, tools: &toolUse{format: chat.ToolsMistral, parse: true, parallel: true}}
	mc := mistral.whole(`[TOOL_CALLS] [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]`,
		&model.Result{Finish: model.FinishStop}).(*ChatCompletionResponse).Choices[0]
	require.Len(t, mc.Message.ToolCalls, 2)
	for _, c := range mc.Message.ToolCalls {
		assert.Regexp(t, `^[a-zA-Z0-9]{9}$`, c.ID)
	}
	assert.NotEqual(t, mc.Message.ToolCalls[0].ID, mc.Message.ToolCalls[1].ID)

	// parallel_tool_calls false keeps the first call.
	one := &chatFormat{id: "x", model: modelName, tools: &toolUse{format: chat.ToolsHermes, parse: true}}
	whole := one.whole(reply, &model.Result{Finish: model.FinishStop}).(*ChatCompletionResponse).Choices[0]
	require.Len(t, whole.Message.ToolCalls, 1)
	assert.Equal(t, "get_weather", whole.Message.ToolCalls[0].Function.Name)
	// A reply cut short keeps finish_reason length, and the calls before
	// the call it cut; so does one that ended in a malformed call.
	cut := one.whole(reply, &model.Result{Finish: model.FinishLength}).(*ChatCompletionResponse).Choices[0]
	assert.Equal(t, "length", cut.FinishReason)
	assert.Len(t, cut.Message.ToolCalls, 1)
	all := &chatFormat{id: "x", model: modelName, tools: &toolUse{format: chat.ToolsHermes, parse: true, parallel: true}}
	half := reply + "\n<tool_call>\n{\"name\": \"get_wea"
	cut = all.whole(half, &model.Result{Finish: model.FinishLength}).(*ChatCompletionResponse).Choices[0]
	assert.Equal(t, "length", cut.FinishReason)
	assert.Len(t, cut.Message.ToolCalls, 2)
	stopped := all.whole(half, &model.Result{Finish: model.FinishStop}).(*ChatCompletionResponse).Choices[0]
	assert.Len(t, stopped.Message.ToolCalls, 2)
	assert.Equal(t, "tool_calls", stopped.FinishReason)
	broken := all.whole("Hi <tool_call>{\"name\": 1}</tool_call>", &model.Result{Finish: model.FinishStop}).(*ChatCompletionResponse).Choices[0]
	assert.Empty(t, broken.Message.ToolCalls, "a reply whose only call is malformed is content")
	assert.Equal(t, "Hi <tool_call>{\"name\": 1}</tool_call>", *broken.Message.Content)
}

// Without tools, or with tool_choice none, a tool-less template serves
// as before; auto with a tool template and a reply that is no call is
// plain content.
func TestToolChoiceAutoAndNone(t *testing.T) {
	ts := startServer(t, 1, 1024, Options{})
	status, _, body := ts.post(t, "/v1/chat/completions", `{"max_tokens":4,"messages":[{"role":"user","content":"x"}],
		"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}`)
	require.Equal(t, http.StatusOK, status, "%s", body)

	ts = startServer(t, 1, 4096, Options{ChatTemplate: toolTemplate(t, "llama-3.1-8b-instruct.jinja")})
	res, err := ts.client().Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:       modelName,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story.")},
		Tools:       toolParams(t),
		Temperature: openai.Float(0),
		MaxTokens:   openai.Int(30),
	})
	require.NoError(t, err)
	ch := res.Choices[0]
	require.Empty(t, ch.Message.ToolCalls, "%q", ch.Message.Content)
	assert.NotEmpty(t, ch.Message.Content)
	assert.Contains(t, []string{"stop", "length"}, ch.FinishReason)
}

func TestToolErrors(t *testing.T) {
	plain := startServer(t, 1, 256, Options{})
	ts := startServer(t, 1, 256, Options{ChatTemplate: toolTemplate(t, "qwen2.5-7b-instruct.jinja")})
	const user = `"messages":[{"role":"user","content":"x"}],"max_tokens":1`
	fn := func(name, params string) string {
		return fmt.Sprintf(`{"type":"function","function":{"name":%q,"parameters":%s}}`, name, params)
	}
	many := make([]string, maxTools+1)
	for i := range many {
		many[i] = fn(fmt.Sprintf("f%d", i), `{}`)
	}
	cases := []struct {
		name        string
		srv         *testServer
		body        string
		param, code string
		says        string
	}{
		{"template without tools", plain, `{` + user + `,"tools":[` + fn("f", `{}`) + `]}`, "tools", CodeUnsupported, "does not support tools"},
		{"history calls with a template without tools", plain,
			`{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`,
			"messages[1].tool_calls", CodeUnsupported, "does not render tool calls"},
		{"not a list", ts, `{` + user + `,"tools":{"type":"function"}}`, "tools", CodeInvalidValue, "a list"},
		{"type", ts, `{` + user + `,"tools":[{"type":"custom","function":{"name":"f"}}]}`, "tools[0].type", CodeInvalidValue, "only \"function\""},
		{"no function", ts, `{` + user + `,"tools":[{"type":"function"}]}`, "tools[0].function", CodeInvalidValue, "required"},
		{"bad name", ts, `{` + user + `,"tools":[` + fn("get weather", `{}`) + `]}`, "tools[0].function.name", CodeInvalidValue, "get weather"},
		{"empty name", ts, `{` + user + `,"tools":[` + fn("", `{}`) + `]}`, "tools[0].function.name", CodeInvalidValue, "1 to 64"},
		{"duplicate name", ts, `{` + user + `,"tools":[` + fn("f", `{}`) + `,` + fn("g", `{}`) + `,` + fn("f", `{}`) + `]}`,
			"tools[2].function.name", CodeInvalidValue, "also the name of tools[0]"},
		{"parameters not an object", ts, `{` + user + `,"tools":[` + fn("f", `[1]`) + `]}`, "tools[0].function.parameters", CodeInvalidValue, "a list"},
		{"unknown tool field", ts, `{` + user + `,"tools":[{"type":"function","function":{"name":"f","mood":1}}]}`, "tools[0]", CodeInvalidValue, "mood"},
		{"too many tools", ts, `{` + user + `,"tools":[` + strings.Join(many, ",") + `]}`, "tools", CodeInvalidValue, "129 tools"},
		{"unknown function", ts, `{` + user + `,"tools":[` + fn("f", `{}`) + `],"tool_choice":{"type":"function","function":{"name":"g"}}}`,
			"tool_choice", CodeInvalidValue, `"g"`},
		{"bad tool_choice", ts, `{` + user + `,"tools":[` + fn("f", `{}`) + `],"tool_choice":"always"}`, "tool_choice", CodeInvalidValue, "always"},
		{"tool_choice object", ts, `{` + user + `,"tools":[` + fn("f", `{}`) + `],"tool_choice":{"type":"function"}}`, "tool_choice", CodeInvalidValue, "function"},
		{"required with response_format", ts, `{` + user + `,"tools":[` + fn("f", `{}`) + `],"tool_choice":"required","response_format":{"type":"json_object"}}`,
			"tool_choice", CodeInvalidValue, "cannot be combined"},
		{"schema the grammar cannot follow", ts, `{` + user + `,"tools":[` + fn("f", `{"type":"object","properties":{"s":{"type":"string","pattern":"^a"}}}`) + `],"tool_choice":"required"}`,
			"tools[0].function.parameters", CodeInvalidValue, "pattern"},
		{"history arguments not JSON", ts,
			`{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{city"}}]}]}`,
			"messages[1].tool_calls[0].function.arguments", CodeInvalidValue, "JSON"},
		{"history call without a name", ts,
			`{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"arguments":"{}"}}]}]}`,
			"messages[1].tool_calls[0].function.name", CodeInvalidValue, "required"},
		{"tool_calls on a user message", ts,
			`{"messages":[{"role":"user","content":"x","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`,
			"messages[0].tool_calls", CodeInvalidValue, "only assistant"},
		{"parallel_tool_calls a string", ts, `{` + user + `,"parallel_tool_calls":"yes"}`, "parallel_tool_calls", CodeInvalidValue, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, _, body := c.srv.post(t, "/v1/chat/completions", c.body)
			require.Equal(t, http.StatusBadRequest, status, "%s", body)
			e := decodeError(t, body)
			assert.Equal(t, c.param, deref(e.Param), "%s", body)
			assert.Equal(t, c.code, deref(e.Code), "%s", body)
			assert.Equal(t, TypeInvalidRequest, e.Type)
			assert.Contains(t, e.Message, c.says)
		})
	}
}

// Tools with n = 2: each choice is a constrained reply of calls of its
// own, the one a one-choice request with seed ChoiceSeed(seed, i) gives
// (the same calls, content and finish reason), and a stream reassembles,
// choice by choice, to the non-streamed choices.
func TestToolCallsChoices(t *testing.T) {
	ts := startServer(t, 2, 4096, Options{ChatTemplate: toolTemplate(t, "qwen2.5-7b-instruct.jinja")})
	c := ts.client()
	ctx := context.Background()
	const seed = 7
	params := openai.ChatCompletionNewParams{
		Model:             modelName,
		Messages:          []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
		Tools:             toolParams(t),
		ToolChoice:        openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
		ParallelToolCalls: openai.Bool(false),
		Temperature:       openai.Float(1),
		Seed:              openai.Int(seed),
		MaxTokens:         openai.Int(400),
		N:                 openai.Int(2),
	}
	res, err := c.Chat.Completions.New(ctx, params)
	require.NoError(t, err)
	require.Len(t, res.Choices, 2)
	sameCalls := func(want, got []openai.ChatCompletionMessageToolCallUnion, what string) {
		t.Helper()
		require.Len(t, got, len(want), what)
		for k := range got {
			assert.Equal(t, want[k].Function.Name, got[k].Function.Name, what)
			assert.Equal(t, want[k].Function.Arguments, got[k].Function.Arguments, what)
		}
	}
	for i, ch := range res.Choices {
		what := fmt.Sprintf("choice %d", i)
		assert.Equal(t, int64(i), ch.Index, what)
		require.Equal(t, "tool_calls", ch.FinishReason, "%s: %q", what, ch.Message.Content)
		require.Len(t, ch.Message.ToolCalls, 1, what)
		checkCall(t, ch.Message.ToolCalls[0], what)
		one := params
		one.N, one.Seed = openai.Int(1), openai.Int(int64(sample.ChoiceSeed(seed, i)))
		alone, err := c.Chat.Completions.New(ctx, one)
		require.NoError(t, err, what)
		assert.Equal(t, alone.Choices[0].FinishReason, ch.FinishReason, what)
		assert.Equal(t, alone.Choices[0].Message.Content, ch.Message.Content, what)
		sameCalls(alone.Choices[0].Message.ToolCalls, ch.Message.ToolCalls, what+" alone")
	}

	stream := c.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	finish := map[int64]string{}
	for stream.Next() {
		ch := stream.Current()
		acc.AddChunk(ch)
		for _, c := range ch.Choices {
			if c.FinishReason != "" {
				finish[c.Index] = c.FinishReason
			}
		}
	}
	require.NoError(t, stream.Err())
	require.Len(t, acc.Choices, 2)
	for i, ch := range acc.Choices {
		what := fmt.Sprintf("streamed choice %d", i)
		assert.Equal(t, "tool_calls", finish[int64(i)], what)
		sameCalls(res.Choices[i].Message.ToolCalls, ch.Message.ToolCalls, what)
		for _, call := range ch.Message.ToolCalls {
			assert.True(t, strings.HasPrefix(call.ID, "call_"), what)
		}
	}
}
