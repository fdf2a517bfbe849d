package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ollama/ollama/api"
	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
)

// embedTol bounds the difference between a server's embedding and the
// direct pooled pass: the server's KV cache is binary16 (the default),
// the oracle's float32, and the server evaluates inputs in other batch
// shapes (prefill chunks, next to other inputs). Largest difference seen:
// 1.5e-4 on unit-norm components (model/embed_test.go measures 2e-7 with
// a float32 cache on both sides); a wrong row or pooling moves them by
// ~1e-2.
const embedTol = 5e-4

// directEmbedding is the oracle: the input evaluated in one forward pass
// of a fresh model (float32 cache), every row's hidden state after the
// final norm read back (Model.ForwardHidden), mean-pooled and normalized
// here.
func directEmbedding(t *testing.T, ids []int32) []float64 {
	return directPooled(t, ids, model.PoolingMean)
}

// directPooled is directEmbedding with mean or last pooling.
func directPooled(t *testing.T, ids []int32, p model.Pooling) []float64 {
	t.Helper()
	m, err := model.Load(fixture.BundledModel(t), cpu.New(cpu.Options{Threads: 2}),
		model.Options{CtxSize: 256, CacheTypeK: model.CacheF32, CacheTypeV: model.CacheF32})
	require.NoError(t, err)
	defer m.Close()
	n, dim := len(ids), m.Config.Dim
	b := &model.Batch{Tokens: ids, Pos: make([]int32, n), Slot: make([]int32, n)}
	rows := make([]int32, n)
	for i := range n {
		b.Pos[i], rows[i] = int32(i), int32(i)
	}
	h := make([]float32, n*dim)
	require.NoError(t, m.ForwardHidden(b, rows, h))
	v := make([]float64, dim)
	for r := range n {
		if p == model.PoolingLast && r != n-1 {
			continue
		}
		for i := range dim {
			v[i] += float64(h[r*dim+i])
		}
	}
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	for i := range v {
		v[i] /= math.Sqrt(ss)
	}
	return v
}

func assertUnit(t *testing.T, v []float64, name string) {
	t.Helper()
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	assert.InDelta(t, 1, math.Sqrt(ss), 1e-5, "%s: norm", name)
}

func assertClose(t *testing.T, want, got []float64, name string) {
	t.Helper()
	require.Len(t, got, len(want), name)
	var worst float64
	for i := range want {
		require.InDelta(t, want[i], got[i], embedTol, "%s: component %d", name, i)
		worst = max(worst, math.Abs(want[i]-got[i]))
	}
	t.Logf("%s: largest difference %.2g", name, worst)
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

var embedTexts = []string{"Once upon a time", "The cat sat on the mat and looked at the bird.", "Lily"}

// TestEmbeddingsOpenAI drives /v1/embeddings with the openai-go SDK on a
// server with --embeddings: each vector equals the direct pooled pass and
// is unit-norm, base64 decodes to the same floats, a batch of inputs
// equals them one by one, token ids equal the text, usage (and the
// access log) counts the tokens.
func TestEmbeddingsOpenAI(t *testing.T) {
	var logs logBuffer
	ts := startServer(t, 2, 128, Options{Embeddings: true, PrefillChunk: 8, AccessLog: true, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	c := ts.client()
	ctx := context.Background()
	tok := ts.m.Tokenizer

	var single [][]float64
	total := 0
	for _, text := range embedTexts {
		ids := tok.Encode(text, true, true)
		total += len(ids)
		want := directEmbedding(t, ids)
		resp, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: modelName,
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(text)}, Dimensions: openai.Int(64), User: openai.String("u")})
		require.NoError(t, err)
		require.Len(t, resp.Data, 1)
		got := resp.Data[0].Embedding
		assertClose(t, want, got, text)
		assertUnit(t, got, text)
		assert.Equal(t, int64(len(ids)), resp.Usage.PromptTokens)
		assert.Equal(t, int64(len(ids)), resp.Usage.TotalTokens)
		assert.Equal(t, modelName, resp.Model)
		single = append(single, got)

		// base64: little-endian float32, decoded here.
		b64, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: modelName,
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(text)}, EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64})
		require.NoError(t, err)
		var s string
		require.NoError(t, json.Unmarshal([]byte(b64.Data[0].JSON.Embedding.Raw()), &s))
		raw, err := base64.StdEncoding.DecodeString(s)
		require.NoError(t, err)
		require.Len(t, raw, 4*len(got))
		dec := make([]float64, len(got))
		for i := range dec {
			dec[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
		}
		assertClose(t, got, dec, text+" (base64)")

		// Token ids.
		ids64 := make([]int64, len(ids))
		for i, id := range ids {
			ids64[i] = int64(id)
		}
		byIDs, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: modelName,
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfTokens: ids64}})
		require.NoError(t, err)
		assertClose(t, got, byIDs.Data[0].Embedding, text+" (ids)")
	}

	batch, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: modelName,
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: embedTexts}})
	require.NoError(t, err)
	require.Len(t, batch.Data, len(embedTexts))
	for i, d := range batch.Data {
		assert.Equal(t, int64(i), d.Index)
		assertClose(t, single[i], d.Embedding, "batch "+embedTexts[i])
	}
	assert.Equal(t, int64(total), batch.Usage.PromptTokens)
	rec := logs.lastRecord(t, 3*len(embedTexts)+1)
	assert.Equal(t, float64(total), rec["prompt_tokens"], "access log")
	assert.Equal(t, 0.0, rec["completion_tokens"], "access log")

	var arrays [][]int64
	for _, text := range embedTexts {
		var a []int64
		for _, id := range tok.Encode(text, true, true) {
			a = append(a, int64(id))
		}
		arrays = append(arrays, a)
	}
	byArrays, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: modelName,
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfTokenArrays: arrays}})
	require.NoError(t, err)
	for i, d := range byArrays.Data {
		assertClose(t, single[i], d.Embedding, "token arrays "+embedTexts[i])
	}
}

