package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// expectedStories reads the greedy continuation llama.cpp produces for
// "Once upon a time" from the shared expected-output file.
func expectedStories(t *testing.T) (prompt, continuation string, n int) {
	data, err := os.ReadFile(fixture.Shared(t, "models/stories260K.expected.json"))
	require.NoError(t, err)
	var exp struct {
		GreedyWithPrompt []struct {
			Prompt       string  `json:"prompt"`
			GeneratedIDs []int32 `json:"generated_ids"`
			Output       string  `json:"output_text_including_prompt"`
		} `json:"greedy_with_prompt"`
	}
	require.NoError(t, json.Unmarshal(data, &exp))
	c := exp.GreedyWithPrompt[0]
	return c.Prompt, strings.TrimPrefix(c.Output, c.Prompt), len(c.GeneratedIDs)
}

func runCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := runWithInput(append([]string{"m40llm"}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestGenerateGreedyMatchesLlamaCpp(t *testing.T) {
	prompt, want, n := expectedStories(t)
	out, errs, code := runCLI(t, "", "generate", "-m", fixture.BundledModel(t), "-p", prompt, "-n", itoa(n), "--temp", "0", "--backend", "cpu")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, want, out, "stdout holds exactly the continuation")
	assert.Contains(t, errs, "tok/s")
	assert.Contains(t, errs, "finish: length")
}

func TestGenerateErrors(t *testing.T) {
	stories260K := fixture.BundledModel(t)
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no prompt", []string{"generate", "-m", stories260K}, 2, "no prompt"},
		{"missing model flag", []string{"generate", "-p", "x"}, 2, "model"},
		{"model not found", []string{"generate", "-m", "nope.gguf", "-p", "x"}, 3, "no such file"},
		{"not a model", []string{"generate", "-m", "main.go", "-p", "x"}, 4, "not a GGUF file"},
		{"bad backend", []string{"generate", "-m", stories260K, "-p", "x", "--backend", "tpu"}, 2, "want auto, cpu or cuda"},
		{"bad top-p", []string{"generate", "-m", stories260K, "-p", "x", "--top-p", "2"}, 2, "TopP"},
		{"prompt longer than context", []string{"generate", "-m", stories260K, "-p", strings.Repeat("long ", 40), "-c", "16"}, 8, "raise --ctx-size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := runCLI(t, "", tt.args...)
			assert.Equal(t, tt.code, code, errs)
			assert.Contains(t, errs, tt.msg)
			assert.NotContains(t, errs, "goroutine", "no stack trace")
		})
	}
}

func TestChatSession(t *testing.T) {
	out, errs, code := runCLI(t, "Hello there\n/reset\nHi\n", "chat", "-m", fixture.BundledModel(t), "--temp", "0", "-n", "12", "--backend", "cpu")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, errs, "chat template llama2")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	assert.Len(t, lines, 2, "one reply per message: %q", out)
}

func TestBenchJSON(t *testing.T) {
	out, errs, code := runCLI(t, "", "bench", "-m", fixture.BundledModel(t), "-p", "16", "-n", "8", "-r", "2", "-o", "json", "--backend", "cpu")
	require.Equal(t, 0, code, errs)
	var rs []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rs), out)
	require.Len(t, rs, 2)
	assert.EqualValues(t, 16, rs[0]["n_prompt"])
	assert.EqualValues(t, 8, rs[1]["n_gen"])
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer f.Close()
	// The bundled model has no general.file_type: llama.cpp guesses.
	_, err = f.Metadata.Uint32(gguf.KeyFileType)
	require.Error(t, err)
	wantType := "llama 293K all F32 (guessed)"
	for _, r := range rs {
		assert.Greater(t, r["avg_ts"], 0.0)
		assert.Len(t, r["samples_ns"], 2)
		// llama-bench's fields: the parameters are the file's tensor
		// elements, not 0; the commit is a revision, not the version.
		assert.EqualValues(t, f.ParameterCount(), r["model_n_params"])
		assert.Equal(t, wantType, r["model_type"])
		assert.NotEmpty(t, r["cpu_info"])
		assert.NotEmpty(t, r["build_commit"])
		assert.NotEqual(t, version, r["build_commit"])
		assert.EqualValues(t, r["n_batch"], r["n_ubatch"])
		assert.EqualValues(t, 0, r["n_gpu_layers"], "the CPU backend")
		assert.Contains(t, r, "build_number")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// The prompt read from a file or standard input loses one trailing
// newline, as with llama.cpp's -f, so every source of the same line gives
// llama.cpp's continuation of "Once upon a time".
func TestGeneratePromptSources(t *testing.T) {
	prompt, want, n := expectedStories(t)
	m := fixture.BundledModel(t)
	dir := t.TempDir()
	file := func(name, text string) string {
		p := dir + "/" + name
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		return p
	}
	common := []string{"generate", "-m", m, "-n", itoa(n), "--temp", "0", "--backend", "cpu"}
	tests := []struct {
		name  string
		stdin string
		args  []string
	}{
		{"-p", "", []string{"-p", prompt}},
		{"-f with a newline", "", []string{"-f", file("p.txt", prompt+"\n")}},
		{"-f without one", "", []string{"-f", file("q.txt", prompt)}},
		{"-f -", prompt + "\n", []string{"-f", "-"}},
		{"piped", prompt + "\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, tt.stdin, append(common, tt.args...)...)
			require.Equal(t, 0, code, errs)
			assert.Equal(t, want, out)
		})
	}

	// Only one newline goes: a second one is prompt text, as with -p.
	twoNewlines, errs, code := runCLI(t, "", append(common, "-f", file("r.txt", prompt+"\n\n"))...)
	require.Equal(t, 0, code, errs)
	oneNewline, errs, code := runCLI(t, "", append(common, "-p", prompt+"\n")...)
	require.Equal(t, 0, code, errs)
	assert.Equal(t, oneNewline, twoNewlines)
	assert.NotEqual(t, want, twoNewlines, "the newline changes the continuation")

	// -p wins over standard input, which is not read.
	out, errs, code := runCLI(t, "Lily went to the park\n", append(common, "-p", prompt)...)
	require.Equal(t, 0, code, errs)
	assert.Equal(t, want, out)
}

