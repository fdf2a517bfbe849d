package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUnsupportedParameters(t *testing.T) {
	ts := startServer(t, 1, 128, Options{})
	const chatBase = `"messages":[{"role":"user","content":"x"}],"max_tokens":1`
	const cmplBase = `"prompt":"Once","max_tokens":1`
	chatWith := func(f string) string { return `{` + chatBase + `,` + f + `}` }
	cmplWith := func(f string) string { return `{` + cmplBase + `,` + f + `}` }
	refused := []struct {
		name, path, body, param, code string
	}{
		{"tools", "/v1/chat/completions", chatWith(`"tools":[{"type":"function","function":{"name":"f"}}]`), "tools", CodeUnsupported},
		{"tool_choice required without tools", "/v1/chat/completions", chatWith(`"tool_choice":"required"`), "tool_choice", CodeInvalidValue},
		{"named tool_choice without tools", "/v1/chat/completions", chatWith(`"tool_choice":{"type":"function","function":{"name":"f"}}`), "tool_choice", CodeInvalidValue},
		{"functions", "/v1/chat/completions", chatWith(`"functions":[{"name":"f"}]`), "functions", CodeUnsupported},
		{"function_call named", "/v1/chat/completions", chatWith(`"function_call":{"name":"f"}`), "function_call", CodeUnsupported},
		{"audio", "/v1/chat/completions", chatWith(`"audio":{"voice":"alloy","format":"mp3"}`), "audio", CodeUnsupported},
		{"audio modality", "/v1/chat/completions", chatWith(`"modalities":["text","audio"]`), "modalities", CodeUnsupported},
		{"prediction", "/v1/chat/completions", chatWith(`"prediction":{"type":"content","content":"x"}`), "prediction", CodeUnsupported},
		{"store", "/v1/chat/completions", chatWith(`"store":true`), "store", CodeUnsupported},
		{"metadata", "/v1/chat/completions", chatWith(`"metadata":{"k":"v"}`), "metadata", CodeUnsupported},
		{"service_tier flex", "/v1/chat/completions", chatWith(`"service_tier":"flex"`), "service_tier", CodeUnsupported},
		{"reasoning_effort", "/v1/chat/completions", chatWith(`"reasoning_effort":"high"`), "reasoning_effort", CodeUnsupported},
		{"verbosity", "/v1/chat/completions", chatWith(`"verbosity":"low"`), "verbosity", CodeUnsupported},
		{"web_search_options", "/v1/chat/completions", chatWith(`"web_search_options":{}`), "web_search_options", CodeUnsupported},
		{"moderation", "/v1/chat/completions", chatWith(`"moderation":{}`), "moderation", CodeUnsupported},
		{"parallel_tool_calls a string", "/v1/chat/completions", chatWith(`"parallel_tool_calls":"yes"`), "parallel_tool_calls", CodeInvalidValue},
		{"user a number", "/v1/chat/completions", chatWith(`"user":5`), "user", CodeInvalidValue},
		{"chat n 9", "/v1/chat/completions", chatWith(`"n":9`), "n", CodeInvalidValue},
		{"top_logprobs without logprobs", "/v1/chat/completions", chatWith(`"top_logprobs":2`), "top_logprobs", CodeInvalidValue},
		{"top_logprobs 21", "/v1/chat/completions", chatWith(`"logprobs":true,"top_logprobs":21`), "top_logprobs", CodeInvalidValue},
		{"assistant tool_calls", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[1].tool_calls", CodeUnsupported},
		{"assistant refusal", "/v1/chat/completions", `{"messages":[{"role":"assistant","content":"x","refusal":"no"}]}`, "messages[0].refusal", CodeUnsupported},
		{"best_of 2", "/v1/completions", cmplWith(`"best_of":2`), "best_of", CodeUnsupported},
		{"echo", "/v1/completions", cmplWith(`"echo":true`), "echo", CodeUnsupported},
		{"suffix", "/v1/completions", cmplWith(`"suffix":" the end"`), "suffix", CodeUnsupported},
		{"completions n -1", "/v1/completions", cmplWith(`"n":-1`), "n", CodeInvalidValue},
		{"best_of a string", "/v1/completions", cmplWith(`"best_of":"2"`), "best_of", CodeInvalidValue},
		{"best_of 2 n 3", "/v1/completions", cmplWith(`"best_of":2,"n":3`), "best_of", CodeUnsupported},
		{"completions logprobs 6", "/v1/completions", cmplWith(`"logprobs":6`), "logprobs", CodeInvalidValue},
		{"completions logprobs -1", "/v1/completions", cmplWith(`"logprobs":-1`), "logprobs", CodeInvalidValue},
		// Fields OpenAI does not define, at the top and deeper.
		{"unknown field", "/v1/chat/completions", chatWith(`"temprature":0`), "temprature", CodeUnknownParameter},
		{"unknown message field", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x","mood":"happy"}]}`, "mood", CodeUnknownParameter},
		{"unknown stream option", "/v1/completions", cmplWith(`"stream_options":{"include_usage":true,"chunk":1}`), "chunk", CodeUnknownParameter},
		{"response_format type", "/v1/chat/completions", chatWith(`"response_format":{"type":"xml"}`), "response_format", CodeUnsupported},
		{"llama.cpp n_probs", "/v1/completions", cmplWith(`"n_probs":2`), "n_probs", CodeUnknownParameter},
		{"chat field on completions", "/v1/completions", cmplWith(`"tools":[]`), "tools", CodeUnknownParameter},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := ts.post(t, tt.path, tt.body)
			require.Equal(t, http.StatusBadRequest, status, "%s", body)
			e := decodeError(t, body)
			assert.Equal(t, TypeInvalidRequest, e.Type)
			assert.Equal(t, tt.param, deref(e.Param))
			assert.Equal(t, tt.code, deref(e.Code))
			if tt.code == CodeUnknownParameter {
				assert.Equal(t, "Unrecognized request argument supplied: "+tt.param, e.Message)
			}
		})
	}

	// Values that change nothing are accepted.
	accepted := []struct{ name, path, body string }{
		{"harmless chat fields", "/v1/chat/completions", chatWith(`"user":"u","store":false,"n":1,"response_format":{"type":"text"},
			"stream_options":{"include_usage":false,"include_obfuscation":false},"metadata":{},"service_tier":"auto",
			"tools":[],"tool_choice":"none","parallel_tool_calls":false,"functions":null,"function_call":"auto",
			"modalities":["text"],"audio":null,"prediction":null,"reasoning_effort":"none","verbosity":"medium",
			"safety_identifier":"s","prompt_cache_key":"k","prompt_cache_retention":"24h","prompt_cache_options":{},
			"logprobs":false,"logit_bias":{}`)},
		{"assistant message without tool calls", "/v1/chat/completions", `{"max_tokens":1,"messages":[{"role":"user","content":"x"},
			{"role":"assistant","content":"y","tool_calls":[],"refusal":null,"audio":null},{"role":"user","content":"z"}]}`},
		{"harmless completion fields", "/v1/completions", cmplWith(`"user":"u","best_of":1,"echo":false,"suffix":"","n":1,"logprobs":null`)},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := ts.post(t, tt.path, tt.body)
			assert.Equal(t, http.StatusOK, status, "%s", body)
		})
	}

	t.Run("a tool message may name its call", func(t *testing.T) {
		status, _, body := ts.post(t, "/v1/chat/completions", `{"max_tokens":1,"messages":[{"role":"user","content":"x"},{"role":"tool","content":"z","tool_call_id":"1"}]}`)
		assert.Equal(t, http.StatusOK, status, "%s", body)
	})

	t.Run("through the SDK", func(t *testing.T) {
		_, err := ts.client().Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:           modelName,
			Messages:        []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
			ReasoningEffort: shared.ReasoningEffortHigh,
		})
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		assert.Equal(t, "reasoning_effort", apiErr.Param)
		assert.Equal(t, CodeUnsupported, apiErr.Code)

		_, err = ts.client().Completions.New(context.Background(), openai.CompletionNewParams{
			Model:  modelName,
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")},
			Echo:   openai.Bool(true),
		})
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, "echo", apiErr.Param)
	})
}

