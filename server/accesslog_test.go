package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logBuffer collects log output written by the server's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records decodes the JSON log lines whose msg is "request"; each line
// must be one JSON object.
func (l *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	data := bytes.Clone(l.b.Bytes())
	l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), "one JSON object per line: %s", sc.Text())
		if rec["msg"] == "request" {
			out = append(out, rec)
		}
	}
	return out
}

// lastRecord waits briefly for the access record of the request just
// answered (the server logs it as the handler returns) and returns it.
func (l *logBuffer) lastRecord(t *testing.T, want int) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs := l.records(t)
		if len(recs) >= want {
			require.Len(t, recs, want, "one record per request")
			return recs[want-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access records, want %d", len(recs), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAccessLog: with AccessLog, every request gets one Info record with
// its method, route, path, status and duration, and a generation that
// ended its prompt and completion tokens as the response's usage says;
// without it, none.
func TestAccessLog(t *testing.T) {
	var logs logBuffer
	ts := startServer(t, 1, 256, Options{AccessLog: true,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	c := ts.client()
	ctx := context.Background()
	n := 0
	check := func(method, route, path string, status int) map[string]any {
		t.Helper()
		n++
		rec := logs.lastRecord(t, n)
		assert.Equal(t, "INFO", rec["level"])
		assert.Equal(t, method, rec["method"])
		assert.Equal(t, route, rec["route"])
		assert.Equal(t, path, rec["path"])
		assert.Equal(t, float64(status), rec["status"])
		assert.IsType(t, float64(0), rec["duration_ms"])
		return rec
	}

	resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:     modelName,
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
		MaxTokens: openai.Int(5), Temperature: openai.Float(0),
	})
	require.NoError(t, err)
	rec := check("POST", "/v1/chat/completions", "/v1/chat/completions", 200)
	assert.Equal(t, float64(resp.Usage.PromptTokens), rec["prompt_tokens"])
	assert.Equal(t, float64(resp.Usage.CompletionTokens), rec["completion_tokens"])
	assert.Greater(t, rec["duration_ms"], 0.0)

	stream := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model:       modelName,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens:   openai.Int(7),
		Temperature: openai.Float(0),
	})
	for stream.Next() {
	}
	require.NoError(t, stream.Err())
	rec = check("POST", "/v1/completions", "/v1/completions", 200)
	assert.Equal(t, float64(7), rec["completion_tokens"], "a stream's tokens, without include_usage too")
	assert.Greater(t, rec["prompt_tokens"], 1.0)

	code, _, body := ts.post(t, "/v1/embeddings", `{"input":"Once upon a time"}`)
	require.Equal(t, http.StatusBadRequest, code, "%s", body) // embeddings not enabled
	check("POST", "/v1/embeddings", "/v1/embeddings", 400)

	code, _, _ = ts.get(t, "/v1/models/"+modelName)
	require.Equal(t, http.StatusOK, code)
	rec = check("GET", "/v1/models/{id...}", "/v1/models/"+modelName, 200)
	assert.NotContains(t, rec, "prompt_tokens", "no tokens where nothing was generated")

	req, err := http.NewRequest(http.MethodGet, ts.ts.URL+"/v1/models", nil)
	require.NoError(t, err)
	code, _, _ = do(t, req) // no API key
	require.Equal(t, http.StatusUnauthorized, code)
	check("GET", "/v1/models", "/v1/models", 401)

	code, _, _ = ts.post(t, "/v1/completions", `{"model": "stories260K", "prompt": `)
	require.Equal(t, http.StatusBadRequest, code)
	rec = check("POST", "/v1/completions", "/v1/completions", 400)
	assert.NotContains(t, rec, "completion_tokens")

	code, _, _ = ts.get(t, "/nowhere")
	require.Equal(t, http.StatusNotFound, code)
	check("GET", "other", "/nowhere", 404)

	// Off by default.
	var quiet logBuffer
	ts = startServer(t, 1, 256, Options{Logger: slog.New(slog.NewJSONHandler(&quiet, nil))})
	code, _, _ = ts.get(t, "/v1/models")
	require.Equal(t, http.StatusOK, code)
	time.Sleep(20 * time.Millisecond)
	assert.Empty(t, quiet.records(t))
}