// TestEmbeddingsErrors: 400s in OpenAI's shape, each naming its field.
func TestEmbeddingsErrors(t *testing.T) {
	ts := startServer(t, 1, 32, Options{Embeddings: true})
	many := make([]string, MaxEmbeddingInputs+1)
	for i := range many {
		many[i] = "a"
	}
	long := make([]int, 33)
	for i := range long {
		long[i] = 5
	}
	cases := []struct {
		name, param, code string
		body              any
	}{
		{"no input", "input", CodeInvalidValue, `{"model":"stories260K"}`},
		{"empty string", "input", CodeInvalidValue, `{"input":""}`},
		{"empty array", "input", CodeInvalidValue, `{"input":[]}`},
		{"empty item", "input", CodeInvalidValue, `{"input":["a",""]}`},
		{"object", "input", CodeInvalidValue, `{"input":{"a":1}}`},
		{"too many", "input", CodeInvalidValue, map[string]any{"input": many}},
		{"too long", "input", CodeContextLengthExceeded, map[string]any{"input": long}},
		{"bad token", "input", CodeInvalidValue, `{"input":[1, 512]}`},
		{"dimensions", "dimensions", CodeUnsupported, `{"input":"a","dimensions":32}`},
		{"format", "encoding_format", CodeInvalidValue, `{"input":"a","encoding_format":"int8"}`},
		{"unknown field", "", CodeUnknownParameter, `{"input":"a","truncate":true}`},
		{"other model", "model", CodeModelNotFound, `{"input":"a","model":"gpt"}`},
	}
	for _, c := range cases {
		status, _, body := ts.post(t, "/v1/embeddings", c.body)
		want := http.StatusBadRequest
		if c.code == CodeModelNotFound {
			want = http.StatusNotFound
		}
		require.Equal(t, want, status, "%s: %s", c.name, body)
		e := decodeError(t, body)
		assert.Equal(t, c.code, deref(e.Code), "%s: %s", c.name, body)
		if c.param != "" {
			assert.Equal(t, c.param, deref(e.Param), c.name)
		}
	}
	status, _, body := ts.post(t, "/v1/embeddings", map[string]any{"input": long[:32]})
	assert.Equal(t, http.StatusOK, status, "an input of the whole context: %s", body)
}

