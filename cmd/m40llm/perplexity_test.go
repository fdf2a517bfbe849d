package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPerplexityMatchesLlamaCpp runs m40llm perplexity with the settings
// of each llama-perplexity run recorded in testdata (program, commit and
// command there) and requires the PPL to agree within a tenth of
// llama.cpp's reported standard error (observed: 0.008 of ±5.2), and the
// error itself to within 1%.
func TestPerplexityMatchesLlamaCpp(t *testing.T) {
	data, err := os.ReadFile("testdata/perplexity.llamacpp.json")
	require.NoError(t, err)
	var golden struct {
		Runs []struct {
			Ctx, Chunks int
			TypeK       string `json:"type_k"`
			TypeV       string `json:"type_v"`
			PPL, Err    float64
		}
	}
	require.NoError(t, json.Unmarshal(data, &golden))
	require.NotEmpty(t, golden.Runs)
	final := regexp.MustCompile(`Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)`)
	for _, r := range golden.Runs {
		t.Run(fmt.Sprintf("ctk=%s,ctv=%s,c=%d,chunks=%d", r.TypeK, r.TypeV, r.Ctx, r.Chunks), func(t *testing.T) {
			out, errs, code := runCLI(t, "", "perplexity", "-m", fixture.BundledModel(t), "-f", fixture.Shared(t, "text/war-and-peace.txt"),
				"-c", strconv.Itoa(r.Ctx), "--chunks", strconv.Itoa(r.Chunks), "-ctk", r.TypeK, "-ctv", r.TypeV, "--backend", "cpu")
			require.Equal(t, 0, code, errs)
			assert.Contains(t, out, fmt.Sprintf("[%d]", r.Chunks))
			assert.Contains(t, errs, "tokens/s")
			m := final.FindStringSubmatch(out)
			require.NotNil(t, m, out)
			ppl, _ := strconv.ParseFloat(m[1], 64)
			se, _ := strconv.ParseFloat(m[2], 64)
			assert.InDelta(t, r.PPL, ppl, r.Err/10)
			assert.InDelta(t, r.Err, se, r.Err/100)
			assert.False(t, math.IsNaN(ppl))
		})
	}
}

func TestPerplexityErrors(t *testing.T) {
	out, errs, code := runCLI(t, "", "perplexity", "-m", fixture.BundledModel(t), "--backend", "cpu")
	assert.Equal(t, 2, code, errs)
	assert.Empty(t, out)
	assert.Contains(t, errs, "no text")
}
