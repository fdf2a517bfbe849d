package cpu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQuantizedActivationsLogits measures what quantizing the activations
// costs a whole model: the logits of synthetic 2-layer models (the shape
// model/cuda tests with) through the integer kernels against the float
// path (each weight row dequantized, float activations), as the worst row
// NMSE = Σ(a−b)²/Σa² over a 24-token prompt. The bound is test-backend-ops'
// 5e-4 for matrix products.
func TestQuantizedActivationsLogits(t *testing.T) {
	cases := []struct {
		name string
		opts synth.Options
	}{
		{"Q4_0", synth.Options{Type: gguf.TypeQ4_0, Seed: 5}},
		{"Q8_0", synth.Options{Type: gguf.TypeQ8_0, Seed: 5}},
		{"Q6_K", synth.Options{Type: gguf.TypeQ6_K, Seed: 5}},
		{"Q4_K_M", synth.Options{Mix: synth.MixQ4_K_M, Seed: 5}},
		{"Q4_1", synth.Options{Type: gguf.TypeQ4_1, Seed: 5}},
		{"Q5_0", synth.Options{Type: gguf.TypeQ5_0, Seed: 5}},
		{"Q5_1", synth.Options{Type: gguf.TypeQ5_1, Seed: 5}},
		{"IQ4_NL", synth.Options{Type: gguf.TypeIQ4_NL, Seed: 5}},
		{"Q2_K", synth.Options{Type: gguf.TypeQ2_K, Seed: 5}},
		{"Q3_K_M", synth.Options{Mix: synth.MixQ3_K_M, Seed: 5}},
		{"Q5_K_M", synth.Options{Mix: synth.MixQ5_K_M, Seed: 5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := synth.Presets["tinyllama"]
			p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Vocab = 2, 256, 8, 4, 512, 1000
			path := filepath.Join(t.TempDir(), "m.gguf")
			f, err := os.Create(path)
			require.NoError(t, err)
			require.NoError(t, synth.Write(f, p, c.opts))
			require.NoError(t, f.Close())
			var logits [2][]float32
			for i, floatProducts := range []bool{false, true} {
				be := New(Options{Threads: 2, FloatActivations: floatProducts})
				m, err := model.Load(path, be, model.Options{CtxSize: 64})
				require.NoError(t, err)
				const n = 24
				b := &model.Batch{Tokens: make([]int32, n), Pos: make([]int32, n), Slot: make([]int32, n)}
				rows := make([]int32, n)
				for j := range n {
					b.Tokens[j] = int32((j*7919 + 13) % p.Vocab)
					b.Pos[j], rows[j] = int32(j), int32(j)
				}
				logits[i] = make([]float32, n*p.Vocab)
				require.NoError(t, m.Forward(b, rows, logits[i]))
				require.NoError(t, m.Close())
			}
			worst := 0.0
			for r := range len(logits[0]) / p.Vocab {
				var num, den float64
				for j := r * p.Vocab; j < (r+1)*p.Vocab; j++ {
					d := float64(logits[0][j]) - float64(logits[1][j])
					num += d * d
					den += float64(logits[1][j]) * float64(logits[1][j])
				}
				worst = max(worst, num/den)
			}
			t.Logf("worst row NMSE %.3g", worst)
			assert.LessOrEqual(t, worst, 5e-4)
		})
	}
}