// TestEmbeddingsDisabled: a model without a pooling type and no
// --embeddings answers 400 on every embedding route, saying how to enable
// it.
func TestEmbeddingsDisabled(t *testing.T) {
	ts, oc := startOllama(t, 1, 64, Options{})
	status, _, body := ts.post(t, "/v1/embeddings", `{"input":"a"}`)
	require.Equal(t, http.StatusBadRequest, status)
	e := decodeError(t, body)
	assert.Contains(t, e.Message, "--embeddings")
	assert.Equal(t, "model", deref(e.Param))
	_, err := oc.Embed(context.Background(), &api.EmbedRequest{Model: modelName, Input: "a"})
	se := statusError(t, err)
	assert.Equal(t, http.StatusBadRequest, se.StatusCode)
	assert.Contains(t, se.ErrorMessage, "--embeddings")
	_, err = oc.Embeddings(context.Background(), &api.EmbeddingRequest{Model: modelName, Prompt: "a"})
	assert.Equal(t, http.StatusBadRequest, statusError(t, err).StatusCode)
}

// withPooling writes a copy of the bundled model whose metadata declares
// llama.pooling_type v and returns its path.
func withPooling(t *testing.T, v uint32) string {
	t.Helper()
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Metadata.SetAny("llama.pooling_type", v))
	specs := make([]gguf.TensorSpec, len(f.Tensors))
	for i, ti := range f.Tensors {
		specs[i] = gguf.TensorSpec{Name: ti.Name, Type: ti.Type, Dims: ti.Dims}
	}
	path := filepath.Join(t.TempDir(), "pooled.gguf")
	o, err := os.Create(path)
	require.NoError(t, err)
	w, err := gguf.NewWriter(o, &f.Metadata, specs)
	require.NoError(t, err)
	for i := range f.Tensors {
		data, err := f.TensorData(&f.Tensors[i])
		require.NoError(t, err)
		require.NoError(t, w.WriteTensor(f.Tensors[i].Name, data))
	}
	require.NoError(t, w.Close())
	require.NoError(t, o.Close())
	return path
}

// TestEmbeddingsFromPoolingType: a model whose file declares last pooling
// serves embeddings without Options.Embeddings, pooled by its last token
// (the direct pass's last row), and Options.Pooling overrides it.
func TestEmbeddingsFromPoolingType(t *testing.T) {
	path := withPooling(t, 3)
	ctx := context.Background()
	for _, c := range []struct {
		override model.Pooling
		want     model.Pooling
	}{{model.PoolingUnset, model.PoolingLast}, {model.PoolingMean, model.PoolingMean}} {
		m, err := model.Load(path, cpu.New(cpu.Options{Threads: 2}), model.Options{CtxSize: 64})
		require.NoError(t, err)
		require.Equal(t, model.PoolingLast, m.Config.Pooling)
		ts := serve(t, m, Options{Pooling: c.override})
		text := embedTexts[1]
		ids := m.Tokenizer.Encode(text, true, true)
		resp, err := ts.client().Embeddings.New(ctx, openai.EmbeddingNewParams{
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(text)}})
		require.NoError(t, err)
		want := directPooled(t, ids, c.want)
		assertClose(t, want, resp.Data[0].Embedding, c.want.String())
		require.NoError(t, ts.srv.Close())
		require.NoError(t, m.Close())
	}
}

// TestEmbeddingPooling: which models serve embeddings, with which
// pooling.
func TestEmbeddingPooling(t *testing.T) {
	cases := []struct {
		enable         bool
		override, file model.Pooling
		on             bool
		want           model.Pooling
	}{
		{false, model.PoolingUnset, model.PoolingUnset, false, model.PoolingMean},
		{true, model.PoolingUnset, model.PoolingUnset, true, model.PoolingMean},
		{false, model.PoolingUnset, model.PoolingLast, true, model.PoolingLast},
		{false, model.PoolingCLS, model.PoolingLast, true, model.PoolingCLS},
		{true, model.PoolingUnset, model.PoolingRank, true, model.PoolingMean},
		{false, model.PoolingUnset, model.PoolingNone, false, model.PoolingMean},
		{true, model.PoolingLast, model.PoolingNone, true, model.PoolingLast},
	}
	for _, c := range cases {
		on, p := embeddingPooling(c.enable, c.override, c.file)
		assert.Equal(t, c.on, on, "%+v", c)
		assert.Equal(t, c.want, p, "%+v", c)
	}
}

