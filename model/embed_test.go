package model_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
)

// f32KV keeps the cache in float32 for the embedding tests: with binary16
// rows, a key computed in another batch shape (a different float32 sum
// order) can round to a neighbouring half, which moves unit-norm
// components by up to ~1e-4 and would hide a wrong row under a loose
// bound.
func f32KV(o model.Options) model.Options {
	o.CacheTypeK, o.CacheTypeV = model.CacheF32, model.CacheF32
	return o
}

// engineOver starts an engine over m with one session per slot.
func engineOver(t *testing.T, m *model.Model, chunk int) *model.Engine {
	t.Helper()
	opts := model.EngineOptions{BatcherOptions: model.BatcherOptions{PrefillChunk: chunk}}
	for i := range m.Slots() {
		s, err := m.NewSession(i)
		require.NoError(t, err)
		opts.Sessions = append(opts.Sessions, s)
	}
	e := model.NewEngine(m, opts)
	t.Cleanup(e.Close)
	return e
}

// embedPrompt is a prompt of n tokens of stories260K's vocabulary (BOS,
// then ids spread over the vocabulary).
func embedPrompt(n int) []int32 {
	p := []int32{1}
	for i := 1; i < n; i++ {
		p = append(p, int32(3+(i*37)%500))
	}
	return p
}

// hiddenRowByRow evaluates ids one token per forward pass in slot 0 of a
// fresh model and returns each position's hidden state after the final
// norm: the oracle the pooled embeddings are checked against.
func hiddenRowByRow(t *testing.T, ids []int32) [][]float32 {
	t.Helper()
	m := loadCPU(t, fixture.BundledModel(t), f32KV(model.Options{CtxSize: 256}))
	dim := m.Config.Dim
	out := make([][]float32, len(ids))
	for i, id := range ids {
		h := make([]float32, dim)
		b := &model.Batch{Tokens: []int32{id}, Pos: []int32{int32(i)}, Slot: []int32{0}}
		require.NoError(t, m.ForwardHidden(b, []int32{0}, h))
		out[i] = h
	}
	return out
}

// poolByHand pools rows as llama.cpp defines its poolings (mean of
// all rows, the first, the last) and divides by the Euclidean norm,
// written here independently of the model package's pooler.
func poolByHand(rows [][]float32, p model.Pooling) []float32 {
	dim := len(rows[0])
	v := make([]float64, dim)
	switch p {
	case model.PoolingMean:
		for _, r := range rows {
			for i, x := range r {
				v[i] += float64(x) / float64(len(rows))
			}
		}
	case model.PoolingCLS:
		for i, x := range rows[0] {
			v[i] = float64(x)
		}
	case model.PoolingLast:
		for i, x := range rows[len(rows)-1] {
			v[i] = float64(x)
		}
	}
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	out := make([]float32, dim)
	for i, x := range v {
		out[i] = float32(x / math.Sqrt(ss))
	}
	return out
}

func norm(v []float32) float64 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	return math.Sqrt(ss)
}

// embedTol bounds the difference of two embeddings of the same prompt
// computed with different batch shapes: float32 sums in another order
// (attention over chunks, rows of a wider matrix product) move unit-norm
// components of stories260K by up to 2.1e-7 (float32 KV cache); 1e-6
// leaves room and still catches a wrong row (components differ by ~1e-2
// between positions).
const embedTol = 1e-6

// TestForwardHiddenIsClassifierInput: the hidden state ForwardHidden
// returns is what the classifier multiplies: output.weight (read from the
// file, multiplied here in float64) times it gives Forward's logits.
func TestForwardHiddenIsClassifierInput(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 64})
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer f.Close()
	ti, ok := f.Tensor("output.weight")
	if !ok {
		ti, ok = f.Tensor("token_embd.weight")
	}
	require.True(t, ok)
	w, err := f.Float32s(ti)
	require.NoError(t, err)

	ids := embedPrompt(12)
	n, dim, vocab := len(ids), m.Config.Dim, m.Config.VocabSize
	b := &model.Batch{Tokens: ids, Pos: make([]int32, n), Slot: make([]int32, n)}
	rows := make([]int32, n)
	for i := range n {
		b.Pos[i], rows[i] = int32(i), int32(i)
	}
	hidden := make([]float32, n*dim)
	require.NoError(t, m.ForwardHidden(b, rows, hidden))
	logits := make([]float32, n*vocab)
	require.NoError(t, m.Forward(b, rows, logits)) // same positions again: the cache is rewritten with equal values
	for r := range n {
		h := hidden[r*dim : (r+1)*dim]
		for tok := range vocab {
			var s float64
			for i := range dim {
				s += float64(w[tok*dim+i]) * float64(h[i])
			}
			require.InDelta(t, s, logits[r*vocab+tok], 1e-4*(1+math.Abs(s)), "row %d token %d", r, tok)
		}
	}
}

