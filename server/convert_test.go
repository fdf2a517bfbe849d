package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testServed(t *testing.T) *Served {
	t.Helper()
	m, _ := loadModel(t, 1, 64)
	t.Cleanup(func() { m.Close() })
	tmpl, err := m.ChatTemplate()
	require.NoError(t, err)
	return &Served{Model: m, Name: modelName, Template: tmpl}
}

func ptr[T any](v T) *T { return &v }

func TestDecodeRequests(t *testing.T) {
	var cr CompletionRequest
	require.NoError(t, decodeJSON(strings.NewReader(`{
		"model":"m","prompt":["Once"],"max_tokens":5,"temperature":0.5,"top_p":0.9,"top_k":7,"min_p":0.1,
		"repeat_penalty":1.2,"repeat_last_n":32,"presence_penalty":0.5,"frequency_penalty":-0.5,"seed":9,
		"stop":"x","n":1,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true},
		"user":"u","logit_bias":{"1":2},"logprobs":3}`), &cr))
	assert.Equal(t, CompletionRequest{
		Model: "m", Prompt: Prompt{Text: "Once", Set: true}, MaxTokens: ptr(5), Logprobs: ptr(3),
		SamplingFields: SamplingFields{
			Temperature: ptr(0.5), TopP: ptr(0.9), TopK: ptr(7), MinP: ptr(0.1), RepeatPenalty: ptr(1.2),
			RepeatLastN: ptr(32), PresencePenalty: ptr(0.5), FrequencyPenalty: ptr(-0.5), Seed: ptr(int64(9)),
			Stop: Stop{"x"}, N: ptr(1), IgnoreEOS: true, Stream: true, StreamOptions: &StreamOptions{IncludeUsage: true},
			LogitBias: map[string]float64{"1": 2},
		},
		completionExtras: completionExtras{User: json.RawMessage(`"u"`)},
	}, cr)

	prompts := []struct {
		json string
		want Prompt
	}{
		{`"a"`, Prompt{Text: "a", Set: true}},
		{`["a"]`, Prompt{Text: "a", Set: true}},
		{`[1,2,3]`, Prompt{Tokens: []int32{1, 2, 3}, IsIDs: true, Set: true}},
		{`[[4,5]]`, Prompt{Tokens: []int32{4, 5}, IsIDs: true, Set: true}},
		{`null`, Prompt{}},
	}
	for _, p := range prompts {
		var got Prompt
		require.NoError(t, json.Unmarshal([]byte(p.json), &got), p.json)
		assert.Equal(t, p.want, got, p.json)
	}

	var chat ChatCompletionRequest
	require.NoError(t, decodeJSON(strings.NewReader(`{"messages":[
		{"role":"system","content":"s"},
		{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
		{"role":"assistant","content":null}],"stop":["p","q"],"max_completion_tokens":3}`), &chat))
	assert.Equal(t, []ChatMessage{{Role: "system", Content: "s"}, {Role: "user", Content: "ab"}, {Role: "assistant"}}, chat.Messages)
	assert.Equal(t, Stop{"p", "q"}, chat.Stop)
	assert.Equal(t, 3, *chat.MaxCompletionTokens)
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		param      string
	}{
		{"syntax", `{"prompt":}`, 400, ""},
		{"truncated", `{"prompt":"x"`, 400, ""},
		{"wrong type", `{"max_tokens":1.5}`, 400, "max_tokens"},
		{"embedded field", `{"top_k":"many"}`, 400, "top_k"},
		{"nested", `{"stream_options":{"include_usage":"yes"}}`, 400, "stream_options.include_usage"},
		{"too many stops", `{"stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, 400, "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req CompletionRequest
			err := decodeJSON(strings.NewReader(tt.body), &req)
			var ae *Error
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tt.status, ae.Status)
			assert.Equal(t, tt.param, ae.Param)
			assert.Equal(t, TypeInvalidRequest, ae.Type)
		})
	}
	t.Run("over the limit", func(t *testing.T) {
		var req CompletionRequest
		body := http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(`{"prompt":"`+strings.Repeat("x", 100)+`"}`)), 50)
		err := decodeJSON(body, &req)
		var ae *Error
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, http.StatusRequestEntityTooLarge, ae.Status)
	})
}

func TestFromCompletionRequest(t *testing.T) {
	s := testServed(t)
	req := &CompletionRequest{Model: modelName, Prompt: Prompt{Text: "Once upon a time", Set: true}, MaxTokens: ptr(7),
		SamplingFields: SamplingFields{Temperature: ptr(0.0), Stop: Stop{"."}, IgnoreEOS: true, Stream: true,
			StreamOptions: &StreamOptions{IncludeUsage: true}}}
	gr, err := FromCompletionRequest(req, s, 1234)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 403, 407, 261, 378}, gr.Prompt, "BOS added, as generate does")
	want := sample.DefaultParams()
	want.Temperature, want.Seed = 0, 1234
	assert.Equal(t, model.GenerateOptions{MaxTokens: 7, Sampling: want, Stop: []string{"."}, IgnoreEOS: true}, gr.Options)
	assert.True(t, gr.Stream)
	assert.True(t, gr.IncludeUsage)

	req.Seed = ptr(int64(5))
	req.Model = "" // an absent model means the served one
	gr, err = FromCompletionRequest(req, s, 1234)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), gr.Options.Sampling.Seed)
}

func TestFromChatRequest(t *testing.T) {
	s := testServed(t)
	req := &ChatCompletionRequest{Messages: []ChatMessage{{Role: "developer", Content: "Be brief."}, {Role: "user", Content: "Hi"}},
		MaxTokens: ptr(3), MaxCompletionTokens: ptr(9)}
	gr, err := FromChatRequest(context.Background(), req, s, 0)
	require.NoError(t, err)
	want, _, err := s.Model.ChatTokens(context.Background(), s.Template, []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}, model.ChatOptions{AddGenerationPrompt: true})
	require.NoError(t, err)
	assert.Equal(t, want, gr.Prompt, "developer is rendered as system")
	assert.Equal(t, 9, gr.Options.MaxTokens, "max_completion_tokens wins over max_tokens")
	assert.False(t, gr.Stream)

	s.Template = nil
	s.TemplateErr = errors.New("no template")
	_, err = FromChatRequest(context.Background(), req, s, 0)
	var ae *Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, http.StatusInternalServerError, ae.Status)
}

func TestSamplingParamsErrors(t *testing.T) {
	tests := []struct {
		name  string
		f     SamplingFields
		param string
	}{
		{"top_p 0", SamplingFields{TopP: ptr(0.0)}, "top_p"},
		{"min_p 2", SamplingFields{MinP: ptr(2.0)}, "min_p"},
		{"repeat_penalty -1", SamplingFields{RepeatPenalty: ptr(-1.0)}, "repeat_penalty"},
		{"repeat_last_n -2", SamplingFields{RepeatLastN: ptr(-2)}, "repeat_last_n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SamplingParams(&tt.f, 0)
			var ae *Error
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, 400, ae.Status)
			assert.Equal(t, tt.param, ae.Param)
			var pe *sample.ParamError
			assert.ErrorAs(t, err, &pe, "the sampler's error is kept")
		})
	}
}

func TestToResponses(t *testing.T) {
	res := &model.Result{PromptTokens: 5, CachedTokens: 2, Tokens: []int32{7, 8, 9}, Finish: model.FinishStop}
	c := ToCompletion("cmpl-1", 100, "m", "abc", res)
	got, err := json.Marshal(c)
	require.NoError(t, err)
	assert.JSONEq(t, `{"id":"cmpl-1","object":"text_completion","created":100,"model":"m",
		"choices":[{"text":"abc","index":0,"logprobs":null,"finish_reason":"stop"}],
		"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2}}}`, string(got))

	got, err = json.Marshal(ToCompletionChunk("cmpl-1", 100, "m", "d", ""))
	require.NoError(t, err)
	assert.JSONEq(t, `{"id":"cmpl-1","object":"text_completion","created":100,"model":"m",
		"choices":[{"text":"d","index":0,"logprobs":null,"finish_reason":null}]}`, string(got))

	got, err = json.Marshal(ToChatCompletion("chatcmpl-1", 100, "m", "hi", res))
	require.NoError(t, err)
	assert.JSONEq(t, `{"id":"chatcmpl-1","object":"chat.completion","created":100,"model":"m",
		"choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],
		"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2}}}`, string(got))

	chunks := []struct {
		first  bool
		text   string
		finish model.FinishReason
		want   string
	}{
		{true, "", "", `{"role":"assistant","content":""}`},
		{false, "x", "", `{"content":"x"}`},
		{false, "", model.FinishLength, `{}`},
	}
	for _, ch := range chunks {
		got, err := json.Marshal(ToChatChunk("chatcmpl-1", 100, "m", ch.first, ch.text, ch.finish))
		require.NoError(t, err)
		var back struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta        json.RawMessage `json:"delta"`
				FinishReason *string         `json:"finish_reason"`
			} `json:"choices"`
		}
		require.NoError(t, json.Unmarshal(got, &back))
		assert.Equal(t, "chat.completion.chunk", back.Object)
		assert.JSONEq(t, ch.want, string(back.Choices[0].Delta))
		assert.Equal(t, string(ch.finish), deref(back.Choices[0].FinishReason))
	}
	got, err = json.Marshal(ToChatUsageChunk("chatcmpl-1", 100, "m", res))
	require.NoError(t, err)
	assert.Contains(t, string(got), `"choices":[]`)
	assert.Contains(t, string(got), `"total_tokens":8`)
}

func TestAPIErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{ErrBusy, 503, CodeServerBusy},
		{ErrNotReady, 503, CodeModelLoading},
		{ErrShuttingDown, 503, CodeShuttingDown},
		{&sample.ParamError{Field: "TopP", Value: 3, Reason: "r"}, 400, CodeInvalidValue},
		{model.ErrContextFull, 400, CodeContextLengthExceeded},
		{fmt.Errorf("%w: 99999", model.ErrInvalidToken), 400, CodeInvalidValue},
		{model.ErrEngineClosed, 503, CodeShuttingDown},
		{fmt.Errorf("%w: %w", model.ErrBackendFailed, errors.New("x")), 503, CodeBackendFailed},
		{&cudadrv.CallError{Func: "cuMemAlloc_v2", Result: cudadrv.ErrOutOfMemory}, 503, CodeOutOfMemory},
		{&http.MaxBytesError{Limit: 10}, 413, CodeRequestTooLarge},
		{errors.New("boom"), 500, CodeInternal},
	}
	for _, tt := range tests {
		e := apiError(tt.err)
		assert.Equal(t, tt.status, e.Status, "%v", tt.err)
		assert.Equal(t, tt.code, e.Code, "%v", tt.err)
		if tt.status == 503 && tt.code != CodeShuttingDown && tt.code != CodeBackendFailed {
			assert.Positive(t, e.RetryAfter)
		}
	}
}

