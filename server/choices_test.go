package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// n = 3 on /v1/completions: greedy choices equal model.Session's text;
// sampled choices are each the n = 1 request with the choice's seed;
// the stream reassembles to the same texts; usage counts the prompt once.
func TestCompletionChoices(t *testing.T) {
	ts := startServer(t, 4, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	ids := ts.m.Tokenizer.Encode(storyPrompt, true, true)
	const n = 40
	want, wantRes := sessionGreedy(t, ids, n)

	greedy := openai.CompletionNewParams{
		Model:       modelName,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens:   openai.Int(n),
		Temperature: openai.Float(0),
		N:           openai.Int(3),
	}
	resp, err := c.Completions.New(ctx, greedy)
	require.NoError(t, err)
	require.Len(t, resp.Choices, 3)
	for i, ch := range resp.Choices {
		assert.Equal(t, int64(i), ch.Index)
		assert.Equal(t, want, ch.Text, "choice %d", i)
		assert.Equal(t, string(wantRes.Finish), string(ch.FinishReason))
	}
	assert.Equal(t, int64(len(ids)), resp.Usage.PromptTokens, "the prompt counts once")
	assert.Equal(t, int64(3*len(wantRes.Tokens)), resp.Usage.CompletionTokens)
	assert.Equal(t, resp.Usage.PromptTokens+resp.Usage.CompletionTokens, resp.Usage.TotalTokens)
	// The prompt was evaluated once; the two other choices copied it and
	// evaluated only its last token.
	_, _, metrics := ts.get(t, "/metrics")
	assert.Contains(t, string(metrics), fmt.Sprintf("\nm40llm_prompt_tokens_total %d\n", len(ids)+2))

	// Sampled: choice i is the one-choice request with seed ChoiceSeed(seed, i).
	const seed = 1234
	sampled := openai.CompletionNewParams{
		Model:       modelName,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens:   openai.Int(30),
		Temperature: openai.Float(1),
		Seed:        openai.Int(seed),
		N:           openai.Int(3),
		BestOf:      openai.Int(3),
		Logprobs:    openai.Int(2),
	}
	resp, err = c.Completions.New(ctx, sampled)
	require.NoError(t, err)
	require.Len(t, resp.Choices, 3)
	texts := make([]string, 3)
	var generated int64
	for i, ch := range resp.Choices {
		require.Equal(t, int64(i), ch.Index)
		texts[i] = ch.Text
		assert.Equal(t, strings.Join(ch.Logprobs.Tokens, ""), ch.Text, "choice %d: its own logprobs", i)
		generated += int64(len(ch.Logprobs.Tokens))

		one := sampled
		one.N, one.BestOf, one.Seed = openai.Int(1), openai.Int(1), openai.Int(int64(sample.ChoiceSeed(seed, i)))
		alone, err := c.Completions.New(ctx, one)
		require.NoError(t, err)
		require.Len(t, alone.Choices, 1)
		assert.Equal(t, alone.Choices[0].Text, ch.Text, "choice %d = the request of its seed alone", i)
		assert.Equal(t, alone.Choices[0].FinishReason, ch.FinishReason)
		assert.Equal(t, alone.Choices[0].Logprobs.Tokens, ch.Logprobs.Tokens)
	}
	assert.Equal(t, generated, resp.Usage.CompletionTokens)
	assert.False(t, texts[0] == texts[1] && texts[1] == texts[2], "three seeds, one text: %q", texts[0])
	// The first choice keeps the request's seed: n = 1 samples as before.
	one := sampled
	one.N, one.BestOf = openai.Int(1), openai.Int(1)
	alone, err := c.Completions.New(ctx, one)
	require.NoError(t, err)
	assert.Equal(t, texts[0], alone.Choices[0].Text)

	// Streamed: chunks name their choice; each choice ends once; one usage
	// chunk at the end.
	sampled.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Completions.NewStreaming(ctx, sampled)
	got := make([]strings.Builder, 3)
	finishes := make([]int, 3)
	var usage openai.CompletionUsage
	var usageChunks int
	for stream.Next() {
		ch := stream.Current()
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
			usageChunks++
			assert.Empty(t, ch.Choices)
			continue
		}
		require.Zero(t, usageChunks, "a chunk after the usage chunk")
		require.Len(t, ch.Choices, 1)
		i := ch.Choices[0].Index
		require.True(t, i >= 0 && i < 3, "index %d", i)
		require.Zero(t, finishes[i], "text after choice %d's finish", i)
		got[i].WriteString(ch.Choices[0].Text)
		if ch.Choices[0].FinishReason != "" {
			finishes[i]++
			assert.Equal(t, resp.Choices[i].FinishReason, ch.Choices[0].FinishReason)
		}
	}
	require.NoError(t, stream.Err())
	for i := range 3 {
		assert.Equal(t, texts[i], got[i].String(), "streamed choice %d", i)
		assert.Equal(t, 1, finishes[i], "finish chunks of choice %d", i)
	}
	assert.Equal(t, 1, usageChunks)
	assert.Equal(t, int64(len(ids)), usage.PromptTokens)
	assert.Equal(t, generated, usage.CompletionTokens)
}