// TestEmbedPooling: for each pooling, the engine's embedding (a prompt
// split into prefill chunks of 7, batched with a generation) and
// Session.Embed's (chunks of BatchSize 8, and one chunk) equal the pooled
// row-by-row hidden states, and are unit-norm.
func TestEmbedPooling(t *testing.T) {
	ids := embedPrompt(40)
	rows := hiddenRowByRow(t, ids)
	ctx := context.Background()

	eng := loadCPU(t, fixture.BundledModel(t), f32KV(model.Options{CtxSize: 256, Slots: 3, BatchSize: 16}))
	e := engineOver(t, eng, 7)
	chunked := loadCPU(t, fixture.BundledModel(t), f32KV(model.Options{CtxSize: 256, BatchSize: 8}))
	whole := loadCPU(t, fixture.BundledModel(t), f32KV(model.Options{CtxSize: 256, BatchSize: 64}))
	sc, err := chunked.NewSession(0)
	require.NoError(t, err)
	sw, err := whole.NewSession(0)
	require.NoError(t, err)

	for _, p := range []model.Pooling{model.PoolingMean, model.PoolingCLS, model.PoolingLast} {
		t.Run(p.String(), func(t *testing.T) {
			want := poolByHand(rows, p)
			// A generation runs in the same steps.
			gen, err := e.Submit(ctx, &model.Request{Prompt: ids[:5], Options: model.GenerateOptions{MaxTokens: 20, Sampling: model.Greedy()}})
			require.NoError(t, err)
			job, err := e.Submit(ctx, &model.Request{Prompt: ids, Embed: &model.EmbedOptions{Pooling: p}})
			require.NoError(t, err)
			text, res, err := job.Wait(ctx)
			require.NoError(t, err)
			assert.Empty(t, text)
			assert.Empty(t, res.Tokens)
			assert.Equal(t, len(ids), res.PromptTokens)
			_, gres, err := gen.Wait(ctx)
			require.NoError(t, err)
			assert.Len(t, gres.Tokens, 20)

			got := map[string][]float32{"engine": res.Embedding}
			got["session, chunks of 8"], err = sc.Embed(ctx, ids, model.EmbedOptions{Pooling: p})
			require.NoError(t, err)
			got["session, one chunk"], err = sw.Embed(ctx, ids, model.EmbedOptions{Pooling: p})
			require.NoError(t, err)
			for name, v := range got {
				require.Len(t, v, len(want), name)
				assert.InDelta(t, 1, norm(v), 1e-6, name)
				var worst float64
				for i := range want {
					require.InDelta(t, want[i], v[i], embedTol, "%s: component %d", name, i)
					worst = max(worst, math.Abs(float64(want[i]-v[i])))
				}
				t.Logf("%s: largest difference from the row-by-row oracle %.2g", name, worst)
			}
		})
	}
}

// TestEmbedLastChunkedBesideGeneration: a last-token embedding whose first
// chunks pool no row, on a fresh engine (no hidden-state buffer yet), with a
// generation's rows in the same steps: the step reads no hidden states for
// those chunks, and the embedding is still the oracle's.
func TestEmbedLastChunkedBesideGeneration(t *testing.T) {
	ids := embedPrompt(40)
	want := poolByHand(hiddenRowByRow(t, ids), model.PoolingLast)
	ctx := context.Background()
	m := loadCPU(t, fixture.BundledModel(t), f32KV(model.Options{CtxSize: 256, Slots: 3, BatchSize: 16}))
	e := engineOver(t, m, 7)
	gen, err := e.Submit(ctx, &model.Request{Prompt: ids[:5], Options: model.GenerateOptions{MaxTokens: 20, Sampling: model.Greedy()}})
	require.NoError(t, err)
	job, err := e.Submit(ctx, &model.Request{Prompt: ids, Embed: &model.EmbedOptions{Pooling: model.PoolingLast}})
	require.NoError(t, err)
	_, res, err := job.Wait(ctx)
	require.NoError(t, err)
	_, _, err = gen.Wait(ctx)
	require.NoError(t, err)
	require.Len(t, res.Embedding, len(want))
	for i := range want {
		require.InDelta(t, want[i], res.Embedding[i], embedTol, "component %d", i)
	}
}

