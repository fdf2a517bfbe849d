package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const storyPrompt = "Once upon a time"

// sessionGreedy is what `m40llm generate --temp 0 -n n` prints for ids:
// greedy decoding through a model.Session on its own model.
func sessionGreedy(t *testing.T, ids []int32, n int) (string, *model.Result) {
	t.Helper()
	m, _ := loadModel(t, 1, 512)
	defer m.Close()
	s, err := m.NewSession(0)
	require.NoError(t, err)
	var out strings.Builder
	res, err := s.Generate(context.Background(), ids, model.GenerateOptions{MaxTokens: n, Sampling: model.Greedy()}, func(text string) error {
		out.WriteString(text)
		return nil
	})
	require.NoError(t, err)
	return out.String(), res
}

func TestCompletionsGreedyMatchesGenerate(t *testing.T) {
	ts := startServer(t, 2, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	const n = 60
	ids := ts.m.Tokenizer.Encode(storyPrompt, true, true)
	want, wantRes := sessionGreedy(t, ids, n)
	require.NotEmpty(t, want)

	params := openai.CompletionNewParams{
		Model:       modelName,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens:   openai.Int(n),
		Temperature: openai.Float(0),
	}
	resp, err := c.Completions.New(ctx, params)
	require.NoError(t, err)
	require.Len(t, resp.Choices, 1)
	assert.Equal(t, want, resp.Choices[0].Text)
	assert.Equal(t, string(wantRes.Finish), string(resp.Choices[0].FinishReason))
	assert.Equal(t, "text_completion", string(resp.Object))
	assert.Equal(t, modelName, resp.Model)
	assert.True(t, strings.HasPrefix(resp.ID, "cmpl-"), resp.ID)
	assert.Equal(t, int64(len(ids)), resp.Usage.PromptTokens)
	assert.Equal(t, int64(len(wantRes.Tokens)), resp.Usage.CompletionTokens)
	assert.Equal(t, resp.Usage.PromptTokens+resp.Usage.CompletionTokens, resp.Usage.TotalTokens)

	// Streaming: deltas, never the text so far, that add up to the same text.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	var chunks, finishes int
	var usage openai.CompletionUsage
	for stream.Next() {
		ch := stream.Current()
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
			assert.Empty(t, ch.Choices, "the usage chunk has no choices")
			continue
		}
		require.Len(t, ch.Choices, 1)
		chunks++
		text.WriteString(ch.Choices[0].Text)
		if ch.Choices[0].FinishReason != "" {
			finishes++
			assert.Equal(t, "length", string(ch.Choices[0].FinishReason))
		}
	}
	require.NoError(t, stream.Err())
	assert.Equal(t, want, text.String())
	assert.Greater(t, chunks, n/2, "one chunk per token (pieces held back for UTF-8 or stops excepted)")
	assert.Equal(t, 1, finishes)
	assert.Equal(t, int64(n), usage.CompletionTokens)
	// The slot kept the first request's tokens: all but the last prompt
	// token came from the cache.
	assert.Equal(t, int64(len(ids)-1), usage.PromptTokensDetails.CachedTokens)
}

