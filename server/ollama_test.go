package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/ollama/ollama/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The ollama routes are driven with ollama's own Go client.

// bearer adds the test API key to every request (ollama's client sends
// none of its own).
type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.key != "" {
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// ollamaClient returns an ollama client of the server that sends key.
func (s *testServer) ollamaClient(t testing.TB, key string) *api.Client {
	t.Helper()
	u, err := url.Parse(s.ts.URL)
	require.NoError(t, err)
	return api.NewClient(u, &http.Client{Transport: bearer{key: key}})
}

// startOllama serves the bundled model with its path, as `m40llm serve`
// does.
func startOllama(t *testing.T, slots, ctx int, opts Options) (*testServer, *api.Client) {
	t.Helper()
	opts.ModelPath = fixture.BundledModel(t)
	ts := startServer(t, slots, ctx, opts)
	return ts, ts.ollamaClient(t, testKey)
}

// statusError returns err as the client's StatusError.
func statusError(t *testing.T, err error) api.StatusError {
	t.Helper()
	var se api.StatusError
	require.True(t, errors.As(err, &se), "want a StatusError, got %T %v", err, err)
	return se
}

// generate runs one /api/generate request and returns every object of
// the answer.
func generate(t *testing.T, c *api.Client, req *api.GenerateRequest) []api.GenerateResponse {
	t.Helper()
	var out []api.GenerateResponse
	require.NoError(t, c.Generate(context.Background(), req, func(r api.GenerateResponse) error {
		out = append(out, r)
		return nil
	}))
	return out
}

// chatAll runs one /api/chat request and returns the text and the last
// object.
func chatAll(t *testing.T, c *api.Client, req *api.ChatRequest) (string, api.ChatResponse, int) {
	t.Helper()
	var text strings.Builder
	var last api.ChatResponse
	n := 0
	require.NoError(t, c.Chat(context.Background(), req, func(r api.ChatResponse) error {
		n++
		assert.False(t, last.Done, "nothing after the last object")
		assert.Equal(t, "assistant", r.Message.Role)
		text.WriteString(r.Message.Content)
		last = r
		return nil
	}))
	require.True(t, last.Done, "the answer ends with done")
	return text.String(), last, n
}

// chatIDs is the prompt /api/chat and /v1/chat/completions make of msgs.
func chatIDs(t *testing.T, m *model.Model, msgs ...chat.Message) []int32 {
	t.Helper()
	tmpl, err := m.ChatTemplate()
	require.NoError(t, err)
	ids, _, err := m.ChatTokens(context.Background(), tmpl, msgs, model.ChatOptions{AddGenerationPrompt: true})
	require.NoError(t, err)
	return ids
}

func TestOllamaInfo(t *testing.T) {
	ts, c := startOllama(t, 2, 512, Options{})
	ctx := context.Background()
	path := fixture.BundledModel(t)
	st, err := os.Stat(path)
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	gf, err := gguf.Open(path)
	require.NoError(t, err)
	params := gf.ParameterCount()
	require.NoError(t, gf.Close())

	require.NoError(t, c.Heartbeat(ctx))
	v, err := c.Version(ctx)
	require.NoError(t, err)
	assert.Equal(t, OllamaAPIVersion, v)

	list, err := c.List(ctx)
	require.NoError(t, err)
	require.Len(t, list.Models, 1)
	served, _, err := ts.srv.target()
	require.NoError(t, err)
	<-ts.srv.ollamaFacts(served).digestDone // the digest is computed once, in the background
	list, err = c.List(ctx)
	require.NoError(t, err)
	require.Len(t, list.Models, 1)
	lm := list.Models[0]
	assert.Equal(t, modelName+":latest", lm.Name)
	assert.Equal(t, modelName+":latest", lm.Model)
	assert.Equal(t, st.Size(), lm.Size)
	assert.True(t, st.ModTime().Equal(lm.ModifiedAt), "%v vs %v", st.ModTime(), lm.ModifiedAt)
	assert.Equal(t, hex.EncodeToString(sum[:]), lm.Digest)
	wantDetails := api.ModelDetails{Format: "gguf", Family: "llama", Families: []string{"llama"},
		ParameterSize: parameterSize(params), QuantizationLevel: lm.Details.QuantizationLevel}
	assert.Equal(t, wantDetails, lm.Details)
	assert.NotEmpty(t, lm.Details.ParameterSize)
	assert.NotEmpty(t, lm.Details.QuantizationLevel)
	if ft, err := ts.m.Metadata.Uint32(gguf.KeyFileType); err == nil {
		assert.Equal(t, ollamaQuantName(ft), lm.Details.QuantizationLevel)
	}

	ps, err := c.ListRunning(ctx)
	require.NoError(t, err)
	require.Len(t, ps.Models, 1)
	rm := ps.Models[0]
	assert.Equal(t, lm.Name, rm.Name)
	assert.Equal(t, lm.Digest, rm.Digest)
	assert.Equal(t, wantDetails, rm.Details)
	assert.Equal(t, 512, rm.ContextLength)
	assert.Equal(t, int64(10<<20), rm.Size, "the test backend's memory")
	assert.Equal(t, rm.Size, rm.SizeVRAM)
	assert.True(t, rm.ExpiresAt.IsZero(), "never unloaded")

	for _, name := range []string{modelName, modelName + ":latest", strings.ToUpper(modelName)} {
		show, err := c.Show(ctx, &api.ShowRequest{Model: name})
		require.NoError(t, err, name)
		assert.Equal(t, wantDetails, show.Details)
		assert.Equal(t, "llama", show.ModelInfo["general.architecture"])
		assert.Equal(t, float64(ts.m.Config.ContextLength), show.ModelInfo["llama.context_length"])
		assert.Equal(t, float64(params), show.ModelInfo["general.parameter_count"])
		assert.NotContains(t, show.ModelInfo, "tokenizer.ggml.tokens", "arrays only when verbose")
		assert.Equal(t, []string{"completion"}, capabilities(show))
		assert.NotEmpty(t, show.Template)
		assert.Contains(t, show.Parameters, "temperature")
		abs, err := filepath.Abs(path)
		require.NoError(t, err)
		assert.Contains(t, show.Modelfile, "FROM "+abs)
		assert.True(t, st.ModTime().Equal(show.ModifiedAt))
	}
	show, err := c.Show(ctx, &api.ShowRequest{Model: modelName, Verbose: true})
	require.NoError(t, err)
	assert.Len(t, show.ModelInfo["tokenizer.ggml.tokens"], ts.m.Tokenizer.VocabSize())

	_, err = c.Show(ctx, &api.ShowRequest{Model: "llama3.2"})
	se := statusError(t, err)
	assert.Equal(t, http.StatusNotFound, se.StatusCode)
	assert.Equal(t, "model 'llama3.2' not found", se.ErrorMessage)
}

func capabilities(show *api.ShowResponse) []string {
	var out []string
	for _, c := range show.Capabilities {
		out = append(out, string(c))
	}
	return out
}

// TestOllamaGenerateMatchesSession: /api/generate at temperature 0 gives
// the text of greedy decoding through a model.Session on a model of its
// own, raw (the prompt tokenized as /v1/completions does) and through the
// chat template (as /v1/chat/completions renders one user message),
// streamed and not, with the counts and context of the result.
func TestOllamaGenerateMatchesSession(t *testing.T) {
	ts, c := startOllama(t, 2, 512, Options{})
	const n = 40
	opts := map[string]any{"temperature": 0, "num_predict": n}
	tests := []struct {
		name   string
		req    api.GenerateRequest
		prompt []int32
	}{
		{"raw", api.GenerateRequest{Prompt: storyPrompt, Raw: true}, ts.m.Tokenizer.Encode(storyPrompt, true, true)},
		{"templated", api.GenerateRequest{Prompt: storyPrompt}, chatIDs(t, ts.m, chat.Message{Role: "user", Content: storyPrompt})},
		{"system", api.GenerateRequest{Prompt: storyPrompt, System: "Be brief."},
			chatIDs(t, ts.m, chat.Message{Role: "system", Content: "Be brief."}, chat.Message{Role: "user", Content: storyPrompt})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantRes := sessionGreedy(t, tt.prompt, n)
			require.NotEmpty(t, want)
			req := tt.req
			req.Model, req.Options, req.Stream = modelName, opts, ptr(false)

			out := generate(t, c, &req)
			require.Len(t, out, 1, "stream: false is one object")
			r := out[0]
			assert.Equal(t, want, r.Response)
			assert.True(t, r.Done)
			assert.Equal(t, string(wantRes.Finish), r.DoneReason)
			assert.Equal(t, modelName, r.Model, "the name the request gave")
			assert.Equal(t, len(tt.prompt), r.PromptEvalCount)
			assert.Equal(t, len(wantRes.Tokens), r.EvalCount)
			assert.LessOrEqual(t, r.EvalCount, n)
			assert.Positive(t, r.PromptEvalDuration)
			assert.Positive(t, r.EvalDuration)
			assert.GreaterOrEqual(t, r.TotalDuration, r.PromptEvalDuration+r.EvalDuration)
			assert.False(t, r.CreatedAt.IsZero())
			wantCtx := make([]int, 0, len(tt.prompt)+len(wantRes.Tokens))
			for _, id := range append(append([]int32{}, tt.prompt...), wantRes.Tokens...) {
				wantCtx = append(wantCtx, int(id))
			}
			assert.Equal(t, wantCtx, r.Context)

			req.Stream = nil // streams by default
			out = generate(t, c, &req)
			require.Greater(t, len(out), n/2, "one line per piece of text")
			var text strings.Builder
			for i, r := range out {
				text.WriteString(r.Response)
				assert.Equal(t, i == len(out)-1, r.Done, "only the last line is done")
			}
			last := out[len(out)-1]
			assert.Equal(t, want, text.String())
			assert.Empty(t, last.Response)
			assert.Equal(t, string(wantRes.Finish), last.DoneReason)
			assert.Equal(t, len(wantRes.Tokens), last.EvalCount)
			assert.Equal(t, len(tt.prompt), last.PromptEvalCount)
			assert.Equal(t, wantCtx, last.Context)
		})
	}

	// A context continues the text: its ids come first, without a second BOS.
	first := generate(t, c, &api.GenerateRequest{Model: modelName, Prompt: storyPrompt, Stream: ptr(false), Options: opts})[0]
	next := generate(t, c, &api.GenerateRequest{Model: modelName, Prompt: "And then?", Context: first.Context, Stream: ptr(false),
		Options: map[string]any{"temperature": 0, "num_predict": 4}})[0]
	more := chatIDs(t, ts.m, chat.Message{Role: "user", Content: "And then?"})
	if ts.m.Tokenizer.AddBOS() {
		more = more[1:]
	}
	assert.Equal(t, len(first.Context)+len(more), next.PromptEvalCount)
}