func TestGeneratePromptSourceErrors(t *testing.T) {
	m := fixture.BundledModel(t)
	tests := []struct {
		name, stdin string
		args        []string
		msg         string
	}{
		{"empty stdin", "", nil, "standard input (which was empty)"},
		{"-p and -f -", "x", []string{"-p", "x", "-f", "-"}, "not both"},
		{"stdin too large", strings.Repeat("x", maxPromptBytes+1), nil, "standard input is larger than 8 MiB"},
		{"-f - too large", strings.Repeat("x", maxPromptBytes+1), []string{"-f", "-"}, "standard input is larger than 8 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, tt.stdin, append([]string{"generate", "-m", m, "--backend", "cpu"}, tt.args...)...)
			assert.Equal(t, 2, code, errs)
			assert.Empty(t, out)
			assert.Contains(t, errs, tt.msg)
		})
	}
}

// run MODEL PROMPT answers one prompt as chat answers the same first
// message, and exits; the words of PROMPT are joined as ollama joins them,
// and a prompt piped on standard input is one prompt too.
func TestRunOnePrompt(t *testing.T) {
	m := fixture.BundledModel(t)
	opts := []string{"--temp", "0", "-n", "12", "--backend", "cpu"}
	want, errs, code := runCLI(t, "Hello there\n", append([]string{"chat", "-m", m}, opts...)...)
	require.Equal(t, 0, code, errs)
	require.NotEmpty(t, strings.TrimSpace(want))
	for _, tt := range []struct {
		name, stdin string
		args        []string // after "run"
	}{
		{"one argument", "", append([]string{m, "Hello there"}, opts...)},
		{"words", "", append([]string{m, "Hello", "there"}, opts...)},
		{"flags first", "", append(append([]string{}, opts...), m, "Hello", "there")},
		{"stdin", "Hello there\n", append([]string{m}, opts...)},
		{"arguments win over stdin", "Goodbye\n", append([]string{m, "Hello there"}, opts...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, tt.stdin, append([]string{"run"}, tt.args...)...)
			require.Equal(t, 0, code, errs)
			assert.Equal(t, want, out)
			assert.NotContains(t, errs, "> ", "no chat prompt")
		})
	}
}

func TestRunErrors(t *testing.T) {
	m := fixture.BundledModel(t)
	tests := []struct {
		name, stdin string
		args        []string
		code        int
		msg         string
	}{
		{"no model", "", []string{"run"}, 2, "run needs a model"},
		{"empty stdin", "", []string{"run", m}, 2, "standard input was empty"},
		{"model not found", "", []string{"run", "nope.gguf", "hi"}, 3, "no such file"},
		{"prompt longer than context", "", []string{"run", m, strings.Repeat("long ", 40), "-c", "16"}, 8, "raise --ctx-size"},
		{"chat takes no prompt", "", []string{"chat", "-m", m, "hi"}, 2, "m40llm run MODEL PROMPT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := runCLI(t, tt.stdin, append(tt.args, "--backend", "cpu")...)
			assert.Equal(t, tt.code, code, errs)
			assert.Contains(t, errs, tt.msg)
		})
	}
}

