package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// loadStats summarises a load run.
type loadStats struct {
	requests, completed, disconnected int
	errs                              []error
	tokens                            int64           // completion tokens of completed requests
	latency, ttft                     []time.Duration // of completed requests
	wall                              time.Duration
}

func (s *loadStats) tokPerSec() float64 { return float64(s.tokens) / s.wall.Seconds() }

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[min(len(d)-1, int(p*float64(len(d))))]
}

func (s *loadStats) String() string {
	return fmt.Sprintf("%d requests (%d completed, %d disconnected on purpose, %d errors): %d tokens in %v = %.0f tok/s aggregate; latency p50 %v p99 %v; time to first token p50 %v p99 %v",
		s.requests, s.completed, s.disconnected, len(s.errs), s.tokens, s.wall.Round(time.Millisecond), s.tokPerSec(),
		percentile(s.latency, .50).Round(time.Millisecond), percentile(s.latency, .99).Round(time.Millisecond),
		percentile(s.ttft, .50).Round(time.Millisecond), percentile(s.ttft, .99).Round(time.Millisecond))
}

var storyStarts = []string{
	"Once upon a time", "Lily went to the park", "Tom had a big red ball", "The cat sat on the mat",
	"One day, a little bird", "Sue and her mom baked a cake", "There was a small boat", "The sun was hot and",
}

