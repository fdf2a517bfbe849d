package cuda_test

import (
	"context"
	"math"
	"testing"

	"github.com/m40llm/m40llm/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tolEmbed bounds the NMSE of a GPU embedding against the CPU's: the
// pooled hidden states go through the same products and attention as the
// logits, so whole-model logits' bound applies (pooling and the norm are
// done on the host in float64 from the read-back rows).
const tolEmbed = tolModel

// hiddenAll returns the hidden state after the final norm of every
// position of ids, run as one batch in slot 0.
func hiddenAll(t *testing.T, m *model.Model, ids []int32) []float32 {
	t.Helper()
	n := len(ids)
	b := &model.Batch{Tokens: ids, Pos: make([]int32, n), Slot: make([]int32, n)}
	rows := make([]int32, n)
	for i := range n {
		b.Pos[i], rows[i] = int32(i), int32(i)
	}
	out := make([]float32, n*m.Config.Dim)
	require.NoError(t, m.ForwardHidden(b, rows, out))
	return out
}

// TestEmbeddingGPU compares embeddings on the GPU with the CPU's: the
// hidden states of ForwardHidden (a batch of 5, the graph path, and of
// 40, the GEMM path), Session.Embed for mean, cls and last pooling, and
// an Engine embedding that runs in the same steps as a greedy generation
// (steps that read the generation's logits and the embedding's hidden
// rows), whose tokens must stay those the GPU chooses for it alone
// (stories260K; the random models' only their count).
func TestEmbeddingGPU(t *testing.T) {
	ctx := context.Background()
	for _, mc := range models {
		t.Run(mc.name, func(t *testing.T) {
			mo := model.Options{CtxSize: 64, Slots: 2}
			path := mc.path(t)
			mcpu := loadCPU(t, path, mo)
			mgpu := loadGPU(t, path, mo, options())
			dim := mcpu.Config.Dim
			for _, n := range []int{5, 40} {
				ids := promptIDs(mcpu, n)
				want, got := hiddenAll(t, mcpu, ids), hiddenAll(t, mgpu, ids)
				worst := 0.0
				for i := range n {
					worst = max(worst, nmse(want[i*dim:(i+1)*dim], got[i*dim:(i+1)*dim]))
				}
				assert.LessOrEqual(t, worst, tolEmbed, "hidden states, batch of %d: worst row NMSE", n)
				t.Logf("hidden states, batch of %d: worst row NMSE %.2g", n, worst)
			}

			ids := promptIDs(mcpu, 40)
			scpu, err := mcpu.NewSession(0)
			require.NoError(t, err)
			sgpu, err := mgpu.NewSession(0)
			require.NoError(t, err)
			want := map[model.Pooling][]float32{}
			for _, p := range []model.Pooling{model.PoolingMean, model.PoolingCLS, model.PoolingLast} {
				w, err := scpu.Embed(ctx, ids, model.EmbedOptions{Pooling: p})
				require.NoError(t, err)
				g, err := sgpu.Embed(ctx, ids, model.EmbedOptions{Pooling: p})
				require.NoError(t, err)
				e := nmse(w, g)
				assert.LessOrEqual(t, e, tolEmbed, "%s: Session.Embed NMSE", p)
				assert.InDelta(t, 1, norm32(g), 1e-5, "%s: norm", p)
				t.Logf("%s: Session.Embed NMSE %.2g", p, e)
				want[p] = w
			}

			// The engine: one generation and one embedding per pooling,
			// batched together.
			gen := func(m *model.Model) []int32 {
				s, err := m.NewSession(1)
				require.NoError(t, err)
				res, err := s.Generate(ctx, ids[:4], model.GenerateOptions{MaxTokens: 24, Sampling: model.Greedy(), IgnoreEOS: true}, nil)
				require.NoError(t, err)
				return res.Tokens
			}
			wantTokens := gen(mgpu) // alone, before the engine takes the slots
			eo := model.EngineOptions{BatcherOptions: model.BatcherOptions{PrefillChunk: 8}}
			for i := range mgpu.Slots() {
				s, err := mgpu.NewSession(i)
				require.NoError(t, err)
				eo.Sessions = append(eo.Sessions, s)
			}
			e := model.NewEngine(mgpu, eo)
			defer e.Close()
			for p, w := range want {
				gj, err := e.Submit(ctx, &model.Request{Prompt: ids[:4], Options: model.GenerateOptions{MaxTokens: 24, Sampling: model.Greedy(), IgnoreEOS: true}})
				require.NoError(t, err)
				ej, err := e.Submit(ctx, &model.Request{Prompt: ids, Embed: &model.EmbedOptions{Pooling: p}})
				require.NoError(t, err)
				_, eres, err := ej.Wait(ctx)
				require.NoError(t, err)
				_, gres, err := gj.Wait(ctx)
				require.NoError(t, err)
				en := nmse(w, eres.Embedding)
				assert.LessOrEqual(t, en, tolEmbed, "%s: engine NMSE", p)
				t.Logf("%s: engine NMSE %.2g", p, en)
				// Batched with prompt rows, the generation's rows go through
				// other kernels than alone (float sums in another order);
				// only the trained model's greedy choices are far enough
				// from ties to compare token by token.
				if mc.name == "stories260K" {
					assert.Equal(t, wantTokens, gres.Tokens, "%s: the generation next to the embedding", p)
				} else {
					assert.Len(t, gres.Tokens, len(wantTokens), "%s: the generation next to the embedding", p)
				}
			}
		})
	}
}

func norm32(v []float32) float64 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	return math.Sqrt(ss)
}
