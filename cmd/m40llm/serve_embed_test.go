package main

import (
	"context"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServeEmbeddings: `serve --embeddings --pooling last` answers
// /v1/embeddings with the last-token embedding of Session.Embed (same
// backend, cache type and one chunk: equal within float32 rounding of the
// sums), which differs from the mean one.
func TestServeEmbeddings(t *testing.T) {
	const text = "Once upon a time"
	m, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{}), model.Options{CtxSize: 512})
	require.NoError(t, err)
	defer m.Close()
	s, err := m.NewSession(0)
	require.NoError(t, err)
	ids := m.Tokenizer.Encode(text, true, true)
	last, err := s.Embed(context.Background(), ids, model.EmbedOptions{Pooling: model.PoolingLast})
	require.NoError(t, err)
	mean, err := s.Embed(context.Background(), ids, model.EmbedOptions{Pooling: model.PoolingMean})
	require.NoError(t, err)

	url, stderr, exit := startServe(t, "--embeddings", "--pooling", "last", "-c", "512")
	c := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithMaxRetries(0))
	resp, err := c.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(text)}})
	require.NoError(t, err)
	got := resp.Data[0].Embedding
	require.Len(t, got, len(last))
	differs := false
	for i := range last {
		assert.InDelta(t, last[i], got[i], 1e-5, "component %d", i)
		differs = differs || abs(float64(mean[i])-got[i]) > 1e-3
	}
	assert.True(t, differs, "the mean embedding is another vector")
	stopServe(t, exit, stderr)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