// TestOllamaChatOptions: /api/chat streams the reply of greedy decoding
// through the chat template; num_predict and num_ctx bound eval_count,
// a seed makes sampling reproducible, stop strings end the reply before
// them.
func TestOllamaChatOptions(t *testing.T) {
	ts, c := startOllama(t, 2, 512, Options{})
	msgs := []api.Message{{Role: "user", Content: "Tell me a story."}}
	ids := chatIDs(t, ts.m, chat.Message{Role: "user", Content: "Tell me a story."})
	want, wantRes := sessionGreedy(t, ids, 48)
	require.Len(t, wantRes.Tokens, 48, "the reference runs to num_predict")
	req := func(opts map[string]any) *api.ChatRequest {
		return &api.ChatRequest{Model: modelName, Messages: msgs, Options: opts}
	}

	text, last, lines := chatAll(t, c, req(map[string]any{"temperature": 0, "num_predict": 48}))
	assert.Equal(t, want, text)
	assert.Greater(t, lines, 24, "streamed by default")
	assert.Equal(t, 48, last.EvalCount)
	assert.Equal(t, "length", last.DoneReason)
	assert.Equal(t, len(ids), last.PromptEvalCount)
	assert.Empty(t, last.Message.Content, "the last line of a stream has no text")

	t.Run("num_predict", func(t *testing.T) {
		text, last, _ := chatAll(t, c, req(map[string]any{"temperature": 0, "num_predict": 5}))
		assert.Equal(t, 5, last.EvalCount)
		assert.Equal(t, "length", last.DoneReason)
		assert.True(t, strings.HasPrefix(want, text), "%q is the start of %q", text, want)
	})
	t.Run("num_ctx", func(t *testing.T) {
		_, last, _ := chatAll(t, c, req(map[string]any{"temperature": 0, "num_ctx": len(ids) + 3}))
		assert.Equal(t, 3, last.EvalCount, "the prompt and the reply fit in num_ctx")
		assert.Equal(t, "length", last.DoneReason)
	})
	t.Run("seed", func(t *testing.T) {
		texts := map[string]bool{}
		for seed := range 4 {
			opts := map[string]any{"temperature": 1.0, "seed": seed, "num_predict": 24}
			a, _, _ := chatAll(t, c, req(opts))
			b, _, _ := chatAll(t, c, req(opts))
			assert.Equal(t, a, b, "seed %d", seed)
			texts[a] = true
		}
		assert.Greater(t, len(texts), 1, "different seeds, different samples")
	})
	t.Run("stop", func(t *testing.T) {
		words := strings.Fields(want)
		require.Greater(t, len(words), 4)
		stop := " " + words[len(words)/2]
		text, last, _ := chatAll(t, c, req(map[string]any{"temperature": 0, "num_predict": 48, "stop": []string{stop, "never appears"}}))
		assert.Equal(t, want[:strings.Index(want, stop)], text)
		assert.Equal(t, "stop", last.DoneReason)
	})
	t.Run("harmless", func(t *testing.T) {
		text, last, _ := chatAll(t, c, &api.ChatRequest{Model: modelName + ":latest", Messages: msgs, KeepAlive: &api.Duration{Duration: -1},
			Options: map[string]any{"temperature": 0, "num_predict": 6, "num_thread": 4, "num_gpu": 99, "num_batch": 8,
				"main_gpu": 0, "num_keep": 5, "use_mmap": true, "typical_p": 1, "tfs_z": 1.0, "mirostat": 0, "mirostat_tau": 5.0}})
		assert.Equal(t, 6, last.EvalCount)
		assert.True(t, strings.HasPrefix(want, text))
		assert.Equal(t, modelName+":latest", last.Model)
	})
	t.Run("not streamed", func(t *testing.T) {
		text, last, lines := chatAll(t, c, &api.ChatRequest{Model: modelName, Messages: msgs, Stream: ptr(false),
			Options: map[string]any{"temperature": 0, "num_predict": 48}})
		assert.Equal(t, 1, lines)
		assert.Equal(t, want, text)
		assert.Equal(t, want, last.Message.Content)
		assert.Equal(t, 48, last.EvalCount)
	})
}

