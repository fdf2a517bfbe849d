package server

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refLogSoftmax evaluates prompt and then gen one token at a time with
// model.Forward on a model of its own (the CPU backend) and returns, for
// each token of gen, the float64 log-softmax of the logits it was sampled
// from.
func refLogSoftmax(t *testing.T, prompt, gen []int32) [][]float64 {
	t.Helper()
	m, _ := loadModel(t, 1, 512)
	defer m.Close()
	vocab := m.Config.VocabSize
	b := &model.Batch{}
	for i, id := range prompt {
		b.Tokens, b.Pos, b.Slot = append(b.Tokens, id), append(b.Pos, int32(i)), append(b.Slot, 0)
	}
	var out [][]float64
	for i := range gen {
		l := make([]float32, vocab)
		require.NoError(t, m.Forward(b, []int32{int32(b.Len() - 1)}, l))
		top := math.Inf(-1)
		for _, v := range l {
			top = math.Max(top, float64(v))
		}
		var z float64
		for _, v := range l {
			z += math.Exp(float64(v) - top)
		}
		row := make([]float64, vocab)
		for id, v := range l {
			row[id] = float64(v) - top - math.Log(z)
		}
		out = append(out, row)
		b.Tokens, b.Pos, b.Slot = []int32{gen[i]}, []int32{int32(len(prompt) + i)}, []int32{0}
	}
	return out
}

// rank returns the token ids of row by descending log-probability (ties:
// lower id first).
func rank(row []float64) []int32 {
	ids := make([]int32, len(row))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortStableFunc(ids, func(a, b int32) int {
		switch {
		case row[a] > row[b]:
			return -1
		case row[a] < row[b]:
			return 1
		}
		return 0
	})
	return ids
}

