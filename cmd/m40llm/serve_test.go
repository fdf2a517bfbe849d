package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lockedBuffer is a bytes.Buffer safe for the serve goroutine to write and
// the test to read.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listeningRE = regexp.MustCompile(`listening on (http://\S+)`)

// startServe runs `m40llm serve` on a free loopback port and returns its
// base URL, its stderr and a channel with its exit status.
func startServe(t *testing.T, args ...string) (string, *lockedBuffer, <-chan int) {
	t.Helper()
	stories260K := fixture.BundledModel(t)
	var stdout bytes.Buffer
	stderr := &lockedBuffer{}
	code := make(chan int, 1)
	go func() {
		code <- runWithInput(append([]string{"m40llm", "serve", "--addr", "127.0.0.1:0", "--backend", "cpu", "-m", stories260K}, args...),
			strings.NewReader(""), &stdout, stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case c := <-code:
			t.Fatalf("serve exited with %d: %s", c, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		s := stderr.String()
		if m := listeningRE.FindStringSubmatch(s); m != nil && strings.Contains(s, "m40llm: serving") {
			return m[1], stderr, code
		}
	}
	t.Fatalf("serve did not start: %s", stderr.String())
	return "", nil, nil
}

func waitExit(t *testing.T, code <-chan int, stderr *lockedBuffer) int {
	t.Helper()
	select {
	case c := <-code:
		return c
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not exit: %s", stderr.String())
	}
	return -1
}

func TestServeGreedyMatchesGenerateAndShutsDownGracefully(t *testing.T) {
	const n = 48
	want, errs, code := runCLI(t, "", "generate", "-m", fixture.BundledModel(t), "-p", "Once upon a time", "-n", itoa(n), "--temp", "0", "--backend", "cpu")
	require.Equal(t, 0, code, errs)

	url, stderr, exit := startServe(t, "--parallel", "2", "-c", "512", "--api-key", "sekrit", "--alias", "tiny")
	assert.Contains(t, stderr.String(), `serving "tiny": 2 slots x 512 positions`)
	c := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("sekrit"), option.WithMaxRetries(0))
	ctx := context.Background()
	params := openai.CompletionNewParams{
		Model:       "tiny",
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens:   openai.Int(n),
		Temperature: openai.Float(0),
	}
	resp, err := c.Completions.New(ctx, params)
	require.NoError(t, err)
	assert.Equal(t, want, resp.Choices[0].Text, "the server's greedy text is generate --temp 0's")

	// A stream in flight when SIGTERM comes finishes; then serve exits 0.
	params.MaxTokens = openai.Int(300)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Completions.NewStreaming(ctx, params, option.WithJSONSet("ignore_eos", true))
	require.True(t, stream.Next(), "%v", stream.Err())
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	var usage openai.CompletionUsage
	for stream.Next() {
		if u := stream.Current().Usage; u.TotalTokens > 0 {
			usage = u
		}
	}
	require.NoError(t, stream.Err())
	assert.Equal(t, int64(300), usage.CompletionTokens)
	assert.Equal(t, 0, waitExit(t, exit, stderr), stderr.String())
	assert.Contains(t, stderr.String(), "m40llm: shutting down")
	assert.Contains(t, stderr.String(), "m40llm: stopped")
	_, err = c.Completions.New(ctx, params)
	assert.Error(t, err, "nothing listens any more")
}

func TestServeShutdownTimeoutCancels(t *testing.T) {
	url, stderr, exit := startServe(t, "--parallel", "1", "-c", "2048", "--api-key", "", "--shutdown-timeout", "1ms")
	c := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	stream := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "stories260K",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story.")},
	}, option.WithJSONSet("ignore_eos", true))
	require.True(t, stream.Next(), "%v", stream.Err())
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	for stream.Next() {
	}
	require.Error(t, stream.Err(), "the stream is cut short")
	assert.Contains(t, stream.Err().Error(), "shutting down")
	assert.Equal(t, 0, waitExit(t, exit, stderr), stderr.String())
	assert.Contains(t, stderr.String(), "cancelled the requests still running")
}