func TestChatGreedyMatchesGenerate(t *testing.T) {
	ts := startServer(t, 2, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	const n = 40
	msgs := []chat.Message{{Role: "system", Content: "You tell stories."}, {Role: "user", Content: "Tell me about a cat."}}
	tmpl, err := ts.m.ChatTemplate()
	require.NoError(t, err)
	ids, _, err := ts.m.ChatTokens(context.Background(), tmpl, msgs, model.ChatOptions{AddGenerationPrompt: true})
	require.NoError(t, err)
	want, wantRes := sessionGreedy(t, ids, n)

	params := openai.ChatCompletionNewParams{
		Model:               modelName,
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(msgs[0].Content), openai.UserMessage(msgs[1].Content)},
		MaxCompletionTokens: openai.Int(n),
		Temperature:         openai.Float(0),
	}
	resp, err := c.Chat.Completions.New(ctx, params)
	require.NoError(t, err)
	require.Len(t, resp.Choices, 1)
	assert.Equal(t, want, resp.Choices[0].Message.Content)
	assert.Equal(t, "assistant", string(resp.Choices[0].Message.Role))
	assert.Equal(t, string(wantRes.Finish), resp.Choices[0].FinishReason)
	assert.Equal(t, "chat.completion", string(resp.Object))
	assert.True(t, strings.HasPrefix(resp.ID, "chatcmpl-"), resp.ID)
	assert.Equal(t, int64(len(ids)), resp.Usage.PromptTokens)
	assert.Equal(t, int64(len(wantRes.Tokens)), resp.Usage.CompletionTokens)

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	var text strings.Builder
	var roles, finishes int
	for stream.Next() {
		ch := stream.Current()
		acc.AddChunk(ch)
		if len(ch.Choices) == 0 {
			continue
		}
		d := ch.Choices[0].Delta
		if d.Role != "" {
			roles++
			assert.Equal(t, "assistant", d.Role)
		}
		text.WriteString(d.Content)
		if ch.Choices[0].FinishReason != "" {
			finishes++
		}
	}
	require.NoError(t, stream.Err())
	assert.Equal(t, want, text.String())
	assert.Equal(t, 1, roles, "the role comes once, in the first chunk")
	assert.Equal(t, 1, finishes)
	assert.Equal(t, want, acc.Choices[0].Message.Content)
	assert.Equal(t, int64(len(wantRes.Tokens)), acc.Usage.CompletionTokens)
}

func TestModels(t *testing.T) {
	ts := startServer(t, 1, 128, Options{})
	c := ts.client()
	page, err := c.Models.List(context.Background())
	require.NoError(t, err)
	require.Len(t, page.Data, 1)
	assert.Equal(t, modelName, page.Data[0].ID)
	assert.Equal(t, "m40llm", page.Data[0].OwnedBy)
	got, err := c.Models.Get(context.Background(), modelName)
	require.NoError(t, err)
	assert.Equal(t, modelName, got.ID)
	_, err = c.Models.Get(context.Background(), "gpt-4")
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusNotFound, apiErr.StatusCode)
}

func TestSamplingAndStop(t *testing.T) {
	ts := startServer(t, 2, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	params := openai.CompletionNewParams{
		Model:       modelName,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens:   openai.Int(40),
		Temperature: openai.Float(0.9),
		TopP:        openai.Float(0.9),
		Seed:        openai.Int(42),
	}
	extra := []option.RequestOption{option.WithJSONSet("top_k", 20), option.WithJSONSet("min_p", 0.02), option.WithJSONSet("repeat_penalty", 1.1)}
	a, err := c.Completions.New(ctx, params, extra...)
	require.NoError(t, err)
	b, err := c.Completions.New(ctx, params, extra...)
	require.NoError(t, err)
	assert.Equal(t, a.Choices[0].Text, b.Choices[0].Text, "the same seed gives the same text")

	// A stop string ends the text before it, with finish_reason stop.
	greedy := params
	greedy.Temperature = openai.Float(0)
	full, err := c.Completions.New(ctx, greedy)
	require.NoError(t, err)
	text := full.Choices[0].Text
	i := strings.Index(text, " girl")
	require.Positive(t, i, "greedy text %q", text)
	greedy.Stop = openai.CompletionNewParamsStopUnion{OfStringArray: []string{"zzz", " girl"}}
	stopped, err := c.Completions.New(ctx, greedy)
	require.NoError(t, err)
	assert.Equal(t, text[:i], stopped.Choices[0].Text)
	assert.Equal(t, "stop", string(stopped.Choices[0].FinishReason))

	// Prompt as token ids.
	ids := ts.m.Tokenizer.Encode(storyPrompt, true, true)
	ids64 := make([]int64, len(ids))
	for i, id := range ids {
		ids64[i] = int64(id)
	}
	greedy.Stop = openai.CompletionNewParamsStopUnion{}
	greedy.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: ids64}
	byIDs, err := c.Completions.New(ctx, greedy)
	require.NoError(t, err)
	assert.Equal(t, text, byIDs.Choices[0].Text)
}

