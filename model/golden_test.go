package model_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// storiesExpected is the part of stories260K.expected.json the tests use.
type storiesExpected struct {
	GreedyFromBOS struct {
		Text         string  `json:"text"`
		GeneratedIDs []int32 `json:"generated_ids"`
	} `json:"greedy_from_bos_200_steps"`
	Logits struct {
		InputIDs []int32       `json:"input_ids"`
		Full     [][]float32   `json:"full_logits_positions_0_to_3"`
		Top5     [][][]float64 `json:"top5_per_position"`
	} `json:"logits"`
	GreedyWithPrompt []struct {
		Prompt       string  `json:"prompt"`
		PromptIDs    []int32 `json:"prompt_ids_with_bos"`
		GeneratedIDs []int32 `json:"generated_ids"`
		Output       string  `json:"output_text_including_prompt"`
	} `json:"greedy_with_prompt"`
}

func loadJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, v))
}

func loadCPU(t testing.TB, path string, opts model.Options) *model.Model {
	t.Helper()
	m, err := model.Load(path, cpu.New(cpu.Options{}), opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// promptLogits runs ids as one batch in slot 0 and returns every row's logits.
func promptLogits(t testing.TB, m *model.Model, ids []int32) [][]float32 {
	t.Helper()
	n := len(ids)
	b := &model.Batch{Tokens: ids, Pos: make([]int32, n), Slot: make([]int32, n)}
	rows := make([]int32, n)
	for i := range n {
		b.Pos[i], rows[i] = int32(i), int32(i)
	}
	vocab := m.Config.VocabSize
	out := make([]float32, n*vocab)
	require.NoError(t, m.Forward(b, rows, out))
	res := make([][]float32, n)
	for i := range n {
		res[i] = out[i*vocab : (i+1)*vocab]
	}
	return res
}

func TestStories260KLogits(t *testing.T) {
	var exp storiesExpected
	loadJSON(t, fixture.Shared(t, "models/stories260K.expected.json"), &exp)
	for _, file := range []string{fixture.BundledModel(t), fixture.Shared(t, "models/tinyllamas-stories-260k-f32.gguf")} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			m := loadCPU(t, file, model.Options{CtxSize: 64, CacheTypeK: model.CacheF32, CacheTypeV: model.CacheF32}) // llama2.c keeps FP32 K/V
			logits := promptLogits(t, m, exp.Logits.InputIDs)
			for pos, want := range exp.Logits.Full {
				assertClose(t, want, logits[pos], 1e-4)
			}
			for pos, top := range exp.Logits.Top5 {
				for _, e := range top {
					assert.InDelta(t, e[1], logits[pos][int(e[0])], 1e-4, "pos %d id %v", pos, e[0])
				}
				assert.Equal(t, int(top[0][0]), argmax(logits[pos]), "argmax at %d", pos)
			}
		})
	}
}

func assertClose(t *testing.T, want, got []float32, tol float64) {
	t.Helper()
	require.Len(t, got, len(want))
	worst, at := 0.0, 0
	for i := range want {
		d := math.Abs(float64(want[i] - got[i]))
		if math.IsNaN(float64(got[i])) {
			d = math.Inf(1)
		}
		if d > worst {
			worst, at = d, i
		}
	}
	assert.LessOrEqual(t, worst, tol, "max |diff| at %d: want %v got %v", at, want[at], got[at])
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

func TestTinyRandomLlamaLogits(t *testing.T) {
	var exp struct {
		InputIDs  []int32 `json:"input_ids"`
		Positions []struct {
			Pos     int          `json:"pos"`
			Argmax  int          `json:"argmax"`
			Top10   [][2]float64 `json:"top10"`
			First16 []float32    `json:"first16"`
			Mean    float64      `json:"mean"`
			Std     float64      `json:"std"`
		} `json:"positions"`
	}
	loadJSON(t, fixture.Shared(t, "models/llama-2-tiny-random.expected.json"), &exp)
	m := loadCPU(t, fixture.Shared(t, "models/llama-2-tiny-random.gguf"), model.Options{CtxSize: 16})
	logits := promptLogits(t, m, exp.InputIDs)
	require.NotEmpty(t, exp.Positions)
	for _, p := range exp.Positions {
		got := logits[p.Pos]
		assertClose(t, p.First16, got[:16], 1e-3)
		for _, e := range p.Top10 {
			assert.InDelta(t, e[1], got[int(e[0])], 1e-3, "pos %d id %v", p.Pos, e[0])
		}
		assert.Equal(t, p.Argmax, argmax(got), "argmax at %d", p.Pos)
		var sum float64
		for _, v := range got {
			sum += float64(v)
		}
		assert.InDelta(t, p.Mean, sum/float64(len(got)), 1e-4)
	}
}
