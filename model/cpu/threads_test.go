package cpu

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/stretchr/testify/require"
)

// TestThreadsBitIdentical checks that the number of threads never changes
// a result: the logits of a 20-token prompt (products with n ≥ 4 take the
// four-row kernels) and of three decode steps after it (n = 1, the
// activation row split among workers) are the same bits for 1, 2, 3 and 7
// threads (above GOMAXPROCS on small machines: the workers park instead of
// polling; with 7 threads and 4 KV heads decode attention is split by query
// head), also with the activation quantizer's ranges cut to two blocks. Types: Q4_0 and Q4_K_M (integer kernels), F16 (float path).
func TestThreadsBitIdentical(t *testing.T) {
	cases := []struct {
		name string
		opts synth.Options
	}{
		{"Q4_0", synth.Options{Type: gguf.TypeQ4_0, Seed: 3}},
		{"Q4_K_M", synth.Options{Mix: synth.MixQ4_K_M, Seed: 3}},
		{"F16", synth.Options{Type: gguf.TypeF16, Seed: 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := synth.Presets["tinyllama"]
			p.Layers, p.Dim, p.Heads, p.KVHeads, p.FFN, p.Vocab = 2, 512, 8, 4, 1024, 1000
			path := filepath.Join(t.TempDir(), "m.gguf")
			f, err := os.Create(path)
			require.NoError(t, err)
			require.NoError(t, synth.Write(f, p, c.opts))
			require.NoError(t, f.Close())
			defer func(g int) { quantGrain = g }(quantGrain)
			var ref []uint32
			for _, threads := range []int{1, 2, 3, 7, -2, -7} {
				// Negative: |threads| with the activation rows split
				// into ranges of two blocks.
				quantGrain = 1 << 12
				if threads < 0 {
					threads, quantGrain = -threads, 2*qblock
				}
				got := threadLogits(t, path, threads, p.Vocab)
				if ref == nil {
					ref = got
					continue
				}
				require.Equal(t, len(ref), len(got))
				for i := range ref {
					if ref[i] != got[i] {
						t.Fatalf("threads %d: logit %d is %v, %v with 1 thread", threads, i,
							math.Float32frombits(got[i]), math.Float32frombits(ref[i]))
					}
				}
			}
		})
	}
}

// threadLogits returns the bits of the prompt's logits (every row) then of
// three decode steps.
func threadLogits(t *testing.T, path string, threads, vocab int) []uint32 {
	be := New(Options{Threads: threads})
	m, err := model.Load(path, be, model.Options{CtxSize: 64})
	require.NoError(t, err)
	defer m.Close()
	const n = 20
	b := &model.Batch{Tokens: make([]int32, n), Pos: make([]int32, n), Slot: make([]int32, n)}
	rows := make([]int32, n)
	for j := range n {
		b.Tokens[j] = int32((j*7919 + 13) % vocab)
		b.Pos[j], rows[j] = int32(j), int32(j)
	}
	logits := make([]float32, n*vocab)
	require.NoError(t, m.Forward(b, rows, logits))
	for step := range 3 {
		one := &model.Batch{Tokens: []int32{int32(step*31+5) % int32(vocab)}, Pos: []int32{int32(n + step)}, Slot: []int32{0}}
		out := make([]float32, vocab)
		require.NoError(t, m.Forward(one, []int32{0}, out))
		logits = append(logits, out...)
	}
	bits := make([]uint32, len(logits))
	for i, v := range logits {
		bits[i] = math.Float32bits(v)
	}
	return bits
}