// TestBenchLists: comma lists for -p, -n, -b and -t run every combination
// as one test (the model loaded per -b, -t pair), in the order -b, -t,
// then the pp tests, then the tg tests; -o jsonl writes one object per
// line and -o csv a header of the JSON names and one row per test.
func TestBenchLists(t *testing.T) {
	m := fixture.BundledModel(t)
	out, errs, code := runCLI(t, "", "bench", "-m", m, "-p", "8,16", "-n", "4", "-b", "8,16", "-t", "1,2", "-r", "1", "-o", "jsonl", "--backend", "cpu")
	require.Equal(t, 0, code, errs)
	type key struct{ batch, threads, np, ng int }
	var got []key
	for l := range strings.Lines(out) {
		var r map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &r), "one object per line: %q", l)
		got = append(got, key{int(r["n_batch"].(float64)), int(r["n_threads"].(float64)), int(r["n_prompt"].(float64)), int(r["n_gen"].(float64))})
		assert.Len(t, r["samples_ns"], 1)
	}
	var want []key
	for _, b := range []int{8, 16} {
		for _, th := range []int{1, 2} {
			want = append(want, key{b, th, 8, 0}, key{b, th, 16, 0}, key{b, th, 0, 4})
		}
	}
	assert.Equal(t, want, got)

	out, errs, code = runCLI(t, "", "bench", "-m", m, "-p", "8", "-n", "0", "-r", "2", "-o", "csv", "--backend", "cpu")
	require.Equal(t, 0, code, errs)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2, "header and one test")
	col := map[string]string{}
	for i, name := range rows[0] {
		col[name] = rows[1][i]
	}
	assert.Equal(t, "8", col["n_prompt"])
	assert.Equal(t, "0", col["n_gen"])
	assert.Equal(t, "stories260K.gguf", filepath.Base(col["model_filename"]))
	assert.NotContains(t, col, "samples_ns", "no arrays in csv")
	avg, err := strconv.ParseFloat(col["avg_ts"], 64)
	require.NoError(t, err)
	assert.Greater(t, avg, 0.0)

	for _, bad := range [][]string{{"-p", "8,x"}, {"-b", "-1"}, {"-o", "xml"}, {"-p", "0", "-n", "0"}} {
		_, errs, code = runCLI(t, "", append([]string{"bench", "-m", m, "--backend", "cpu"}, bad...)...)
		assert.Equal(t, 2, code, "%v: %s", bad, errs)
	}
}

// TestGenerateCacheTypes checks the default FP16 cache against llama.cpp's
// greedy continuations (c392e509, FP16 KV cache; the last case is a
// near-tie that an FP32 cache decides the other way), and -ctk f32 -ctv
// f32 against llama2.c's outputs, which keep K and V in FP32.
func TestGenerateCacheTypes(t *testing.T) {
	data, err := os.ReadFile(fixture.Shared(t, "models/stories260K.llamacpp-greedy.json"))
	require.NoError(t, err)
	var lc struct {
		Cases []struct {
			Prompt       string `json:"prompt"`
			Continuation string `json:"continuation"`
		} `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &lc))
	require.NotEmpty(t, lc.Cases)
	for _, c := range lc.Cases {
		t.Run("f16/"+c.Prompt, func(t *testing.T) {
			out, errs, code := runCLI(t, "", "generate", "-m", fixture.BundledModel(t), "-p", c.Prompt, "-n", "48", "--temp", "0", "--backend", "cpu")
			require.Equal(t, 0, code, errs)
			assert.Equal(t, c.Continuation, out)
		})
	}

	data, err = os.ReadFile(fixture.Shared(t, "models/stories260K.expected.json"))
	require.NoError(t, err)
	var exp struct {
		GreedyWithPrompt []struct {
			Prompt       string  `json:"prompt"`
			GeneratedIDs []int32 `json:"generated_ids"`
			Output       string  `json:"output_text_including_prompt"`
		} `json:"greedy_with_prompt"`
	}
	require.NoError(t, json.Unmarshal(data, &exp))
	for _, c := range exp.GreedyWithPrompt {
		t.Run("f32/"+c.Prompt, func(t *testing.T) {
			out, errs, code := runCLI(t, "", "generate", "-m", fixture.BundledModel(t), "-p", c.Prompt, "-n", itoa(len(c.GeneratedIDs)),
				"--temp", "0", "--backend", "cpu", "-ctk", "f32", "--cache-type-v", "f32")
			require.Equal(t, 0, code, errs)
			assert.Equal(t, strings.TrimPrefix(c.Output, c.Prompt), out)
		})
	}
}

// TestCacheTypeErrors checks that cache types that cannot work are
// refused before loading, in one line that lists the accepted values,
// with exit status 2.
func TestCacheTypeErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"not a type", []string{"-ctk", "q5_1"}, `--cache-type-k "q5_1": not a cache type (accepted values: f32, f16, q8_0, q4_0)`},
		{"head dim 8", []string{"-ctv", "q8_0"}, "option CacheTypeV: q8_0: the model's head dimension 8 is not a multiple of the type's 32-element blocks (accepted values: f32, f16, q8_0, q4_0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"generate", "-m", fixture.BundledModel(t), "-p", "x", "-n", "1", "--backend", "cpu"}, tt.args...)
			out, errs, code := runCLI(t, "", args...)
			assert.Equal(t, 2, code, errs)
			assert.Empty(t, out)
			assert.Contains(t, errs, tt.msg)
			assert.Equal(t, 1, strings.Count(strings.TrimSpace(errs), "\n")+1, "one line: %q", errs)
		})
	}
}