func TestErrors(t *testing.T) {
	ts := startServer(t, 1, 64, Options{MaxBodyBytes: 4096})
	long := strings.Repeat("The little dog ran to the park. ", 20)
	tests := []struct {
		name   string
		path   string
		body   string
		status int
		typ    string
		code   string
		param  string
		msg    string
	}{
		{"malformed JSON", "/v1/completions", `{"prompt": "x",`, 400, TypeInvalidRequest, CodeInvalidJSON, "", "malformed JSON"},
		{"empty body", "/v1/chat/completions", ``, 400, TypeInvalidRequest, CodeInvalidJSON, "", "empty"},
		{"not an object", "/v1/completions", `[1,2]`, 400, TypeInvalidRequest, CodeInvalidJSON, "", "JSON object"},
		{"trailing data", "/v1/completions", `{"prompt":"x"} {}`, 400, TypeInvalidRequest, CodeInvalidJSON, "", "trailing"},
		{"max_tokens a string", "/v1/completions", `{"prompt":"x","max_tokens":"ten"}`, 400, TypeInvalidRequest, CodeInvalidValue, "max_tokens", "an integer"},
		{"temperature a string", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, 400, TypeInvalidRequest, CodeInvalidValue, "temperature", "a number"},
		{"stream a string", "/v1/completions", `{"prompt":"x","stream":"yes"}`, 400, TypeInvalidRequest, CodeInvalidValue, "stream", "a boolean"},
		{"messages an object", "/v1/chat/completions", `{"messages":{"role":"user"}}`, 400, TypeInvalidRequest, CodeInvalidValue, "messages", "a list"},
		{"content a number", "/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`, 400, TypeInvalidRequest, CodeInvalidValue, "messages", "content"},
		{"image content", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, TypeInvalidRequest, CodeUnsupported, "messages", "image_url"},
		{"stop a number", "/v1/completions", `{"prompt":"x","stop":7}`, 400, TypeInvalidRequest, CodeInvalidValue, "stop", "stop"},
		{"prompt an object", "/v1/completions", `{"prompt":{}}`, 400, TypeInvalidRequest, CodeInvalidValue, "prompt", "prompt"},
		{"no prompt", "/v1/completions", `{"model":"stories260K"}`, 400, TypeInvalidRequest, CodeInvalidValue, "prompt", "required"},
		{"two prompts", "/v1/completions", `{"prompt":["a","b"]}`, 400, TypeInvalidRequest, CodeUnsupported, "prompt", "only one"},
		{"token out of range", "/v1/completions", `{"prompt":[1,99999]}`, 400, TypeInvalidRequest, CodeInvalidValue, "prompt", "99999"},
		{"no messages", "/v1/chat/completions", `{"messages":[]}`, 400, TypeInvalidRequest, CodeInvalidValue, "messages", "at least one"},
		{"bad role", "/v1/chat/completions", `{"messages":[{"role":"wizard","content":"x"}]}`, 400, TypeInvalidRequest, CodeInvalidValue, "messages[0].role", "wizard"},
		{"unknown model", "/v1/completions", `{"model":"gpt-4","prompt":"x"}`, 404, TypeInvalidRequest, CodeModelNotFound, "model", "gpt-4"},
		{"unknown chat model", "/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}`, 404, TypeInvalidRequest, CodeModelNotFound, "model", "gpt-4"},
		{"prompt longer than the context", "/v1/completions", `{"prompt":"` + long + `"}`, 400, TypeInvalidRequest, CodeContextLengthExceeded, "prompt", "context holds 64 positions"},
		{"messages longer than the context", "/v1/chat/completions", `{"messages":[{"role":"user","content":"` + long + `"}]}`, 400, TypeInvalidRequest, CodeContextLengthExceeded, "messages", "context holds 64 positions"},
		{"n 9", "/v1/completions", `{"prompt":"x","n":9}`, 400, TypeInvalidRequest, CodeInvalidValue, "n", "[1, 8], got 9"},
		{"chat n 0", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"n":0}`, 400, TypeInvalidRequest, CodeInvalidValue, "n", "got 0"},
		{"n over the slots", "/v1/completions", `{"prompt":"x","n":2}`, 400, TypeInvalidRequest, CodeInvalidValue, "n", "the server runs 1 (--parallel)"},
		{"chat n over the slots", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"n":3}`, 400, TypeInvalidRequest, CodeInvalidValue, "n", "n = 3 needs 3"},
		{"best_of not n", "/v1/completions", `{"prompt":"x","best_of":3}`, 400, TypeInvalidRequest, CodeUnsupported, "best_of", "best_of = 3 with n = 1"},
		{"max_tokens 0", "/v1/completions", `{"prompt":"x","max_tokens":0}`, 400, TypeInvalidRequest, CodeInvalidValue, "max_tokens", "at least 1"},
		{"max_completion_tokens -1", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":-1}`, 400, TypeInvalidRequest, CodeInvalidValue, "max_completion_tokens", "at least 1"},
		{"top_p out of range", "/v1/completions", `{"prompt":"x","top_p":2}`, 400, TypeInvalidRequest, CodeInvalidValue, "top_p", "top_p"},
		{"repeat_penalty 0", "/v1/completions", `{"prompt":"x","repeat_penalty":0}`, 400, TypeInvalidRequest, CodeInvalidValue, "repeat_penalty", "positive"},
		{"body over the limit", "/v1/completions", `{"prompt":"` + strings.Repeat("x", 5000) + `"}`, 413, TypeInvalidRequest, CodeRequestTooLarge, "", "4096 bytes"},
		{"tokenize a number", "/tokenize", `{"content":5}`, 400, TypeInvalidRequest, CodeInvalidValue, "content", "a string"},
		{"detokenize out of range", "/detokenize", `{"tokens":[1,-3]}`, 400, TypeInvalidRequest, CodeInvalidValue, "tokens[1]", "-3"},
		{"unknown route", "/v1/audio/speech", `{}`, 404, TypeInvalidRequest, "not_found", "", "no route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := ts.post(t, tt.path, tt.body)
			assert.Equal(t, tt.status, status, "%s", body)
			assert.Equal(t, "application/json", hdr.Get("Content-Type"))
			e := decodeError(t, body)
			assert.Equal(t, tt.typ, e.Type)
			assert.Equal(t, tt.code, deref(e.Code))
			assert.Equal(t, tt.param, deref(e.Param))
			assert.Contains(t, e.Message, tt.msg)
		})
	}

	t.Run("body over the limit without a length", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte(`{"prompt":"` + strings.Repeat("x", 5000) + `"}`))
			pw.Close()
		}()
		req, err := http.NewRequest(http.MethodPost, ts.ts.URL+"/v1/completions", pr)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		status, _, body := do(t, req)
		assert.Equal(t, 413, status, "%s", body)
		assert.Equal(t, CodeRequestTooLarge, deref(decodeError(t, body).Code))
	})

	t.Run("the SDK sees the status", func(t *testing.T) {
		_, err := ts.client().Completions.New(context.Background(), openai.CompletionNewParams{
			Model: "gpt-4", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")},
		})
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 404, apiErr.StatusCode)
		assert.Equal(t, CodeModelNotFound, apiErr.Code)
	})
}