func TestChatLogprobs(t *testing.T) {
	ts := startServer(t, 2, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	tok := ts.m.Tokenizer
	const n, top = 16, 5
	msgs := []chat.Message{{Role: "user", Content: "Tell me about a cat."}}
	tmpl, err := ts.m.ChatTemplate()
	require.NoError(t, err)
	prompt, _, err := ts.m.ChatTokens(ctx, tmpl, msgs, model.ChatOptions{AddGenerationPrompt: true})
	require.NoError(t, err)
	_, greedy := sessionGreedy(t, prompt, n)
	ref := refLogSoftmax(t, prompt, greedy.Tokens)

	params := openai.ChatCompletionNewParams{
		Model:               modelName,
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(msgs[0].Content)},
		MaxCompletionTokens: openai.Int(n),
		Temperature:         openai.Float(0),
		Logprobs:            openai.Bool(true),
		TopLogprobs:         openai.Int(top),
	}
	resp, err := c.Chat.Completions.New(ctx, params)
	require.NoError(t, err)
	content := resp.Choices[0].Logprobs.Content
	require.Len(t, content, len(greedy.Tokens))
	var text strings.Builder
	for i, e := range content {
		id := greedy.Tokens[i]
		assert.Equal(t, tok.TokenBytes(id), e.Token, "token %d", i)
		assert.Equal(t, len(tok.TokenBytes(id)), len(e.Bytes))
		assert.InDelta(t, ref[i][id], e.Logprob, 1e-9, "token %d", i)
		require.Len(t, e.TopLogprobs, top)
		want := rank(ref[i])[:top]
		var mass float64
		for k, tp := range e.TopLogprobs {
			assert.Equal(t, tok.TokenBytes(want[k]), tp.Token, "token %d rank %d", i, k)
			assert.InDelta(t, ref[i][want[k]], tp.Logprob, 1e-9)
			if k > 0 {
				assert.GreaterOrEqual(t, e.TopLogprobs[k-1].Logprob, tp.Logprob, "sorted most likely first")
			}
			mass += math.Exp(tp.Logprob)
		}
		assert.LessOrEqual(t, mass, 1.0)
		assert.Equal(t, e.Token, e.TopLogprobs[0].Token, "greedy: the chosen token is the most likely")
		text.WriteString(e.Token)
	}
	assert.Equal(t, resp.Choices[0].Message.Content, text.String())

	// Streamed, the chunks carry the same entries, each its own tokens. A
	// server of its own, so that the prompt is evaluated in one pass again
	// (a cached prefix changes the logits in the last bits).
	stream := startServer(t, 1, 512, Options{}).client().Chat.Completions.NewStreaming(ctx, params)
	var streamed []openai.ChatCompletionTokenLogprob
	var chunkText strings.Builder
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			continue
		}
		var fromTokens strings.Builder
		for _, e := range ch.Choices[0].Logprobs.Content {
			fromTokens.WriteString(e.Token)
		}
		if ch.Choices[0].Delta.Content != "" {
			// Text and tokens line up chunk by chunk (no UTF-8 split or
			// stop string here).
			assert.Equal(t, ch.Choices[0].Delta.Content, fromTokens.String())
		}
		chunkText.WriteString(ch.Choices[0].Delta.Content)
		streamed = append(streamed, ch.Choices[0].Logprobs.Content...)
	}
	require.NoError(t, stream.Err())
	assert.Equal(t, resp.Choices[0].Message.Content, chunkText.String())
	require.Len(t, streamed, len(content))
	for i := range content {
		assert.Equal(t, content[i].Token, streamed[i].Token)
		assert.Equal(t, content[i].Logprob, streamed[i].Logprob)
		assert.Equal(t, content[i].TopLogprobs, streamed[i].TopLogprobs)
	}

	t.Run("without logprobs they are null", func(t *testing.T) {
		status, _, body := ts.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"max_tokens":2}`)
		require.Equal(t, http.StatusOK, status, "%s", body)
		assert.Contains(t, string(body), `"logprobs":null`)
	})
}

func TestCompletionLogprobs(t *testing.T) {
	ts := startServer(t, 2, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	tok := ts.m.Tokenizer
	const n = 20
	prompt := tok.Encode(storyPrompt, true, true)
	_, greedy := sessionGreedy(t, prompt, n)
	ref := refLogSoftmax(t, prompt, greedy.Tokens)

	params := openai.CompletionNewParams{
		Model:       modelName,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
		MaxTokens:   openai.Int(n),
		Temperature: openai.Float(0),
		Logprobs:    openai.Int(3),
	}
	resp, err := c.Completions.New(ctx, params)
	require.NoError(t, err)
	lp := resp.Choices[0].Logprobs
	require.Len(t, lp.Tokens, n)
	require.Len(t, lp.TokenLogprobs, n)
	require.Len(t, lp.TopLogprobs, n)
	require.Len(t, lp.TextOffset, n)
	offset := 0
	for i, id := range greedy.Tokens {
		assert.Equal(t, tok.TokenBytes(id), lp.Tokens[i])
		assert.InDelta(t, ref[i][id], lp.TokenLogprobs[i], 1e-9, "token %d", i)
		want := rank(ref[i])[:3]
		require.Len(t, lp.TopLogprobs[i], 3, "greedy: the chosen token is among the top 3")
		var mass float64
		for _, w := range want {
			v, ok := lp.TopLogprobs[i][tok.TokenBytes(w)]
			require.True(t, ok, "token %d: %q missing from %v", i, tok.TokenBytes(w), lp.TopLogprobs[i])
			assert.InDelta(t, ref[i][w], v, 1e-9)
			mass += math.Exp(v)
		}
		assert.LessOrEqual(t, mass, 1.0)
		assert.Equal(t, lp.TokenLogprobs[i], lp.TopLogprobs[i][lp.Tokens[i]])
		assert.Equal(t, int64(offset), lp.TextOffset[i], "token %d", i)
		offset += utf8.RuneCountInString(lp.Tokens[i])
	}
	assert.Equal(t, resp.Choices[0].Text, strings.Join(lp.Tokens, ""))

	stream := startServer(t, 1, 512, Options{}).client().Completions.NewStreaming(ctx, params)
	var tokens []string
	var logprobs []float64
	var offsets []int64
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			continue
		}
		l := ch.Choices[0].Logprobs
		tokens = append(tokens, l.Tokens...)
		logprobs = append(logprobs, l.TokenLogprobs...)
		offsets = append(offsets, l.TextOffset...)
	}
	require.NoError(t, stream.Err())
	assert.Equal(t, lp.Tokens, tokens)
	assert.Equal(t, lp.TokenLogprobs, logprobs)
	assert.Equal(t, lp.TextOffset, offsets, "offsets continue across chunks")

	t.Run("sampled tokens outside the top are listed too", func(t *testing.T) {
		outside := 0
		for seed := range int64(4) {
			p := params
			p.Temperature, p.Seed, p.Logprobs = openai.Float(1.5), openai.Int(seed), openai.Int(1)
			resp, err := c.Completions.New(ctx, p)
			require.NoError(t, err)
			l := resp.Choices[0].Logprobs
			for i := range l.Tokens {
				v, ok := l.TopLogprobs[i][l.Tokens[i]]
				require.True(t, ok)
				assert.Equal(t, l.TokenLogprobs[i], v)
				assert.LessOrEqual(t, len(l.TopLogprobs[i]), 2)
				if len(l.TopLogprobs[i]) == 2 {
					outside++
				}
			}
		}
		assert.Positive(t, outside, "at temperature 1.5 some sampled token is not the most likely")
	})
	t.Run("logprobs 0 lists the chosen token only", func(t *testing.T) {
		p := params
		p.Logprobs, p.MaxTokens = openai.Int(0), openai.Int(3)
		resp, err := c.Completions.New(ctx, p)
		require.NoError(t, err)
		for i, m := range resp.Choices[0].Logprobs.TopLogprobs {
			assert.Len(t, m, 1)
			assert.Contains(t, m, resp.Choices[0].Logprobs.Tokens[i])
		}
	})
}

func TestLogitBias(t *testing.T) {
	ts := startServer(t, 2, 512, Options{})
	c := ts.client()
	ctx := context.Background()
	tok := ts.m.Tokenizer
	prompt := tok.Encode(storyPrompt, true, true)
	_, greedy := sessionGreedy(t, prompt, 1)
	first := greedy.Tokens[0]
	second := rank(refLogSoftmax(t, prompt, greedy.Tokens)[0])[1]

	complete := func(bias map[string]int64, maxTokens int64) *openai.Completion {
		t.Helper()
		resp, err := c.Completions.New(ctx, openai.CompletionNewParams{
			Model:       modelName,
			Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(storyPrompt)},
			MaxTokens:   openai.Int(maxTokens),
			Temperature: openai.Float(0),
			Logprobs:    openai.Int(0),
			LogitBias:   bias,
		})
		require.NoError(t, err)
		return resp
	}
	plain := complete(nil, 6)
	require.Equal(t, tok.TokenBytes(first), plain.Choices[0].Logprobs.Tokens[0])

	forbidden := complete(map[string]int64{fmt.Sprint(first): -100}, 6)
	assert.NotContains(t, forbidden.Choices[0].Logprobs.Tokens, tok.TokenBytes(first))
	assert.Equal(t, tok.TokenBytes(second), forbidden.Choices[0].Logprobs.Tokens[0], "the runner-up takes its place")

	dragon := tok.Encode(" dragon", false, false)[0]
	forced := complete(map[string]int64{fmt.Sprint(dragon): 100}, 4)
	assert.Equal(t, strings.Repeat(tok.TokenBytes(dragon), 4), forced.Choices[0].Text)

	t.Run("chat, sampled at the default temperature", func(t *testing.T) {
		resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:               modelName,
			Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story.")},
			MaxCompletionTokens: openai.Int(3),
			Seed:                openai.Int(1),
			LogitBias:           map[string]int64{fmt.Sprint(dragon): 100},
		})
		require.NoError(t, err)
		assert.Equal(t, strings.Repeat(tok.TokenBytes(dragon), 3), resp.Choices[0].Message.Content)
	})

	for _, tt := range []struct {
		name, bias, msg string
	}{
		{"outside the vocabulary", `{"512":1}`, "vocabulary"},
		{"negative id", `{"-1":1}`, "negative"},
		{"not an id", `{"dragon":1}`, "token ids"},
		{"bias above 100", `{"1":100.5}`, "[-100, 100]"},
		{"not a number", `{"1":"x"}`, "logit_bias"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":1,"logit_bias":`+tt.bias+`}`)
			require.Equal(t, http.StatusBadRequest, status, "%s", body)
			e := decodeError(t, body)
			assert.Equal(t, "logit_bias", deref(e.Param))
			assert.Contains(t, e.Message, tt.msg)
		})
	}
}