// TestOllamaLoad: a request without a prompt or messages loads the model
// and generates nothing, as ollama answers it; asking to unload is
// refused.
func TestOllamaLoad(t *testing.T) {
	_, c := startOllama(t, 1, 256, Options{})
	out := generate(t, c, &api.GenerateRequest{Model: modelName})
	require.Len(t, out, 1)
	assert.True(t, out[0].Done)
	assert.Equal(t, "load", out[0].DoneReason)
	assert.Empty(t, out[0].Response)

	_, last, lines := chatAll(t, c, &api.ChatRequest{Model: modelName})
	assert.Equal(t, 1, lines)
	assert.Equal(t, "load", last.DoneReason)

	err := c.Generate(context.Background(), &api.GenerateRequest{Model: modelName, KeepAlive: &api.Duration{}},
		func(api.GenerateResponse) error { return nil })
	se := statusError(t, err)
	assert.Equal(t, http.StatusBadRequest, se.StatusCode)
	assert.Contains(t, se.ErrorMessage, "cannot be unloaded")
}

func TestOllamaErrors(t *testing.T) {
	ts, c := startOllama(t, 1, 256, Options{})
	ctx := context.Background()
	nop := func(api.GenerateResponse) error { return nil }

	err := c.Generate(ctx, &api.GenerateRequest{Model: "nope", Prompt: "x"}, nop)
	se := statusError(t, err)
	assert.Equal(t, http.StatusNotFound, se.StatusCode)
	assert.Equal(t, "model 'nope' not found", se.ErrorMessage)
	err = c.Chat(ctx, &api.ChatRequest{Model: "nope:7b", Messages: []api.Message{{Role: "user", Content: "x"}}},
		func(api.ChatResponse) error { return nil })
	assert.Equal(t, http.StatusNotFound, statusError(t, err).StatusCode)

	bad := []struct {
		name string
		req  api.GenerateRequest
		msg  string
	}{
		{"temperature type", api.GenerateRequest{Options: map[string]any{"temperature": "hot"}}, `option "temperature" must be a number`},
		{"top_p range", api.GenerateRequest{Options: map[string]any{"top_p": 2}}, "top_p"},
		{"top_k fraction", api.GenerateRequest{Options: map[string]any{"top_k": 1.5}}, `option "top_k" must be an integer`},
		{"num_predict", api.GenerateRequest{Options: map[string]any{"num_predict": -3}}, "num_predict"},
		{"num_ctx", api.GenerateRequest{Options: map[string]any{"num_ctx": 4096}}, "--ctx-size"},
		{"stop type", api.GenerateRequest{Options: map[string]any{"stop": 3}}, `option "stop"`},
		{"unknown option", api.GenerateRequest{Options: map[string]any{"penalize_newline": true}}, `option "penalize_newline" is not supported`},
		{"typical_p", api.GenerateRequest{Options: map[string]any{"typical_p": 0.5}}, "typical_p"},
		{"mirostat", api.GenerateRequest{Options: map[string]any{"mirostat": 2}}, "mirostat"},
		{"use_mmap type", api.GenerateRequest{Options: map[string]any{"use_mmap": 1}}, "boolean"},
		{"format yaml", api.GenerateRequest{Format: json.RawMessage(`"yaml"`)}, `invalid format: "yaml"`},
		{"format list", api.GenerateRequest{Format: json.RawMessage(`["json"]`)}, "invalid format"},
		{"format schema pattern", api.GenerateRequest{Format: json.RawMessage(`{"type":"string","pattern":"a+"}`)}, "json schema at /pattern"},
		{"images", api.GenerateRequest{Images: []api.ImageData{[]byte("png")}}, "vision"},
		{"template", api.GenerateRequest{Template: "{{ .Prompt }}"}, "template overrides"},
		{"suffix", api.GenerateRequest{Suffix: "end"}, "suffix"},
		{"think", api.GenerateRequest{Think: &api.ThinkValue{Value: true}}, "think"},
		{"raw system", api.GenerateRequest{Raw: true, System: "x"}, "raw mode"},
		{"logprobs", api.GenerateRequest{Logprobs: true}, "logprobs"},
		{"context", api.GenerateRequest{Context: []int{1 << 20}}, "outside the vocabulary"},
		{"num_ctx too small", api.GenerateRequest{Options: map[string]any{"num_ctx": 2}}, "num_ctx 2"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Model = modelName
			if req.Prompt == "" {
				req.Prompt = storyPrompt
			}
			err := c.Generate(ctx, &req, nop)
			se := statusError(t, err)
			assert.Equal(t, http.StatusBadRequest, se.StatusCode, se.ErrorMessage)
			assert.Contains(t, se.ErrorMessage, tt.msg)
		})
	}
	for name, chatReq := range map[string]api.ChatRequest{
		"tools":  {Tools: api.Tools{{Type: "function", Function: api.ToolFunction{Name: "f"}}}},
		"images": {Messages: []api.Message{{Role: "user", Content: "x", Images: []api.ImageData{[]byte("png")}}}},
		"role":   {Messages: []api.Message{{Role: "robot", Content: "x"}}},
	} {
		t.Run("chat "+name, func(t *testing.T) {
			chatReq.Model = modelName
			if chatReq.Messages == nil {
				chatReq.Messages = []api.Message{{Role: "user", Content: "x"}}
			}
			err := c.Chat(ctx, &chatReq, func(api.ChatResponse) error { return nil })
			assert.Equal(t, http.StatusBadRequest, statusError(t, err).StatusCode)
		})
	}

	// Without the API key: the client's AuthorizationError, ollama's shape.
	_, err = ts.ollamaClient(t, "").List(ctx)
	var ae api.AuthorizationError
	require.True(t, errors.As(err, &ae), "%T %v", err, err)
	assert.Equal(t, http.StatusUnauthorized, ae.StatusCode)
	req, err := http.NewRequest(http.MethodGet, ts.ts.URL+"/api/tags", nil)
	require.NoError(t, err)
	status, _, body := do(t, req)
	assert.Equal(t, http.StatusUnauthorized, status)
	assert.Contains(t, ollamaError(t, body), "missing API key")

	// Errors before the handlers take ollama's shape too.
	status, _, body = ts.get(t, "/api/nowhere")
	assert.Equal(t, http.StatusNotFound, status)
	assert.Contains(t, ollamaError(t, body), "no route")
	status, _, body = ts.post(t, "/api/pull", `{"model":"llama3.2"}`)
	assert.Equal(t, http.StatusNotImplemented, status)
	assert.Contains(t, ollamaError(t, body), "not supported")
	status, _, body = ts.post(t, "/api/generate", `{"model": "stories260K", "prompt": `)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, ollamaError(t, body), "malformed JSON")
	status, _, body = ts.post(t, "/api/generate", `{"model": "stories260K", "prompt": "x", "options": 3}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "options must be an object, not a number", ollamaError(t, body))
	status, _, body = ts.post(t, "/api/chat", `{"messages": [`+strings.Repeat(`{"role":"user","content":"xxxxxxxx"},`, 300000)+`{}]}`)
	assert.Equal(t, http.StatusRequestEntityTooLarge, status)
	assert.Contains(t, ollamaError(t, body), "larger than")
	// The OpenAI routes keep OpenAI's shape.
	status, _, body = ts.post(t, "/v1/completions", `{"model":"nope","prompt":"x"}`)
	assert.Equal(t, http.StatusNotFound, status)
	assert.Equal(t, CodeModelNotFound, deref(decodeError(t, body).Code))

	// A failure after the stream started ends it with an error line.
	ts.be.fail.Store(true)
	err = c.Generate(ctx, &api.GenerateRequest{Model: modelName, Prompt: storyPrompt}, nop)
	require.Error(t, err)
	assert.Contains(t, err.Error(), errInjected.Error())
	ts.be.fail.Store(false)
}

// ollamaError decodes an ollama error body.
func ollamaError(t *testing.T, body []byte) string {
	t.Helper()
	var e OllamaErrorBody
	require.NoError(t, json.Unmarshal(body, &e), "error body %s", body)
	require.NotEmpty(t, e.Error, "error body %s", body)
	return e.Error
}

// TestOllamaContentType: a JSON body is required from browsers, as on
// the OpenAI routes, but curl's form-encoded `-d` is taken from others.
func TestOllamaContentType(t *testing.T) {
	ts, _ := startOllama(t, 1, 128, Options{})
	body := `{"model":"stories260K","prompt":"Once","stream":false,"options":{"num_predict":1}}`
	for _, ct := range []string{"application/json", "application/x-www-form-urlencoded", "text/plain", ""} {
		status, _, data := ts.postAs(t, "/api/generate", ct, body)
		assert.Equal(t, http.StatusOK, status, "%q: %s", ct, data)
	}
	for _, hdr := range []string{"Origin", "Sec-Fetch-Site"} {
		req, err := http.NewRequest(http.MethodPost, ts.ts.URL+"/api/generate", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set(hdr, map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}[hdr])
		status, _, data := do(t, req)
		assert.Equal(t, http.StatusUnsupportedMediaType, status, "%s", data)
		assert.Contains(t, ollamaError(t, data), "application/json")
	}
}

// TestOllamaCancelFreesSlot: a client that stops reading a stream ends
// its job, and the slot serves the next request.
func TestOllamaCancelFreesSlot(t *testing.T) {
	ts, c := startOllama(t, 1, 512, Options{})
	errStop := errors.New("enough")
	lines := 0
	err := c.Generate(context.Background(), &api.GenerateRequest{Model: modelName, Prompt: storyPrompt, Raw: true,
		Options: map[string]any{"num_predict": 400}}, func(api.GenerateResponse) error {
		lines++
		if lines == 3 {
			return errStop
		}
		return nil
	})
	require.ErrorIs(t, err, errStop)
	waitIdle(t, ts.srv)
	out := generate(t, c, &api.GenerateRequest{Model: modelName, Prompt: storyPrompt, Options: map[string]any{"num_predict": 2}})
	assert.True(t, out[len(out)-1].Done)
}

// TestOllamaBoundLogAndMetrics: the ollama routes share the request
// bound (503 with Retry-After), the access log and the metrics.
func TestOllamaBoundLogAndMetrics(t *testing.T) {
	var logs logBuffer
	ts, c := startOllama(t, 1, 512, Options{Queue: -1, AccessLog: true, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	r := generate(t, c, &api.GenerateRequest{Model: modelName, Prompt: storyPrompt, Stream: ptr(false),
		Options: map[string]any{"num_predict": 7, "temperature": 0}})[0]
	rec := logs.lastRecord(t, 1)
	assert.Equal(t, "/api/generate", rec["route"])
	assert.Equal(t, float64(200), rec["status"])
	assert.Equal(t, float64(r.PromptEvalCount), rec["prompt_tokens"])
	assert.Equal(t, float64(r.EvalCount), rec["completion_tokens"])

	// Occupy the only slot with a stream that is not read on.
	ts.be.delay.Store(int64(20e6)) // 20 ms a step: the stream outlasts the next request
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		once := false
		done <- c.Generate(ctx, &api.GenerateRequest{Model: modelName, Prompt: storyPrompt, Raw: true,
			Options: map[string]any{"num_predict": 400}}, func(api.GenerateResponse) error {
			if !once {
				once = true
				close(first)
			}
			return nil
		})
	}()
	<-first
	status, hdr, body := ts.post(t, "/api/chat", `{"messages":[{"role":"user","content":"Hi"}]}`)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	assert.Contains(t, ollamaError(t, body), "busy")
	cancel()
	<-done
	ts.be.delay.Store(0)
	waitIdle(t, ts.srv)

	status, _, body = ts.get(t, "/metrics")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, string(body), `m40llm_http_requests_total{code="200",route="POST /api/generate"} 2`)
	assert.Contains(t, string(body), `m40llm_http_requests_total{code="503",route="POST /api/chat"} 1`)
}

func TestOllamaOptionValues(t *testing.T) {
	raw := func(s string) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(s), &m))
		return m
	}
	o, err := parseOllamaOptions(raw(`{"top_k": 40.0, "repeat_last_n": 1e2, "seed": 9007199254740993, "num_predict": -1,
		"temperature": 0.5, "stop": "END", "num_ctx": 0, "min_p": null}`), 7, 256)
	require.NoError(t, err)
	assert.Equal(t, 40, o.opts.Sampling.TopK)
	assert.Equal(t, 100, o.opts.Sampling.RepeatLastN)
	assert.Equal(t, uint64(9007199254740993), o.opts.Sampling.Seed, "seeds are exact 64-bit integers")
	assert.Equal(t, float32(0.5), o.opts.Sampling.Temperature)
	assert.Equal(t, []string{"END"}, o.opts.Stop)
	assert.Zero(t, o.opts.MaxTokens)
	assert.Zero(t, o.numCtx)

	o, err = parseOllamaOptions(raw(`{"seed": -1, "num_predict": 9, "num_ctx": 20}`), 7, 256)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), o.opts.Sampling.Seed, "a negative seed is a random one")
	require.NoError(t, o.withNumCtx(15, "prompt"))
	assert.Equal(t, 5, o.opts.MaxTokens, "num_ctx leaves room for 5 tokens")

	for _, bad := range []string{`{"top_k": 1e10}`, `{"seed": 1.5}`, `{"seed": 9223372036854775808}`, `{"num_ctx": -1}`,
		`{"stop": ["a", 1]}`, `{"temperature": true}`, `{"num_thread": "4"}`, `{"top_k": "40"}`} {
		_, err := parseOllamaOptions(raw(bad), 7, 256)
		var ae *Error
		require.ErrorAs(t, err, &ae, bad)
		assert.Equal(t, http.StatusBadRequest, ae.Status, bad)
		assert.True(t, strings.HasPrefix(ae.Param, "options."), "%s: %s", bad, ae.Param)
	}

	for in, want := range map[string]time.Duration{`"5m"`: 5 * time.Minute, `30`: 30 * time.Second, `-1`: math.MaxInt64,
		`"-1s"`: math.MaxInt64, `0`: 0, `null`: -1, `1e300`: math.MaxInt64} {
		d, err := parseKeepAlive(json.RawMessage(in))
		require.NoError(t, err, in)
		assert.Equal(t, want, d, in)
	}
	for _, in := range []string{`"forever"`, `true`, `[1]`} {
		_, err := parseKeepAlive(json.RawMessage(in))
		assert.Error(t, err, in)
	}
}