// n = 3 on /v1/chat/completions, whole and streamed.
func TestChatChoices(t *testing.T) {
	ts := startServer(t, 3, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	const n = 30
	msgs := []chat.Message{{Role: "user", Content: "Tell me about a cat."}}
	tmpl, err := ts.m.ChatTemplate()
	require.NoError(t, err)
	ids, _, err := ts.m.ChatTokens(ctx, tmpl, msgs, model.ChatOptions{AddGenerationPrompt: true})
	require.NoError(t, err)
	want, wantRes := sessionGreedy(t, ids, n)

	params := openai.ChatCompletionNewParams{
		Model:               modelName,
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(msgs[0].Content)},
		MaxCompletionTokens: openai.Int(n),
		Temperature:         openai.Float(0),
		N:                   openai.Int(3),
		Logprobs:            openai.Bool(true),
	}
	resp, err := c.Chat.Completions.New(ctx, params)
	require.NoError(t, err)
	require.Len(t, resp.Choices, 3)
	for i, ch := range resp.Choices {
		assert.Equal(t, int64(i), ch.Index)
		assert.Equal(t, want, ch.Message.Content, "choice %d", i)
		assert.Equal(t, string(wantRes.Finish), ch.FinishReason)
		assert.Len(t, ch.Logprobs.Content, len(wantRes.Tokens), "choice %d logprobs", i)
	}
	assert.Equal(t, int64(len(ids)), resp.Usage.PromptTokens)
	assert.Equal(t, int64(3*len(wantRes.Tokens)), resp.Usage.CompletionTokens)

	// Sampled and streamed = sampled whole.
	params.Temperature, params.Seed, params.Logprobs = openai.Float(1), openai.Int(99), openai.Bool(false)
	whole, err := c.Chat.Completions.New(ctx, params)
	require.NoError(t, err)
	require.Len(t, whole.Choices, 3)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	got := make([]strings.Builder, 3)
	roles, finishes := make([]int, 3), make([]int, 3)
	var usage openai.CompletionUsage
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			usage = ch.Usage
			continue
		}
		require.Len(t, ch.Choices, 1)
		i := ch.Choices[0].Index
		require.True(t, i >= 0 && i < 3, "index %d", i)
		d := ch.Choices[0].Delta
		if d.Role != "" {
			roles[i]++
		}
		got[i].WriteString(d.Content)
		if ch.Choices[0].FinishReason != "" {
			finishes[i]++
			assert.Equal(t, whole.Choices[i].FinishReason, ch.Choices[0].FinishReason)
		}
	}
	require.NoError(t, stream.Err())
	for i := range 3 {
		assert.Equal(t, whole.Choices[i].Message.Content, got[i].String(), "streamed choice %d", i)
		assert.Equal(t, 1, roles[i], "role chunks of choice %d", i)
		assert.Equal(t, 1, finishes[i], "finish chunks of choice %d", i)
	}
	assert.Equal(t, whole.Usage.CompletionTokens, usage.CompletionTokens)
	assert.Equal(t, int64(len(ids)), usage.PromptTokens)
}