func TestServeErrors(t *testing.T) {
	stories260K := fixture.BundledModel(t)
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no model", []string{"serve"}, 2, "no model"},
		{"parallel 0", []string{"serve", "-m", stories260K, "--parallel", "0"}, 2, "--parallel"},
		{"arguments", []string{"serve", "-m", stories260K, "extra"}, 2, "no arguments"},
		{"bad address", []string{"serve", "-m", stories260K, "--addr", "127.0.0.1:99999"}, 1, "invalid port"},
		{"negative body timeout", []string{"serve", "-m", stories260K, "--body-timeout", "-1s"}, 2, "--body-timeout must not be negative"},
		{"negative idle timeout", []string{"serve", "-m", stories260K, "--idle-timeout", "-1s"}, 2, "--idle-timeout must not be negative"},
		{"max-header-bytes 0", []string{"serve", "-m", stories260K, "--max-header-bytes", "0"}, 2, "--max-header-bytes must be at least 1"},
		{"model not found", []string{"serve", "-m", "nope.gguf", "--addr", "127.0.0.1:0"}, 3, "no such file"},
		{"pooling rank", []string{"serve", "-m", stories260K, "--pooling", "rank"}, 2, "--pooling \"rank\": use mean, cls or last"},
		{"pooling max", []string{"serve", "-m", stories260K, "--pooling", "max"}, 2, "--pooling \"max\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := runCLI(t, "", tt.args...)
			assert.Equal(t, tt.code, code, errs)
			assert.Contains(t, errs, tt.msg)
		})
	}
}

// stopServe sends SIGTERM and waits for serve to exit 0.
func stopServe(t *testing.T, exit <-chan int, stderr *lockedBuffer) {
	t.Helper()
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGTERM))
	assert.Equal(t, 0, waitExit(t, exit, stderr), stderr.String())
}

// exposureRequest sends method path with body (as ctype) and Host host to
// the server at base and returns the status, the headers and the body.
func exposureRequest(t *testing.T, base, method, path, host, ctype, body string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(data)
}

// TestServeExposure: on loopback, serve answers only loopback names and
// the --host-alias names (403 otherwise), takes JSON bodies only as
// application/json (415), sends no CORS headers without --cors-origin,
// closes connections whose body is too slow (--body-timeout: 408) and
// refuses headers over --max-header-bytes (431).
func TestServeExposure(t *testing.T) {
	const completion = `{"prompt":"Once","max_tokens":2}`
	t.Run("defaults", func(t *testing.T) {
		base, stderr, exit := startServe(t, "--parallel", "1", "-c", "128")
		defer stopServe(t, exit, stderr)
		status, _, body := exposureRequest(t, base, http.MethodPost, "/v1/completions", "", "application/json", completion, nil)
		assert.Equal(t, http.StatusOK, status, body)
		status, _, body = exposureRequest(t, base, http.MethodPost, "/v1/completions", "localhost:58439", "application/json", completion, nil)
		assert.Equal(t, http.StatusOK, status, body)
		status, _, body = exposureRequest(t, base, http.MethodPost, "/v1/completions", "attacker.example:58439", "application/json", completion, nil)
		assert.Equal(t, http.StatusForbidden, status, body)
		assert.Contains(t, body, `"code":"host_not_allowed"`)
		status, _, body = exposureRequest(t, base, http.MethodPost, "/v1/completions", "", "text/plain;charset=UTF-8", completion, nil)
		assert.Equal(t, http.StatusUnsupportedMediaType, status, body)
		assert.Contains(t, body, `"code":"unsupported_media_type"`)
		status, hdr, body := exposureRequest(t, base, http.MethodGet, "/v1/models", "", "", "", map[string]string{"Origin": "http://attacker.example"})
		assert.Equal(t, http.StatusOK, status, body)
		assert.Empty(t, hdr.Get("Access-Control-Allow-Origin"), "CORS is off without --cors-origin")
		status, _, _ = exposureRequest(t, base, http.MethodGet, "/health", "", "", "", map[string]string{"X-Pad": strings.Repeat("x", 80<<10)})
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, status, "64 KiB of headers by default")
	})
	t.Run("flags", func(t *testing.T) {
		base, stderr, exit := startServe(t, "--parallel", "1", "-c", "128", "--host-alias", "box.lan", "--host-alias", "llm.example",
			"--body-timeout", "300ms", "--header-timeout", "300ms", "--idle-timeout", "300ms", "--max-header-bytes", "8192")
		defer stopServe(t, exit, stderr)
		for _, host := range []string{"box.lan", "LLM.example:443"} {
			status, _, body := exposureRequest(t, base, http.MethodPost, "/v1/completions", host, "application/json", completion, nil)
			assert.Equal(t, http.StatusOK, status, "%s: %s", host, body)
		}
		status, _, body := exposureRequest(t, base, http.MethodGet, "/health", "other.lan", "", "", nil)
		assert.Equal(t, http.StatusForbidden, status, body)
		status, _, _ = exposureRequest(t, base, http.MethodGet, "/health", "", "", "", map[string]string{"X-Pad": strings.Repeat("x", 16<<10)})
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, status)

		// A body trickled one byte every 100 ms is cut off after 300 ms.
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		require.NoError(t, err)
		defer c.Close()
		start := time.Now()
		_, err = fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(completion))
		require.NoError(t, err)
		go func() {
			for i := range len(completion) {
				if _, err := c.Write([]byte{completion[i]}); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		require.NoError(t, c.SetReadDeadline(start.Add(3*time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err, "no answer after %v", time.Since(start).Round(time.Millisecond))
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode, "%s", data)
		assert.Contains(t, string(data), `"code":"request_timeout"`)
		assert.Less(t, time.Since(start), 2*time.Second)

		// Unfinished headers, and a keep-alive connection left idle, are
		// closed after 300 ms.
		for _, req := range []string{"GET /health HTTP/1.1\r\nHost: localhost\r\n", "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"} {
			c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			require.NoError(t, err)
			defer c.Close()
			start := time.Now()
			_, err = io.WriteString(c, req)
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(start.Add(3*time.Second)))
			_, err = io.Copy(io.Discard, c) // the answer, if any, then EOF
			assert.NoError(t, err, "%q: the connection stayed open", req)
			assert.Less(t, time.Since(start), 2*time.Second)
		}
	})
}