func TestAPIKey(t *testing.T) {
	ts := startServer(t, 1, 64, Options{})
	for _, tt := range []struct {
		name, header, msg string
	}{
		{"missing", "", "missing API key"},
		{"wrong", "Bearer nope", "incorrect API key"},
		{"not bearer", "Basic " + testKey, `unsupported authorization scheme "Basic"`},
		{"no space", "Bearer" + testKey, "malformed Authorization header"},
		{"no key", "Bearer ", "missing API key"}, // sent as "Bearer": net/http trims header values
		{"prefix of the key", "Bearer test", "incorrect API key"},
		{"key with a suffix", "Bearer " + testKey + " x", "incorrect API key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/v1/models", "/metrics"} {
				req, err := http.NewRequest(http.MethodGet, ts.ts.URL+path, nil)
				require.NoError(t, err)
				if tt.header != "" {
					req.Header.Set("Authorization", tt.header)
				}
				status, hdr, body := do(t, req)
				assert.Equal(t, http.StatusUnauthorized, status)
				assert.Equal(t, "Bearer", hdr.Get("WWW-Authenticate"))
				e := decodeError(t, body)
				assert.Equal(t, CodeInvalidAPIKey, deref(e.Code))
				assert.Equal(t, TypeInvalidRequest, e.Type)
				assert.Contains(t, e.Message, tt.msg)
			}
		})
	}
	// RFC 7235: the scheme is case-insensitive, and one or more spaces
	// separate it from the credentials.
	for _, header := range []string{"Bearer " + testKey, "bearer " + testKey, "BEARER " + testKey, "bEaReR " + testKey, "Bearer   " + testKey} {
		t.Run(header, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, ts.ts.URL+"/v1/models", nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", header)
			status, _, body := do(t, req)
			assert.Equal(t, http.StatusOK, status, "%s", body)
		})
	}
	t.Run("health needs no key", func(t *testing.T) {
		resp, err := http.Get(ts.ts.URL + "/health")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})
	t.Run("SDK with the wrong key", func(t *testing.T) {
		_, err := ts.client(option.WithAPIKey("wrong")).Models.List(context.Background())
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
	})
}

