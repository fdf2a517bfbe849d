package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// modelsDir is a models directory with the bundled model as each of
// names, served on a loopback port; loads counts the loads by name.
type modelsDir struct {
	*testServer
	dir   string
	size  int64 // of the bundled model
	loads sync.Map
}

func (d *modelsDir) loaded(name string) int64 {
	v, _ := d.loads.LoadOrStore(name, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (d *modelsDir) add(t *testing.T, name string, extra int) {
	t.Helper()
	data, err := os.ReadFile(fixture.BundledModel(t))
	require.NoError(t, err)
	data = append(data, make([]byte, extra)...)
	require.NoError(t, os.WriteFile(filepath.Join(d.dir, name+".gguf"), data, 0o644))
}

// addOther writes name.gguf: a model of the bundled model's shape and
// vocabulary with other (random) weights, so that a request served by
// the wrong model gives another text.
func (d *modelsDir) addOther(t *testing.T, name string) string {
	t.Helper()
	v, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer v.Close()
	p := synth.Preset{Name: "other", Arch: "llama", Dim: 64, Layers: 5, Heads: 8, KVHeads: 4, FFN: 172, Vocab: 512,
		Ctx: 512, RopeBase: 10000, NormEps: 1e-5}
	path := filepath.Join(d.dir, name+".gguf")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, synth.Write(f, p, synth.Options{Type: gguf.TypeF32, Vocab: &v.Metadata, Seed: 7, Workers: 1}))
	require.NoError(t, f.Close())
	return path
}

// greedyOn returns n greedy tokens' text after prompt on the model file
// path, through a model.Session of its own.
func greedyOn(t *testing.T, path, prompt string, n int) string {
	t.Helper()
	m, err := model.Load(path, cpu.New(cpu.Options{Threads: 1}), model.Options{Slots: 1, CtxSize: 256})
	require.NoError(t, err)
	defer m.Close()
	s, err := m.NewSession(0)
	require.NoError(t, err)
	var out strings.Builder
	_, err = s.Generate(context.Background(), m.Tokenizer.Encode(prompt, true, true),
		model.GenerateOptions{MaxTokens: n, Sampling: model.Greedy()}, func(text string) error {
			out.WriteString(text)
			return nil
		})
	require.NoError(t, err)
	return out.String()
}

func startModelsDir(t *testing.T, opts Options, names ...string) *modelsDir {
	t.Helper()
	d := &modelsDir{dir: t.TempDir()}
	st, err := os.Stat(fixture.BundledModel(t))
	require.NoError(t, err)
	d.size = st.Size()
	for _, n := range names {
		d.add(t, n, 0)
	}
	opts.ModelsDir = d.dir
	opts.APIKey = testKey
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.LoadModel = func(path string) (*model.Model, error) {
		v, _ := d.loads.LoadOrStore(filepath.Base(path[:len(path)-len(".gguf")]), new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		return model.Load(path, cpu.New(cpu.Options{Threads: 1}), model.Options{Slots: 2, CtxSize: 256})
	}
	srv := New(opts)
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config = srv.HTTPServer()
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	d.testServer = &testServer{srv: srv, ts: ts}
	return d
}

// complete asks name for n greedy tokens after prompt and returns the
// status and the text (or the error body).
func (d *modelsDir) complete(t *testing.T, name, prompt string, n int) (int, string) {
	t.Helper()
	code, _, body := d.post(t, "/v1/completions", map[string]any{"model": name, "prompt": prompt, "max_tokens": n, "temperature": 0})
	if code != http.StatusOK {
		return code, string(body)
	}
	var resp CompletionResponse
	require.NoError(t, json.Unmarshal(body, &resp))
	require.Len(t, resp.Choices, 1)
	assert.Equal(t, name, resp.Model)
	return code, resp.Choices[0].Text
}

func (d *modelsDir) listed(t *testing.T) (openai, ollama []string) {
	t.Helper()
	code, _, body := d.get(t, "/v1/models")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var ml ModelList
	require.NoError(t, json.Unmarshal(body, &ml))
	for _, m := range ml.Data {
		openai = append(openai, m.ID)
	}
	code, _, body = d.get(t, "/api/tags")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var tags OllamaListResponse
	require.NoError(t, json.Unmarshal(body, &tags))
	for _, m := range tags.Models {
		ollama = append(ollama, m.Name)
	}
	return openai, ollama
}

func (d *modelsDir) running(t *testing.T) []string {
	t.Helper()
	code, _, body := d.get(t, "/api/ps")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var ps OllamaPSResponse
	require.NoError(t, json.Unmarshal(body, &ps))
	names := []string{}
	for _, m := range ps.Models {
		names = append(names, m.Name)
		assert.False(t, m.ExpiresAt.IsZero(), "%s: an idle model of the directory has an expiry", m.Name)
	}
	sort.Strings(names)
	return names
}

func TestModelsDirectory(t *testing.T) {
	// Room for two copies of the bundled model, not three.
	var d *modelsDir
	size := func() int64 {
		st, err := os.Stat(fixture.BundledModel(t))
		require.NoError(t, err)
		return st.Size()
	}()
	d = startModelsDir(t, Options{MaxModels: 3, MemoryLimit: 2*size + size/2}, "alpha", "beta", "gamma")
	code, _, _ := d.get(t, "/health")
	assert.Equal(t, http.StatusOK, code, "a models directory serves before anything is loaded")

	openaiNames, ollamaNames := d.listed(t)
	assert.Equal(t, []string{"alpha", "beta", "gamma"}, openaiNames)
	assert.Equal(t, []string{"alpha:latest", "beta:latest", "gamma:latest"}, ollamaNames)
	assert.Equal(t, []string{}, d.running(t))

	// What each prompt gives on each model alone. beta has other weights
	// than alpha and gamma (the bundled model), so a request answered by
	// the wrong model, or with another model's KV cache, gives another text.
	other := d.addOther(t, "beta")
	prompts := []string{storyPrompt, "The little dog", "Lily and Tom went"}
	want := make([]string, len(prompts))
	wantBeta := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = greedyOn(t, fixture.BundledModel(t), p, 24)
		wantBeta[i] = greedyOn(t, other, p, 24)
		require.NotEqual(t, want[i], wantBeta[i], "the two models differ on prompt %d", i)
	}

	// Concurrent first requests for one model wait for one load; then
	// interleaved requests for two models each give their own model's text.
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, w := "alpha", want
			if i%2 == 1 {
				name, w = "beta", wantBeta
			}
			code, text := d.complete(t, name, prompts[i%3], 24)
			assert.Equal(t, http.StatusOK, code, text)
			assert.Equal(t, w[i%3], text, "%s, prompt %d", name, i%3)
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(1), d.loaded("alpha"))
	assert.Equal(t, int64(1), d.loaded("beta"))
	assert.Equal(t, []string{"alpha:latest", "beta:latest"}, d.running(t))

	// beta is the more recently used: a third model unloads alpha.
	code, text := d.complete(t, "beta", prompts[0], 4)
	require.Equal(t, http.StatusOK, code, text)
	code, text = d.complete(t, "gamma", prompts[1], 24)
	require.Equal(t, http.StatusOK, code, text)
	assert.Equal(t, want[1], text)
	assert.Equal(t, []string{"beta:latest", "gamma:latest"}, d.running(t))
	code, text = d.complete(t, "alpha", prompts[2], 24)
	require.Equal(t, http.StatusOK, code, text)
	assert.Equal(t, want[2], text)
	assert.Equal(t, int64(2), d.loaded("alpha"), "alpha was loaded again")
	assert.Equal(t, []string{"alpha:latest", "gamma:latest"}, d.running(t))

	// With both loaded models in use, a third has no room now: 503.
	p := d.srv.pool
	var held []*entry
	for _, name := range []string{"alpha", "gamma"} {
		f, ok := p.find(name, false)
		require.True(t, ok)
		e, err := p.acquire(context.Background(), f)
		require.NoError(t, err)
		held = append(held, e)
	}
	code, text = d.complete(t, "beta", prompts[0], 4)
	assert.Equal(t, http.StatusServiceUnavailable, code, text)
	code, _, body := d.post(t, "/v1/completions", map[string]any{"model": "beta", "prompt": "x", "max_tokens": 1})
	require.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, CodeInsufficientResources, deref(decodeError(t, body).Code))
	for _, e := range held {
		p.release(e, -1)
	}

	// A model that never fits: 507 model_too_large, in each API's shape.
	d.add(t, "huge", int(3*size))
	code, _, body = d.post(t, "/v1/chat/completions", map[string]any{"model": "huge", "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	require.Equal(t, http.StatusInsufficientStorage, code, "%s", body)
	e := decodeError(t, body)
	assert.Equal(t, CodeModelTooLarge, deref(e.Code))
	assert.Equal(t, TypeInsufficientResources, e.Type)
	assert.Contains(t, e.Message, `model "huge" cannot be loaded`)
	code, _, body = d.post(t, "/api/generate", map[string]any{"model": "huge", "prompt": "hi"})
	require.Equal(t, http.StatusInsufficientStorage, code, "%s", body)
	assert.Contains(t, ollamaError(t, body), `model "huge" cannot be loaded`)
	assert.Equal(t, int64(0), d.loaded("huge"))
	assert.Equal(t, []string{"alpha:latest", "gamma:latest"}, d.running(t), "nothing was unloaded for it")

	// The listing shows a file added later.
	openaiNames, ollamaNames = d.listed(t)
	assert.Equal(t, []string{"alpha", "beta", "gamma", "huge"}, openaiNames)
	assert.Contains(t, ollamaNames, "huge:latest")

	// Bad names: 404 in each API's shape.
	code, _, body = d.post(t, "/v1/completions", map[string]any{"model": "nope", "prompt": "x"})
	require.Equal(t, http.StatusNotFound, code)
	assert.Equal(t, CodeModelNotFound, deref(decodeError(t, body).Code))
	code, _, _ = d.get(t, "/v1/models/nope")
	assert.Equal(t, http.StatusNotFound, code)
	code, _, body = d.get(t, "/v1/models/beta")
	assert.Equal(t, http.StatusOK, code, "%s", body)
	code, _, body = d.post(t, "/api/chat", map[string]any{"model": "nope", "messages": []map[string]string{{"role": "user", "content": "x"}}})
	require.Equal(t, http.StatusNotFound, code)
	assert.Equal(t, "model 'nope' not found", ollamaError(t, body))
	code, _, body = d.post(t, "/v1/completions", map[string]any{"prompt": "x"})
	assert.Equal(t, http.StatusBadRequest, code, "no model with several: %s", body)

	// ollama's names and keep_alive: 0 unloads after the request, and a
	// load request with keep_alive 0 unloads at once.
	code, _, body = d.post(t, "/api/generate", map[string]any{"model": "GAMMA:latest", "prompt": storyPrompt, "stream": false,
		"keep_alive": 0, "options": map[string]any{"num_predict": 2}})
	require.Equal(t, http.StatusOK, code, "%s", body)
	assert.Equal(t, []string{"alpha:latest"}, d.running(t))
	code, _, body = d.post(t, "/api/chat", map[string]any{"model": "alpha", "keep_alive": 0})
	require.Equal(t, http.StatusOK, code, "%s", body)
	assert.Contains(t, string(body), `"done_reason":"unload"`)
	assert.Equal(t, []string{}, d.running(t))

	code, _, body = d.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(body), `m40llm_model_loads_total{model="alpha"} 2`)
	assert.Contains(t, string(body), `m40llm_model_unloads_total{model="alpha"} 2`)
}

// The model given to Start is listed with the directory's and answers
// requests without a name.
func TestModelsWithStartModel(t *testing.T) {
	d := startModelsDir(t, Options{Name: "main"}, "other")
	m, _ := loadModel(t, 1, 256)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, d.srv.Start(m))
	openaiNames, ollamaNames := d.listed(t)
	assert.Equal(t, []string{"main", "other"}, openaiNames)
	assert.Equal(t, []string{"main:latest", "other:latest"}, ollamaNames)
	code, _, body := d.post(t, "/v1/completions", map[string]any{"prompt": storyPrompt, "max_tokens": 4})
	require.Equal(t, http.StatusOK, code, "%s", body)
	assert.Contains(t, string(body), `"model":"main"`)
	code, text := d.complete(t, "other", storyPrompt, 4)
	require.Equal(t, http.StatusOK, code, text)
	assert.Equal(t, int64(1), d.loaded("other"))
	code, _, body = d.post(t, "/api/generate", map[string]any{"model": "main", "keep_alive": 0})
	assert.Equal(t, http.StatusBadRequest, code, "the model given to Start is not unloaded: %s", body)
}