// TestEmbeddingsOllama drives /api/embed and /api/embeddings with
// ollama's api client: the vectors equal the OpenAI route's, dimensions
// shortens and normalizes again, truncate cuts a long input, refuses it
// when false.
func TestEmbeddingsOllama(t *testing.T) {
	ts, oc := startOllama(t, 2, 64, Options{Embeddings: true})
	ctx := context.Background()
	tok := ts.m.Tokenizer
	resp, err := oc.Embed(ctx, &api.EmbedRequest{Model: modelName, Input: embedTexts, KeepAlive: &api.Duration{Duration: -1},
		Options: map[string]any{"num_ctx": 64}})
	require.NoError(t, err)
	require.Len(t, resp.Embeddings, len(embedTexts))
	total := 0
	for i, text := range embedTexts {
		ids := tok.Encode(text, true, true)
		total += len(ids)
		want := directEmbedding(t, ids)
		got := f64s(resp.Embeddings[i])
		assertClose(t, want, got, text)
		assertUnit(t, got, text)

		legacy, err := oc.Embeddings(ctx, &api.EmbeddingRequest{Model: modelName, Prompt: text})
		require.NoError(t, err)
		assertClose(t, want, legacy.Embedding, text+" (legacy)")
	}
	assert.Equal(t, total, resp.PromptEvalCount)
	assert.Equal(t, modelName, resp.Model)

	short, err := oc.Embed(ctx, &api.EmbedRequest{Model: modelName, Input: embedTexts[0], Dimensions: 16})
	require.NoError(t, err)
	require.Len(t, short.Embeddings[0], 16)
	assertUnit(t, f64s(short.Embeddings[0]), "dimensions 16")
	full := f64s(resp.Embeddings[0])
	var ss float64
	for _, x := range full[:16] {
		ss += x * x
	}
	for i, x := range short.Embeddings[0] {
		assert.InDelta(t, full[i]/math.Sqrt(ss), float64(x), 1e-4, "dimensions 16, component %d", i)
	}

	// A text of more than num_ctx tokens.
	long := ""
	for range 40 {
		long += "the cat "
	}
	ids := tok.Encode(long, true, true)
	require.Greater(t, len(ids), 32)
	cut, err := oc.Embed(ctx, &api.EmbedRequest{Model: modelName, Input: long, Options: map[string]any{"num_ctx": 32}})
	require.NoError(t, err)
	assertClose(t, directEmbedding(t, ids[:32]), f64s(cut.Embeddings[0]), "truncated")
	assert.Equal(t, 32, cut.PromptEvalCount)
	no := false
	_, err = oc.Embed(ctx, &api.EmbedRequest{Model: modelName, Input: long, Truncate: &no, Options: map[string]any{"num_ctx": 32}})
	se := statusError(t, err)
	assert.Equal(t, http.StatusBadRequest, se.StatusCode)
	assert.Contains(t, se.ErrorMessage, "input[0]")
	_, err = oc.Embed(ctx, &api.EmbedRequest{Model: modelName, Input: []any{"a", 3}})
	assert.Equal(t, http.StatusBadRequest, statusError(t, err).StatusCode)
	_, err = oc.Embed(ctx, &api.EmbedRequest{Model: modelName, Input: "a", Options: map[string]any{"num_ctx": "x"}})
	assert.Equal(t, http.StatusBadRequest, statusError(t, err).StatusCode)
	for _, in := range []any{nil, "", []string{}} {
		none, err := oc.Embed(ctx, &api.EmbedRequest{Model: modelName, Input: in})
		require.NoError(t, err, "%#v", in)
		assert.Empty(t, none.Embeddings, "%#v", in)
	}
	empty, err := oc.Embeddings(ctx, &api.EmbeddingRequest{Model: modelName})
	require.NoError(t, err)
	assert.Empty(t, empty.Embedding)
	show, err := oc.Show(ctx, &api.ShowRequest{Model: modelName})
	require.NoError(t, err)
	assert.Equal(t, []string{"completion", "embedding"}, capabilities(show))
}