func TestMethodNotAllowed(t *testing.T) {
	ts := startServer(t, 1, 64, Options{})
	tests := []struct {
		method, path, allow string
	}{
		{http.MethodGet, "/v1/completions", "POST"},
		{http.MethodGet, "/v1/chat/completions", "POST"},
		{http.MethodDelete, "/tokenize", "POST"},
		{http.MethodPut, "/detokenize", "POST"},
		{http.MethodPost, "/v1/models", "GET, HEAD"},
		{http.MethodPost, "/v1/models/" + modelName, "GET, HEAD"},
		{http.MethodPost, "/health", "GET, HEAD"},
		{http.MethodPatch, "/metrics", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, ts.ts.URL+tt.path, strings.NewReader("{}"))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+testKey)
			req.Header.Set("Content-Type", "application/json")
			status, hdr, body := do(t, req)
			require.Equal(t, http.StatusMethodNotAllowed, status, "%s", body)
			assert.Equal(t, tt.allow, hdr.Get("Allow"))
			e := decodeError(t, body)
			assert.Equal(t, CodeMethodNotAllowed, deref(e.Code))
			assert.Contains(t, e.Message, tt.method)
		})
	}
	t.Run("an unknown path is still 404", func(t *testing.T) {
		status, hdr, body := ts.get(t, "/v1/nothing")
		assert.Equal(t, http.StatusNotFound, status, "%s", body)
		assert.Empty(t, hdr.Get("Allow"))
	})
	t.Run("the SDK sees the status", func(t *testing.T) {
		err := ts.client().Get(context.Background(), "completions", nil, nil)
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusMethodNotAllowed, apiErr.StatusCode)
	})
}

func TestTokenizeFields(t *testing.T) {
	ts := startServer(t, 1, 64, Options{})
	status, _, body := ts.post(t, "/tokenize", `{"content":"Once upon","add_special":false,"parse_special":true,"with_pieces":false}`)
	require.Equal(t, http.StatusOK, status, "%s", body)
	assert.JSONEq(t, `{"tokens":[403,407]}`, string(body))
	for _, tt := range []struct{ path, body, param string }{
		{"/tokenize", `{"text":"Once"}`, "text"},
		{"/tokenize", `{"content":"Once","add_bos":true}`, "add_bos"},
		{"/detokenize", `{"tokens":[403],"skip_special":true}`, "skip_special"},
	} {
		t.Run(tt.param, func(t *testing.T) {
			status, _, body := ts.post(t, tt.path, tt.body)
			require.Equal(t, http.StatusBadRequest, status, "%s", body)
			e := decodeError(t, body)
			assert.Equal(t, tt.param, deref(e.Param))
			assert.Equal(t, CodeUnknownParameter, deref(e.Code))
		})
	}
}