// runLoad has clients clients each send perClient streaming completions of
// maxTokens tokens (end-of-text ignored) one after the other. When
// disconnect(client) is true, that client hangs up after a few chunks of
// each request.
func runLoad(ctx context.Context, t testing.TB, c *openai.Client, clients, perClient, maxTokens int, disconnect func(int) bool) *loadStats {
	t.Helper()
	st := &loadStats{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Go(func() {
			for r := range perClient {
				params := openai.CompletionNewParams{
					Model:         modelName,
					Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyStarts[(i+r)%len(storyStarts)])},
					MaxTokens:     openai.Int(int64(maxTokens)),
					Seed:          openai.Int(int64(i*perClient + r)),
					StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
				}
				rctx, cancel := context.WithCancel(ctx)
				t0 := time.Now()
				var first time.Duration
				var usage openai.CompletionUsage
				finish := ""
				chunks := 0
				hangUp := disconnect != nil && disconnect(i)
				stream := c.Completions.NewStreaming(rctx, params, option.WithJSONSet("ignore_eos", true))
				for stream.Next() {
					ch := stream.Current()
					if chunks == 0 {
						first = time.Since(t0)
					}
					chunks++
					if ch.Usage.TotalTokens > 0 {
						usage = ch.Usage
					}
					if len(ch.Choices) > 0 && ch.Choices[0].FinishReason != "" {
						finish = string(ch.Choices[0].FinishReason)
					}
					if hangUp && chunks == 3+r {
						cancel()
						break
					}
				}
				err := stream.Err()
				stream.Close()
				cancel()
				lat := time.Since(t0)

				mu.Lock()
				st.requests++
				switch {
				case hangUp:
					st.disconnected++
				case err != nil:
					st.errs = append(st.errs, fmt.Errorf("client %d request %d: %w", i, r, err))
				case usage.CompletionTokens != int64(maxTokens) || finish != "length":
					st.errs = append(st.errs, fmt.Errorf("client %d request %d: %d tokens, finish %q", i, r, usage.CompletionTokens, finish))
				default:
					st.completed++
					st.tokens += usage.CompletionTokens
					st.latency = append(st.latency, lat)
					st.ttft = append(st.ttft, first)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st.wall = time.Since(start)
	return st
}

// settleGoroutines waits (at most 10 s) until the goroutine count is at
// most want, and returns the last count.
func settleGoroutines(want int) int {
	deadline := time.Now().Add(10 * time.Second)
	n := runtime.NumGoroutine()
	for n > want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

// TestLoad runs 64 concurrent streaming clients × 4 requests against 8
// slots over loopback, then the same with a quarter of the clients
// hanging up mid-stream, and checks that every other request completes
// with the right token count, that the slots are freed and that the
// goroutines return to their idle level.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	const clients, perClient, maxTokens = 64, 4, 32
	ts := startServer(t, 8, 256, Options{Queue: clients})
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	c := ts.client(option.WithHTTPClient(&http.Client{Transport: tr}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Idle level: after one request, with no connection open.
	_, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: modelName,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")}, MaxTokens: openai.Int(2)})
	require.NoError(t, err)
	tr.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	idle := runtime.NumGoroutine()

	st := runLoad(ctx, t, c, clients, perClient, maxTokens, nil)
	t.Logf("%d clients x %d streams, --parallel 8: %v", clients, perClient, st)
	require.Empty(t, st.errs, "errors: %v", errors.Join(st.errs...))
	assert.Equal(t, clients*perClient, st.completed)
	assert.Equal(t, int64(clients*perClient*maxTokens), st.tokens)
	waitIdle(t, ts.srv)
	tr.CloseIdleConnections()
	n := settleGoroutines(idle)
	assert.LessOrEqual(t, n, idle, "goroutines after the load: %d, idle level %d", n, idle)

	st = runLoad(ctx, t, c, clients, perClient, maxTokens, func(i int) bool { return i%4 == 0 })
	t.Logf("same, 25%% of the clients hanging up mid-stream: %v", st)
	require.Empty(t, st.errs, "errors: %v", errors.Join(st.errs...))
	assert.Equal(t, clients/4*perClient, st.disconnected)
	assert.Equal(t, clients*3/4*perClient, st.completed)
	waitIdle(t, ts.srv)
	tr.CloseIdleConnections()
	n = settleGoroutines(idle)
	assert.LessOrEqual(t, n, idle, "goroutines after the disconnects: %d, idle level %d", n, idle)
	if t.Failed() {
		buf := make([]byte, 1<<20)
		t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
	}

	// Every slot is free and serves again.
	status, _, body := ts.get(t, "/metrics")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, string(body), "m40llm_requests_active 0\n")
	assert.Contains(t, string(body), "m40llm_requests_queued 0\n")
}

// BenchmarkStreams measures aggregate decode throughput of n concurrent
// streams of 64 tokens on the CPU backend (8 slots).
func BenchmarkStreams(b *testing.B) {
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			ts := startServer(b, 8, 256, Options{})
			c := ts.client()
			var tokens int64
			var wall time.Duration
			for b.Loop() {
				st := runLoad(context.Background(), b, c, n, 1, 64, nil)
				if len(st.errs) > 0 {
					b.Fatal(errors.Join(st.errs...))
				}
				tokens += st.tokens
				wall += st.wall
			}
			b.ReportMetric(float64(tokens)/wall.Seconds(), "tok/s")
		})
	}
}

// heapInUse returns runtime.MemStats.HeapInuse after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestLoadWithHostileClients runs, over loopback and within a few
// seconds, 64 concurrent streaming clients × 3 requests against 8 slots,
// a quarter of them hanging up mid-stream, next to a client that trickles its body, a
// request with a rebinding Host header and a text/plain POST. The streams
// complete (or end where their client left), the trickler gets 408 once
// the body timeout has passed, the others 403 and 415; afterwards no
// request is in flight, the goroutines are back to their idle level and
// the heap in use is back near where it was.
func TestLoadWithHostileClients(t *testing.T) {
	const clients, perClient, maxTokens = 64, 3, 16
	const bodyTimeout = 500 * time.Millisecond
	start := time.Now()
	ts := startServer(t, 8, 256, Options{Queue: clients, BodyTimeout: bodyTimeout})
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	c := ts.client(option.WithHTTPClient(hc))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Idle level: after one request, with no connection open.
	_, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: modelName,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")}, MaxTokens: openai.Int(2)})
	require.NoError(t, err)
	tr.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	idle := runtime.NumGoroutine()
	idleHeap := heapInUse()

	var wg sync.WaitGroup
	var slowStatus, rebindStatus, plainStatus int
	var slowTook time.Duration
	var slowErr error
	var slowBody, rebindBody, plainBody []byte
	wg.Go(func() {
		var resp *http.Response
		resp, slowBody, slowTook, slowErr = slowPost(t, ts, "/v1/completions",
			`{"prompt":"Once upon a time","max_tokens":2,"stream":true}`, 150*time.Millisecond, 5*time.Second)
		if resp != nil {
			slowStatus = resp.StatusCode
		}
	})
	send := func(host, ct string, status *int, body *[]byte) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.ts.URL+"/v1/completions",
			strings.NewReader(`{"prompt":"Once upon a time","max_tokens":4,"stream":true}`))
		if err != nil {
			panic(err)
		}
		if host != "" {
			req.Host = host
		}
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := hc.Do(req)
		if err != nil {
			*body = []byte(err.Error())
			return
		}
		defer resp.Body.Close()
		*status = resp.StatusCode
		*body, _ = io.ReadAll(resp.Body)
	}
	wg.Go(func() { send("attacker.example:58439", "application/json", &rebindStatus, &rebindBody) })
	wg.Go(func() { send("", "text/plain;charset=UTF-8", &plainStatus, &plainBody) })
	st := runLoad(ctx, t, c, clients, perClient, maxTokens, func(i int) bool { return i%4 == 0 })
	wg.Wait()
	t.Logf("%d streaming clients x %d, a quarter hanging up, --parallel 8: %v", clients, perClient, st)

	require.Empty(t, st.errs, "errors: %v", errors.Join(st.errs...))
	assert.Equal(t, clients/4*perClient, st.disconnected)
	assert.Equal(t, clients*3/4*perClient, st.completed)
	assert.Equal(t, int64(clients*3/4*perClient*maxTokens), st.tokens)
	if assert.NoError(t, slowErr, "the trickling client got no answer in %v", slowTook.Round(time.Millisecond)) {
		assert.Equal(t, http.StatusRequestTimeout, slowStatus, "%s", slowBody)
		assert.Equal(t, CodeRequestTimeout, deref(decodeError(t, slowBody).Code))
		assert.Less(t, slowTook, bodyTimeout+2*time.Second)
	}
	if assert.Equal(t, http.StatusForbidden, rebindStatus, "rebinding Host: %s", rebindBody) {
		assert.Equal(t, CodeHostNotAllowed, deref(decodeError(t, rebindBody).Code))
	}
	if assert.Equal(t, http.StatusUnsupportedMediaType, plainStatus, "text/plain: %s", plainBody) {
		assert.Equal(t, CodeUnsupportedMediaType, deref(decodeError(t, plainBody).Code))
	}

	waitIdle(t, ts.srv)
	tr.CloseIdleConnections()
	const slack = 3
	n := settleGoroutines(idle + slack)
	assert.LessOrEqual(t, n, idle+slack, "goroutines after the load: %d, idle level %d", n, idle)
	if n > idle+slack {
		buf := make([]byte, 1<<20)
		t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
	}
	// Generous: the model and its KV cache are a few MiB; what matters is
	// that nothing per request (buffers, streams, jobs) stays reachable.
	const heapSlack = 8 << 20
	heap := heapInUse()
	for deadline := time.Now().Add(5 * time.Second); heap > idleHeap+heapSlack && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		heap = heapInUse()
	}
	t.Logf("heap in use: %.1f MiB idle, %.1f MiB after the load", float64(idleHeap)/(1<<20), float64(heap)/(1<<20))
	assert.LessOrEqual(t, heap, idleHeap+heapSlack, "heap in use after the load")

	status, _, body := ts.get(t, "/metrics")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, string(body), "m40llm_requests_active 0\n")
	assert.Contains(t, string(body), "m40llm_requests_queued 0\n")
	assert.Less(t, time.Since(start), 20*time.Second, "the test is meant to take a few seconds")
}
