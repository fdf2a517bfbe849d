package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trickle writes body to c one byte every interval until it is written,
// a write fails or stop is closed.
func trickle(c net.Conn, body string, interval time.Duration, stop <-chan struct{}) {
	for i := range len(body) {
		if _, err := c.Write([]byte{body[i]}); err != nil {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
	}
}

// slowPost sends a POST of body to path over a raw connection, the headers
// at once and the body one byte every interval, and returns the response
// (read with a deadline of wait) and how long it took to come.
func slowPost(t testing.TB, ts *testServer, path, body string, interval, wait time.Duration) (*http.Response, []byte, time.Duration, error) {
	t.Helper()
	c := ts.dial(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	start := time.Now()
	_, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		path, ts.ts.Listener.Addr(), testKey, len(body))
	require.NoError(t, err)
	wg.Go(func() { trickle(c, body, interval, stop) })
	require.NoError(t, c.SetReadDeadline(start.Add(wait)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	took := time.Since(start)
	if err != nil {
		return nil, nil, took, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp, data, took, err
}

// TestBodyTimeout: a client that sends its body too slowly gets 408 once
// Options.BodyTimeout has passed since the headers, and its connection is
// closed; one that sends it in time is served.
func TestBodyTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := startServer(t, 1, 64, Options{BodyTimeout: timeout})
	body := `{"prompt":"Once upon a time","max_tokens":2}`

	t.Run("trickled body", func(t *testing.T) {
		// One byte every 100 ms: the whole body would take 4.5 s.
		resp, data, took, err := slowPost(t, ts, "/v1/completions", body, 100*time.Millisecond, 3*time.Second)
		require.NoError(t, err, "no answer %v after the request started", took.Round(time.Millisecond))
		assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode, "%s", data)
		assert.True(t, resp.Close, "the connection is closed")
		assert.GreaterOrEqual(t, took, timeout)
		assert.Less(t, took, timeout+time.Second)
		e := decodeError(t, data)
		assert.Equal(t, TypeInvalidRequest, e.Type)
		assert.Equal(t, CodeRequestTimeout, deref(e.Code))
		assert.Contains(t, e.Message, "300ms")
	})
	t.Run("body in a few pieces, in time", func(t *testing.T) {
		c := ts.dial(t)
		_, err := fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", testKey, len(body))
		require.NoError(t, err)
		for i := 0; i < len(body); i += len(body)/4 + 1 {
			time.Sleep(timeout / 10)
			_, err := io.WriteString(c, body[i:min(len(body), i+len(body)/4+1)])
			require.NoError(t, err)
		}
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", data)

		// The deadline is off once the body is read: the same connection,
		// idle for longer than the body timeout, serves the next request.
		time.Sleep(2 * timeout)
		_, err = fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
		require.NoError(t, err)
		resp, err = http.ReadResponse(br, nil)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})
}

// TestStreamOutlivesBodyTimeout: the body timeout bounds reading the
// request, not the answer: a stream that lasts many body timeouts runs to
// its end. (A timeout on the whole exchange, such as
// http.Server.WriteTimeout or http.TimeoutHandler, cuts it off.)
func TestStreamOutlivesBodyTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	ts := startServer(t, 1, 128, Options{BodyTimeout: timeout})
	ts.be.delay.Store(int64(20 * time.Millisecond)) // 25 tokens: about 5 body timeouts
	start := time.Now()
	stream := ts.client().Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
		Model: modelName, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens:     openai.Int(25),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, option.WithJSONSet("ignore_eos", true))
	var usage openai.CompletionUsage
	for stream.Next() {
		if u := stream.Current().Usage; u.TotalTokens > 0 {
			usage = u
		}
	}
	require.NoError(t, stream.Err())
	assert.Equal(t, int64(25), usage.CompletionTokens)
	assert.Greater(t, time.Since(start), 3*timeout, "the stream lasted longer than the body timeout")
}

// TestBodyTimeoutSparesRunningHandlers: a handler that runs for many body
// timeouts after its body was read, or that had no body, keeps its
// context. For a request without a body net/http reads the connection in
// the background from the start (to notice a client that leaves), and a
// read deadline set then would fail that read and cancel the request
// (golang/go#70834), so none is set.
func TestBodyTimeoutSparesRunningHandlers(t *testing.T) {
	const timeout = 50 * time.Millisecond
	s := New(Options{Name: modelName, BodyTimeout: timeout})
	ts := httptest.NewServer(s.limitBodyTime(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		select {
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusInternalServerError)
		case <-time.After(5 * timeout):
			io.WriteString(w, "ok")
		}
	})))
	defer ts.Close()
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequest(method, ts.URL, strings.NewReader(`{"prompt":"Once"}`))
		require.NoError(t, err)
		if method == http.MethodGet {
			req.Body, req.ContentLength = nil, 0
		}
		status, _, data := do(t, req)
		assert.Equal(t, http.StatusOK, status, "%s: %s", method, data)
		assert.Equal(t, "ok", string(data), method)
	}
}

// TestHeaderAndIdleTimeouts: a connection that does not finish its
// headers within Options.HeaderTimeout, or stays idle between requests
// for Options.IdleTimeout, is closed.
func TestHeaderAndIdleTimeouts(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, 1, 64, Options{HeaderTimeout: timeout, IdleTimeout: timeout})
	// closed reports how long the server took to close c (3 s at most).
	closed := func(t *testing.T, c net.Conn, r io.Reader) time.Duration {
		t.Helper()
		start := time.Now()
		require.NoError(t, c.SetReadDeadline(start.Add(3*time.Second)))
		_, err := io.Copy(io.Discard, r)
		took := time.Since(start)
		require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server kept the connection open for %v", took.Round(time.Millisecond))
		return took
	}
	t.Run("headers", func(t *testing.T) {
		c := ts.dial(t)
		_, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: localhost\r\n")
		require.NoError(t, err)
		assert.Less(t, closed(t, c, c), timeout+time.Second)
	})
	t.Run("idle", func(t *testing.T) {
		c := ts.dial(t)
		_, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
		require.NoError(t, err)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.False(t, resp.Close, "keep-alive")
		assert.Less(t, closed(t, c, br), timeout+time.Second)
	})
}

// TestMaxHeaderBytes: headers over Options.MaxHeaderBytes (by default
// DefaultMaxHeaderBytes) get 431.
func TestMaxHeaderBytes(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		header int
		status int
	}{
		{"default, small", 0, 1 << 10, http.StatusOK},
		{"default, over", 0, DefaultMaxHeaderBytes + 8<<10, http.StatusRequestHeaderFieldsTooLarge},
		{"4 KiB, over", 4 << 10, 12 << 10, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, 1, 64, Options{MaxHeaderBytes: tt.limit})
			req, err := http.NewRequest(http.MethodGet, ts.ts.URL+"/health", nil)
			require.NoError(t, err)
			req.Header.Set("X-Pad", strings.Repeat("x", tt.header))
			status, _, _ := do(t, req)
			assert.Equal(t, tt.status, status)
		})
	}
}