// TestEmbedLastReusesPrefix: a last-token embedding of a prompt whose
// prefix is cached evaluates only the rest and still equals the oracle; a
// mean embedding after it re-evaluates everything.
func TestEmbedLastReusesPrefix(t *testing.T) {
	ids := embedPrompt(20)
	rows := hiddenRowByRow(t, ids)
	m := loadCPU(t, fixture.BundledModel(t), f32KV(model.Options{CtxSize: 64}))
	s, err := m.NewSession(0)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = s.Eval(ctx, ids[:15])
	require.NoError(t, err)
	e := model.NewEngine(m, model.EngineOptions{}) // requests bring their session
	defer e.Close()
	for _, p := range []model.Pooling{model.PoolingLast, model.PoolingMean} {
		job, err := e.Submit(ctx, &model.Request{Prompt: ids, Session: s, Embed: &model.EmbedOptions{Pooling: p}})
		require.NoError(t, err)
		_, res, err := job.Wait(ctx)
		require.NoError(t, err)
		if p == model.PoolingLast {
			assert.Equal(t, 15, res.CachedTokens)
		} else {
			assert.Equal(t, 0, res.CachedTokens)
		}
		want := poolByHand(rows, p)
		for i := range want {
			require.InDelta(t, want[i], res.Embedding[i], embedTol, "%s component %d", p, i)
		}
		assert.Equal(t, ids, s.Tokens())
	}
}

// TestEmbedErrors: poolings that make no vector, empty and oversized
// inputs, and bad tokens are refused before anything runs.
func TestEmbedErrors(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 16})
	e := engineOver(t, m, 0)
	ctx := context.Background()
	s, err := m.NewSession(0) // used only while the engine is idle
	require.NoError(t, err)
	cases := []struct {
		name   string
		prompt []int32
		p      model.Pooling
		want   error
	}{
		{"model has none", []int32{1, 5}, model.PoolingUnset, model.ErrInvalidRequest},
		{"none", []int32{1, 5}, model.PoolingNone, model.ErrInvalidRequest},
		{"rank", []int32{1, 5}, model.PoolingRank, model.ErrInvalidRequest},
		{"empty", nil, model.PoolingMean, model.ErrInvalidRequest},
		{"too long", make([]int32, 17), model.PoolingMean, model.ErrContextFull},
		{"bad token", []int32{1, 512}, model.PoolingMean, model.ErrInvalidToken},
	}
	for _, c := range cases {
		_, err := e.Submit(ctx, &model.Request{Prompt: c.prompt, Embed: &model.EmbedOptions{Pooling: c.p}})
		assert.ErrorIs(t, err, c.want, "engine: %s", c.name)
		_, err = s.Embed(ctx, c.prompt, model.EmbedOptions{Pooling: c.p})
		assert.Error(t, err, "session: %s", c.name)
		if c.name != "bad token" { // the forward pass refuses it, without the sentinel
			assert.ErrorIs(t, err, c.want, "session: %s", c.name)
		}
	}
	// A prompt that fills the whole context is fine for an embedding.
	full := embedPrompt(16)
	job, err := e.Submit(ctx, &model.Request{Prompt: full, Embed: &model.EmbedOptions{Pooling: model.PoolingLast}})
	require.NoError(t, err)
	_, res, err := job.Wait(ctx)
	require.NoError(t, err)
	assert.Len(t, res.Embedding, m.Config.Dim)
}