func TestServerBusy(t *testing.T) {
	ts := startServer(t, 1, 512, Options{Queue: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Occupy the only slot with a long stream.
	stream := ts.client().Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model: modelName, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens: openai.Int(400),
	}, option.WithJSONSet("ignore_eos", true))
	require.True(t, stream.Next(), "first chunk: %v", stream.Err())

	status, hdr, body := ts.post(t, "/v1/completions", `{"prompt":"x"}`)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	e := decodeError(t, body)
	assert.Equal(t, TypeUnavailable, e.Type)
	assert.Equal(t, CodeServerBusy, deref(e.Code))

	cancel()
	stream.Close()
	waitIdle(t, ts.srv)
	status, _, body = ts.post(t, "/v1/completions", `{"prompt":"x","max_tokens":2}`)
	assert.Equal(t, http.StatusOK, status, "%s", body)
}

// waitIdle waits (at most 5 s) until the server has no request in flight.
func waitIdle(t testing.TB, s *Server) {
	t.Helper()
	_, sched, err := s.target()
	require.NoError(t, err)
	require.Eventually(t, func() bool { return sched.count() == 0 }, 5*time.Second, 5*time.Millisecond, "requests still in flight")
}

func TestHealthWhileLoading(t *testing.T) {
	srv := New(Options{Name: modelName, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	get := func(path string) (int, string, http.Header) {
		resp, err := http.Get(ts.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	status, body, hdr := get("/health")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"status":"loading model"}`, body)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	status, body, _ = get("/v1/models")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, CodeModelLoading, deref(decodeError(t, []byte(body)).Code))

	m, _ := loadModel(t, 1, 64)
	defer m.Close()
	require.NoError(t, srv.Start(m))
	assert.Error(t, srv.Start(m), "a second Start fails")
	status, body, _ = get("/health")
	assert.Equal(t, http.StatusOK, status)
	assert.JSONEq(t, `{"status":"ok"}`, body)

	require.NoError(t, srv.Shutdown(context.Background()))
	status, body, _ = get("/health")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"status":"shutting down"}`, body)
	status, body, _ = get("/v1/models")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, CodeShuttingDown, deref(decodeError(t, []byte(body)).Code))
}

func TestTokenize(t *testing.T) {
	ts := startServer(t, 1, 64, Options{})
	tests := []struct {
		name string
		body string
		want string
	}{
		// SentencePiece ids of stories260K (as `m40llm tokenize`).
		{"plain", `{"content":"Once upon a time"}`, `{"tokens":[403,407,261,378]}`},
		{"add_special", `{"content":"Once upon a time","add_special":true}`, `{"tokens":[1,403,407,261,378]}`},
		{"empty", `{"content":""}`, `{"tokens":[]}`},
		{"with_pieces", `{"content":"Once upon","with_pieces":true}`, `{"tokens":[{"id":403,"piece":" Once"},{"id":407,"piece":" upon"}]}`},
		{"control text parsed", `{"content":"<s>Once","with_pieces":true}`, `{"tokens":[{"id":1,"piece":"<s>"},{"id":403,"piece":" Once"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := ts.post(t, "/tokenize", tt.body)
			require.Equal(t, http.StatusOK, status, "%s", body)
			assert.JSONEq(t, tt.want, string(body))
		})
	}
	status, _, body := ts.post(t, "/detokenize", `{"tokens":[403,407,261,378]}`)
	require.Equal(t, http.StatusOK, status, "%s", body)
	assert.JSONEq(t, `{"content":"Once upon a time"}`, string(body))
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, 2, 128, Options{})
	_, err := ts.client().Completions.New(context.Background(), openai.CompletionNewParams{
		Model: modelName, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)}, MaxTokens: openai.Int(8),
	})
	require.NoError(t, err)
	ts.post(t, "/v1/completions", `{"prompt":`) // a 400
	req, err := http.NewRequest(http.MethodGet, ts.ts.URL+"/v1/models", nil)
	require.NoError(t, err)
	status, _, _ := do(t, req) // a 401, answered before the mux
	require.Equal(t, http.StatusUnauthorized, status)
	status, hdr, body := ts.get(t, "/metrics")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, hdr.Get("Content-Type"), "text/plain")
	text := string(body)
	for _, name := range []string{
		"m40llm_http_requests_total", "m40llm_prompt_tokens_total", "m40llm_prompt_tokens_cached_total",
		"m40llm_generated_tokens_total", "m40llm_time_to_first_token_seconds_bucket",
		"m40llm_time_per_output_token_seconds_bucket", "m40llm_queue_wait_seconds_bucket", "m40llm_batch_tokens_bucket",
		"m40llm_requests_active", "m40llm_requests_queued", "m40llm_kv_cache_tokens", "m40llm_kv_cache_usage_ratio",
		"m40llm_gpu_memory_used_bytes", "m40llm_gpu_memory_total_bytes", "go_goroutines",
	} {
		assert.Contains(t, text, "\n"+name, "metric %s", name)
	}
	assert.Contains(t, text, `m40llm_http_requests_total{code="200",route="POST /v1/completions"} 1`)
	assert.Contains(t, text, `m40llm_http_requests_total{code="400",route="POST /v1/completions"} 1`)
	assert.Contains(t, text, `m40llm_http_requests_total{code="401",route="GET /v1/models"} 1`)
	assert.Contains(t, text, "m40llm_generated_tokens_total 8\n")
	assert.Contains(t, text, "m40llm_gpu_memory_used_bytes 8.05306368e+08\n")
	assert.Contains(t, text, "m40llm_gpu_memory_total_bytes 1.073741824e+09\n")
	assert.Contains(t, text, `m40llm_backend_memory_bytes{kind="kv"} 2.097152e+06`)
	assert.Contains(t, text, `m40llm_model_layers{device="cpu",model=""} 5`+"\n", "stories260K's 5 layers on the test's CPU backend")
}

func TestCORS(t *testing.T) {
	preflight := func(ts *testServer) *http.Response {
		req, err := http.NewRequest(http.MethodOptions, ts.ts.URL+"/v1/chat/completions", nil)
		require.NoError(t, err)
		req.Header.Set("Origin", "http://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	t.Run("off by default", func(t *testing.T) {
		ts := startServer(t, 1, 64, Options{})
		_, hdr, _ := ts.get(t, "/v1/models")
		assert.Empty(t, hdr.Get("Access-Control-Allow-Origin"))
		resp := preflight(ts)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
		assert.NotEqual(t, http.StatusNoContent, resp.StatusCode)
	})
	t.Run("with an origin", func(t *testing.T) {
		ts := startServer(t, 1, 64, Options{CORSOrigin: "http://app.example"})
		_, hdr, _ := ts.get(t, "/v1/models")
		assert.Equal(t, "http://app.example", hdr.Get("Access-Control-Allow-Origin"))
		resp := preflight(ts)
		assert.Equal(t, http.StatusNoContent, resp.StatusCode, "preflight needs no API key")
		assert.Equal(t, "http://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
		assert.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")
	})
}

func TestPanicBecomes500(t *testing.T) {
	var logs strings.Builder
	s := New(Options{Name: modelName, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h := s.instrument(http.NewServeMux(), s.recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	e := decodeError(t, rec.Body.Bytes())
	assert.Equal(t, TypeServer, e.Type)
	assert.Equal(t, CodeInternal, deref(e.Code))
	assert.Contains(t, logs.String(), "boom")
	assert.Contains(t, logs.String(), "panic in handler")
}

func TestForwardErrorFailsRequests(t *testing.T) {
	ts := startServer(t, 2, 128, Options{})
	ts.be.fail.Store(true)
	status, _, body := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4}`)
	assert.Equal(t, http.StatusInternalServerError, status)
	e := decodeError(t, body)
	assert.Equal(t, TypeServer, e.Type)
	assert.Contains(t, e.Message, errInjected.Error())

	// A stream that already started gets an error event.
	stream := ts.client().Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
		Model: modelName, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")}, MaxTokens: openai.Int(4),
	})
	for stream.Next() {
	}
	require.Error(t, stream.Err())
	assert.Contains(t, stream.Err().Error(), errInjected.Error())

	ts.be.fail.Store(false)
	ts.be.panic.Store(true)
	status, _, body = ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4}`)
	assert.Equal(t, http.StatusInternalServerError, status)
	assert.Contains(t, decodeError(t, body).Message, "panic in the forward pass: injected backend panic")

	ts.be.panic.Store(false)
	status, _, body = ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4}`)
	assert.Equal(t, http.StatusOK, status, "the server still works: %s", body)
	var resp CompletionResponse
	require.NoError(t, json.Unmarshal(body, &resp))
	assert.Equal(t, 4, resp.Usage.CompletionTokens)
}

