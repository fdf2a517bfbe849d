package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEmbedCommand: `m40llm embed` prints, for each line of its text, the
// vector Session.Embed computes (same backend and cache type, one chunk:
// equal within float32 rounding), in /v1/embeddings' JSON, with the
// usage of every line's tokens.
func TestEmbedCommand(t *testing.T) {
	lines := []string{"Once upon a time", "Lily liked the park."}
	m, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{}), model.Options{CtxSize: 256})
	require.NoError(t, err)
	defer m.Close()
	s, err := m.NewSession(0)
	require.NoError(t, err)

	file := filepath.Join(t.TempDir(), "in.txt")
	require.NoError(t, os.WriteFile(file, []byte(lines[0]+"\n\n"+lines[1]+"\n"), 0o644))
	for _, pooling := range []model.Pooling{model.PoolingMean, model.PoolingLast} {
		out, errs, code := runCLI(t, "", "embed", "-m", fixture.BundledModel(t), "--backend", "cpu", "-c", "256", "-f", file, "--pooling", pooling.String())
		require.Equal(t, 0, code, errs)
		var resp struct {
			Object string `json:"object"`
			Model  string `json:"model"`
			Data   []struct {
				Index     int       `json:"index"`
				Embedding []float32 `json:"embedding"`
			} `json:"data"`
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &resp), out)
		assert.Equal(t, "list", resp.Object)
		assert.Equal(t, "stories260K", resp.Model)
		require.Len(t, resp.Data, len(lines), "one vector per non-empty line")
		tokens := 0
		for i, line := range lines {
			ids := m.Tokenizer.Encode(line, true, true)
			tokens += len(ids)
			want, err := s.Embed(context.Background(), ids, model.EmbedOptions{Pooling: pooling})
			require.NoError(t, err)
			assert.Equal(t, i, resp.Data[i].Index)
			require.Len(t, resp.Data[i].Embedding, len(want))
			for j := range want {
				assert.InDelta(t, want[j], resp.Data[i].Embedding[j], 1e-6, "%s line %d component %d", pooling, i, j)
			}
		}
		assert.Equal(t, tokens, resp.Usage.PromptTokens)
	}

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"embed", "-m", fixture.BundledModel(t), "--pooling", "rank", "-p", "x"}, "--pooling \"rank\""},
		{[]string{"embed", "-m", fixture.BundledModel(t), "-p", "\n\n"}, "no text to embed"},
		{[]string{"embed", "-m", fixture.BundledModel(t), "-p", "x", "extra"}, "no arguments"},
	} {
		_, errs, code := runCLI(t, "", c.args...)
		assert.Equal(t, 2, code, errs)
		assert.Contains(t, errs, c.msg)
	}
	_, errs, code := runCLI(t, "", "embed", "-m", fixture.BundledModel(t), "--backend", "cpu", "-c", "4", "-p", "Once upon a time there was")
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errs, "raise --ctx-size")
}