// FuzzChatRequest feeds arbitrary bodies through the chat request decoder
// and conversion: no panic, and every failure is an *Error with a 4xx or
// 5xx status.
func FuzzChatRequest(f *testing.F) {
	for _, seed := range []string{
		`{"messages":[{"role":"user","content":"Hi"}]}`,
		`{"model":"stories260K","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"}]}],"max_tokens":4,"stop":["x"],"stream":true}`,
		`{"messages":[{"role":"assistant","content":null}],"temperature":"x"}`,
		`{"messages":[],"n":2}`,
		`[1,2]`,
		`{"messages":[{"role":"user","content":"` + strings.Repeat("long ", 50) + `"}]}`,
	} {
		f.Add(seed)
	}
	m, _ := loadModel(f, 1, 64)
	defer m.Close()
	tmpl, err := m.ChatTemplate()
	require.NoError(f, err)
	s := &Served{Model: m, Name: modelName, Template: tmpl}
	f.Fuzz(func(t *testing.T, body string) {
		var req ChatCompletionRequest
		err := decodeJSON(strings.NewReader(body), &req)
		if err == nil {
			var gr *GenerateRequest
			gr, err = FromChatRequest(context.Background(), &req, s, 0)
			if err == nil {
				if len(gr.Prompt) == 0 {
					t.Fatalf("empty prompt accepted")
				}
				return
			}
		}
		var ae *Error
		if !errors.As(err, &ae) {
			ae = apiError(err)
		}
		if ae.Status < 400 || ae.Status > 599 {
			t.Fatalf("status %d for %v", ae.Status, err)
		}
	})
}