// TestServeAccessLog: serve logs one line per request on stderr, as
// key=value text by default and as one JSON object per line with
// --log-format json; --log-disable logs none.
func TestServeAccessLog(t *testing.T) {
	complete := func(url string) {
		t.Helper()
		c := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
		_, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
			Model:       "stories260K",
			Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
			MaxTokens:   openai.Int(4),
			Temperature: openai.Float(0),
		})
		require.NoError(t, err)
	}
	accessLines := func(stderr *lockedBuffer, marker string) []string {
		var lines []string
		for l := range strings.Lines(stderr.String()) {
			if strings.Contains(l, marker) {
				lines = append(lines, strings.TrimSuffix(l, "\n"))
			}
		}
		return lines
	}

	url, stderr, exit := startServe(t, "--api-key", "")
	complete(url)
	stopServe(t, exit, stderr)
	lines := accessLines(stderr, "msg=request")
	require.Len(t, lines, 1, stderr.String())
	assert.Regexp(t, `^time=\S+ level=INFO msg=request method=POST route=/v1/completions path=/v1/completions status=200 prompt_tokens=\d+ completion_tokens=4 duration_ms=[0-9.]+$`, lines[0])

	url, stderr, exit = startServe(t, "--api-key", "", "--log-format", "json")
	complete(url)
	stopServe(t, exit, stderr)
	lines = accessLines(stderr, `"msg":"request"`)
	require.Len(t, lines, 1, stderr.String())
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &rec), "one JSON object: %s", lines[0])
	assert.Equal(t, "/v1/completions", rec["route"])
	assert.Equal(t, float64(200), rec["status"])
	assert.Equal(t, float64(4), rec["completion_tokens"])

	url, stderr, exit = startServe(t, "--api-key", "", "--log-disable")
	complete(url)
	stopServe(t, exit, stderr)
	assert.NotContains(t, stderr.String(), "msg=request", "no access log")
	assert.NotContains(t, stderr.String(), "level=", "no log records at all")
	assert.Contains(t, stderr.String(), "m40llm: stopped")

	_, errs, code := runCLI(t, "", "serve", "-m", fixture.BundledModel(t), "--log-format", "xml")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, `--log-format "xml": want text or json`)
}
