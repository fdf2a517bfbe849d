package main

import (
	"bytes"
	"context"
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
		{"model not found", []string{"serve", "-m", "nope.gguf", "--addr", "127.0.0.1:0"}, 3, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := runCLI(t, "", tt.args...)
			assert.Equal(t, tt.code, code, errs)
			assert.Contains(t, errs, tt.msg)
		})
	}
}