// TestOutOfMemoryInAStep: a step that runs out of device memory fails its
// requests with 503 out_of_memory; the server stays healthy and serves
// the next request.
func TestOutOfMemoryInAStep(t *testing.T) {
	ts := startServer(t, 2, 128, Options{})
	ts.be.fail.Store(true)
	ts.be.oom.Store(true)
	status, hdr, body := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4}`)
	assert.Equal(t, http.StatusServiceUnavailable, status, "%s", body)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	e := decodeError(t, body)
	assert.Equal(t, TypeUnavailable, e.Type)
	assert.Equal(t, CodeOutOfMemory, deref(e.Code))
	status, _, body = ts.get(t, "/health")
	assert.Equal(t, http.StatusOK, status, "%s", body)

	ts.be.fail.Store(false)
	status, _, body = ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4}`)
	assert.Equal(t, http.StatusOK, status, "%s", body)
}

// TestBackendFailure: once the backend is unusable (a device fault), the
// request in flight gets 503 backend_failed, /health says 503 with the
// reason, new requests fail at once with 503, and /metrics still answers.
func TestBackendFailure(t *testing.T) {
	ts := startServer(t, 2, 128, Options{})
	ts.be.fail.Store(true)
	ts.be.sticky.Store(true)
	status, _, body := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4}`)
	assert.Equal(t, http.StatusServiceUnavailable, status, "%s", body)
	e := decodeError(t, body)
	assert.Equal(t, CodeBackendFailed, deref(e.Code))
	assert.Contains(t, e.Message, errInjected.Error())

	status, _, body = ts.get(t, "/health")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"status":"error","error":"the backend has failed: `+errInjected.Error()+`"}`, string(body))

	ts.be.fail.Store(false) // the failure sticks regardless
	start := time.Now()
	status, _, body = ts.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4}`)
	assert.Equal(t, http.StatusServiceUnavailable, status, "%s", body)
	assert.Equal(t, CodeBackendFailed, deref(decodeError(t, body).Code))
	assert.Less(t, time.Since(start), 2*time.Second, "fails at once")

	status, _, body = ts.get(t, "/metrics")
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, string(body), `m40llm_http_requests_total{code="503",route="POST /v1/completions"} 1`)
}

func TestCancelFreesSlot(t *testing.T) {
	ts := startServer(t, 1, 512, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	stream := ts.client().Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    modelName,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a long story.")},
	}, option.WithJSONSet("ignore_eos", true))
	for range 3 {
		require.True(t, stream.Next(), "%v", stream.Err())
	}
	cancel()
	stream.Close()
	waitIdle(t, ts.srv)
	// The slot serves the next request.
	status, _, body := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":3}`)
	assert.Equal(t, http.StatusOK, status, "%s", body)
}