// TestPoolingConfig: `{arch}.pooling_type` as llama.cpp numbers it, and
// the names.
func TestPoolingConfig(t *testing.T) {
	for v, want := range []model.Pooling{model.PoolingNone, model.PoolingMean, model.PoolingCLS, model.PoolingLast, model.PoolingRank} {
		f, err := gguf.Open(fixture.BundledModel(t))
		require.NoError(t, err)
		require.NoError(t, f.Metadata.SetAny("llama.pooling_type", uint32(v)))
		c, err := model.ConfigFromGGUF(&f.Metadata)
		require.NoError(t, err)
		assert.Equal(t, want, c.Pooling, "pooling_type %d", v)
		p, err := model.ParsePooling(want.String())
		require.NoError(t, err)
		assert.Equal(t, want, p)
		f.Close()
	}
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer f.Close()
	c, err := model.ConfigFromGGUF(&f.Metadata)
	require.NoError(t, err)
	assert.Equal(t, model.PoolingUnset, c.Pooling, "no key")
	require.NoError(t, f.Metadata.SetAny("llama.pooling_type", uint32(5)))
	_, err = model.ConfigFromGGUF(&f.Metadata)
	var ce *model.ConfigError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "llama.pooling_type", ce.Key)
	require.NoError(t, f.Metadata.SetAny("llama.pooling_type", "mean"))
	_, err = model.ConfigFromGGUF(&f.Metadata)
	require.ErrorAs(t, err, &ce)

	_, err = model.ParsePooling("max")
	var ue *model.UnsupportedError
	require.ErrorAs(t, err, &ue)
	p, err := model.ParsePooling("")
	require.NoError(t, err)
	assert.Equal(t, model.PoolingUnset, p)
	assert.Equal(t, "pooling(9)", model.Pooling(9).String())
}

// TestEmbedCancelled: an embedding whose context is done ends with its
// error.
func TestEmbedCancelled(t *testing.T) {
	m := loadCPU(t, fixture.BundledModel(t), model.Options{CtxSize: 64})
	s, err := m.NewSession(0)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Embed(ctx, embedPrompt(10), model.EmbedOptions{Pooling: model.PoolingMean})
	assert.True(t, errors.Is(err, context.Canceled), fmt.Sprint(err))
}

// TestEmbedSubmitAllEvaluatesAll: embeddings submitted together with
// generations of the same prompt (on the CPU backend, which copies slots)
// do not share its evaluation, neither as the first request nor after it:
// each embedding still equals the pooled row-by-row hidden states, and
// every request evaluates the whole prompt.
func TestEmbedSubmitAllEvaluatesAll(t *testing.T) {
	ids := embedPrompt(30)
	rows := hiddenRowByRow(t, ids)
	ctx := context.Background()
	gen := model.GenerateOptions{MaxTokens: 4, IgnoreEOS: true, Sampling: model.Greedy()}
	for _, c := range []struct {
		name  string
		pools []model.Pooling // PoolingNone: a generation
	}{
		{"generation first", []model.Pooling{model.PoolingNone, model.PoolingMean, model.PoolingCLS, model.PoolingMean}},
		{"embedding first", []model.Pooling{model.PoolingMean, model.PoolingNone, model.PoolingCLS, model.PoolingNone}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := loadCPU(t, fixture.BundledModel(t), f32KV(model.Options{CtxSize: 64, Slots: len(c.pools)}))
			require.True(t, m.CanCopySlots())
			counter := &promptCounter{}
			eo := model.EngineOptions{BatcherOptions: model.BatcherOptions{PrefillChunk: 7}, Observer: counter}
			for i := range m.Slots() {
				s, err := m.NewSession(i)
				require.NoError(t, err)
				eo.Sessions = append(eo.Sessions, s)
			}
			e := model.NewEngine(m, eo)
			defer e.Close()
			reqs := make([]*model.Request, len(c.pools))
			for i, p := range c.pools {
				reqs[i] = &model.Request{Prompt: ids, Options: gen}
				if p != model.PoolingNone {
					reqs[i].Embed = &model.EmbedOptions{Pooling: p}
				}
			}
			jobs, err := e.SubmitAll(ctx, reqs)
			require.NoError(t, err)
			for i, j := range jobs {
				_, res, err := wait(t, j)
				require.NoError(t, err, "request %d", i)
				if c.pools[i] == model.PoolingNone {
					assert.Len(t, res.Tokens, 4, "request %d", i)
					continue
				}
				want := poolByHand(rows, c.pools[i])
				require.Len(t, res.Embedding, len(want), "request %d", i)
				for k := range want {
					require.InDelta(t, want[k], res.Embedding[k], embedTol, "request %d (%s): component %d", i, c.pools[i], k)
				}
			}
			// Only generations after a generation first may share the
			// prompt, and neither case has one: nothing is shared. The
			// engine reports a step after the jobs it ended have their
			// results: Close waits for that.
			e.Close()
			assert.EqualValues(t, len(c.pools)*len(ids), counter.prompt.Load(), "prompt tokens evaluated")
		})
	}
}
