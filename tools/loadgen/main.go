// Command loadgen drives a running `m40llm serve` with concurrent streaming
// completions and prints aggregate throughput and latency, for each
// concurrency level given.
//
//	loadgen -url http://127.0.0.1:58439 -streams 1,8 -requests 4 -max-tokens 256
//
// Every request asks for exactly -max-tokens tokens (ignore_eos) so that
// runs are comparable. Each level prints one row: the aggregate tokens
// per second over the level's wall time and, in the last column, its
// ratio to the first level's (the batched-decode speed-up when the first
// level is 1). loadgen first waits for /health to say 200 (-wait), then
// sends one warm-up request that is not counted (the first request also
// pays for PTX compilation and graph capture on a GPU). It exits 1 when
// any request fails or returns another token count.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

type config struct {
	url, model, apiKey, prompt string
	requests, maxTokens        int
	chat                       bool
	temperature                float64
}

// client keeps a connection per stream between requests.
var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

// result is one request's outcome.
type result struct {
	tokens     int
	ttft, wall time.Duration
	err        error
}

func main() {
	var cfg config
	var levels string
	var timeout time.Duration
	flag.StringVar(&cfg.url, "url", "http://127.0.0.1:58439", "server base URL")
	flag.StringVar(&levels, "streams", "1,8", "comma-separated numbers of concurrent streams, run one after the other")
	flag.IntVar(&cfg.requests, "requests", 4, "requests per stream, one after the other")
	flag.IntVar(&cfg.maxTokens, "max-tokens", 256, "tokens per request")
	flag.StringVar(&cfg.prompt, "prompt", "Once upon a time", "prompt (stream i appends \" (i)\" so that prompts differ)")
	flag.StringVar(&cfg.model, "model", "", "model id to send (empty: the server's)")
	flag.StringVar(&cfg.apiKey, "api-key", "", "API key, if the server wants one")
	flag.BoolVar(&cfg.chat, "chat", false, "use /v1/chat/completions instead of /v1/completions")
	flag.Float64Var(&cfg.temperature, "temperature", 0, "sampling temperature (0: greedy)")
	flag.DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")
	wait := flag.Duration("wait", time.Minute, "wait this long for /health to say 200 (the server may still be loading)")
	flag.Parse()

	var ns []int
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "loadgen: -streams %q: want positive integers\n", levels)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	if err := waitHealthy(ctx, cfg.url, *wait); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
	if r := request(ctx, &cfg, cfg.prompt); r.err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: warm-up request: %v\n", r.err)
		os.Exit(1)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\trequests\ttokens\twall\ttok/s\ttok/s/stream\tttft p50\tttft p99\tlatency p50\tlatency p99\tvs first\t")
	failed := false
	var first float64
	for _, n := range ns {
		res, wall := level(ctx, &cfg, n)
		tokens := 0
		var ttft, lat []time.Duration
		for _, r := range res {
			if r.err != nil {
				fmt.Fprintf(os.Stderr, "loadgen: %d streams: %v\n", n, r.err)
				failed = true
				continue
			}
			tokens += r.tokens
			ttft = append(ttft, r.ttft)
			lat = append(lat, r.wall)
		}
		rate := float64(tokens) / wall.Seconds()
		if first == 0 {
			first = rate
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%v\t%.1f\t%.1f\t%v\t%v\t%v\t%v\t%.2fx\t\n", n, len(res), tokens, wall.Round(time.Millisecond),
			rate, rate/float64(n), pct(ttft, .5), pct(ttft, .99), pct(lat, .5), pct(lat, .99), rate/first)
	}
	tw.Flush()
	if failed {
		os.Exit(1)
	}
}

// waitHealthy polls GET /health until it answers 200, for at most d.
func waitHealthy(ctx context.Context, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/health: status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server is not ready after %v: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// level runs n streams of cfg.requests requests each and returns their
// results and the wall time.
func level(ctx context.Context, cfg *config, n int) ([]result, time.Duration) {
	var mu sync.Mutex
	var out []result
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			for range cfg.requests {
				r := request(ctx, cfg, fmt.Sprintf("%s (%d)", cfg.prompt, i))
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out, time.Since(start)
}

// request sends one streaming request and reads it to the end.
func request(ctx context.Context, cfg *config, prompt string) result {
	body := map[string]any{
		"max_tokens": cfg.maxTokens, "temperature": cfg.temperature, "ignore_eos": true,
		"stream": true, "stream_options": map[string]any{"include_usage": true},
	}
	if cfg.model != "" {
		body["model"] = cfg.model
	}
	path := "/v1/completions"
	if cfg.chat {
		path = "/v1/chat/completions"
		body["messages"] = []map[string]string{{"role": "user", "content": prompt}}
	} else {
		body["prompt"] = prompt
	}
	data, err := json.Marshal(body)
	if err != nil {
		return result{err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(cfg.url, "/")+path, bytes.NewReader(data))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.apiKey)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return result{err: fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))}
	}
	var r result
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	done := false
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var ch struct {
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &ch); err != nil {
			return result{err: fmt.Errorf("bad event %q: %w", line, err)}
		}
		switch {
		case ch.Error != nil:
			return result{err: errors.New(ch.Error.Message)}
		case ch.Usage != nil:
			r.tokens = ch.Usage.CompletionTokens
		case r.ttft == 0 && len(ch.Choices) > 0 && ch.Choices[0].Text+ch.Choices[0].Delta.Content != "":
			r.ttft = time.Since(start) // the first text, not the chat role chunk
		}
	}
	r.wall = time.Since(start)
	switch {
	case sc.Err() != nil:
		r.err = sc.Err()
	case !done:
		r.err = errors.New("the stream ended without [DONE]")
	case r.tokens != cfg.maxTokens:
		r.err = fmt.Errorf("%d tokens, want %d", r.tokens, cfg.maxTokens)
	}
	return r
}

// pct returns the p-quantile of d, rounded for printing.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[min(len(d)-1, int(p*float64(len(d))))].Round(100 * time.Microsecond)
}