// Each choice follows the grammar with its own matcher; with a grammar
// of two sentences and eight seeds both come up.
func TestChoicesWithGrammar(t *testing.T) {
	ts := startServer(t, 8, 256, Options{})
	resp, err := ts.client().Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:       modelName,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Yes or no?")},
		Temperature: openai.Float(2),
		Seed:        openai.Int(5),
		N:           openai.Int(8),
	}, option.WithJSONSet("grammar", `root ::= ("yes" | "no") " " [a-z]+ "."`))
	require.NoError(t, err)
	require.Len(t, resp.Choices, 8)
	seen := map[string]int{}
	for i, ch := range resp.Choices {
		assert.Equal(t, "stop", ch.FinishReason, "choice %d", i)
		word, rest, ok := strings.Cut(ch.Message.Content, " ")
		require.True(t, ok, "choice %d: %q", i, ch.Message.Content)
		assert.Contains(t, []string{"yes", "no"}, word, "choice %d", i)
		assert.Regexp(t, `^[a-z]+\.$`, rest, "choice %d", i)
		seen[word]++
	}
	assert.Len(t, seen, 2, "eight seeds, one answer: %v", seen)
}

// The errors of n and best_of, through the SDK.
func TestChoicesErrors(t *testing.T) {
	ts := startServer(t, 2, 256, Options{})
	c := ts.client()
	ctx := context.Background()
	prompt := openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)}
	for _, tt := range []struct {
		name   string
		params openai.CompletionNewParams
		param  string
		msg    string
	}{
		{"n 9", openai.CompletionNewParams{Model: modelName, Prompt: prompt, N: openai.Int(9)}, "n", "[1, 8]"},
		{"n over the slots", openai.CompletionNewParams{Model: modelName, Prompt: prompt, N: openai.Int(3)}, "n", "the server runs 2 (--parallel)"},
		{"best_of not n", openai.CompletionNewParams{Model: modelName, Prompt: prompt, N: openai.Int(2), BestOf: openai.Int(4)}, "best_of", "best_of must equal n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Completions.New(ctx, tt.params)
			var apiErr *openai.Error
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
			assert.Equal(t, TypeInvalidRequest, apiErr.Type)
			assert.Equal(t, tt.param, apiErr.Param)
			assert.Contains(t, apiErr.Message, tt.msg)
		})
	}
	// n = 0: the SDK leaves out a zero it was given, so send it raw.
	_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: modelName, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	}, option.WithJSONSet("n", 0))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	assert.Equal(t, "n", apiErr.Param)
}

// A client that leaves ends every choice's job.
func TestChoicesCancel(t *testing.T) {
	ts := startServer(t, 3, 512, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := ts.client().Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model: modelName, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens: openai.Int(400), N: openai.Int(3),
	}, option.WithJSONSet("ignore_eos", true))
	require.True(t, stream.Next(), "first chunk: %v", stream.Err())
	_, sched, err := ts.srv.target()
	require.NoError(t, err)
	assert.Equal(t, 3, sched.count(), "three jobs in flight")
	cancel()
	stream.Close()
	waitIdle(t, ts.srv)
}

// The choices count one request in flight each: n that do not all fit
// under the bound get 503 server_busy, and nothing of them runs.
func TestChoicesBusy(t *testing.T) {
	ts := startServer(t, 3, 512, Options{Queue: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := ts.client().Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model: modelName, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens: openai.Int(400),
	}, option.WithJSONSet("ignore_eos", true))
	require.True(t, stream.Next(), "first chunk: %v", stream.Err())

	status, hdr, body := ts.post(t, "/v1/completions", `{"prompt":"x","n":3}`)
	assert.Equal(t, http.StatusServiceUnavailable, status, "%s", body)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	assert.Equal(t, CodeServerBusy, deref(decodeError(t, body).Code))
	_, sched, err := ts.srv.target()
	require.NoError(t, err)
	assert.Equal(t, 1, sched.count(), "only the stream is in flight")

	status, _, body = ts.post(t, "/v1/completions", `{"prompt":"x","n":2,"max_tokens":2}`)
	assert.Equal(t, http.StatusOK, status, "%s", body)
	cancel()
	stream.Close()
	waitIdle(t, ts.srv)
}
