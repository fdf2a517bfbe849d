package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBackendChoice: auto says which backend it chose and why; cuda fails
// with the reason when no GPU is usable; unknown names are usage errors.
func TestBackendChoice(t *testing.T) {
	args := []string{"generate", "-m", fixture.BundledModel(t), "-p", "Once", "-n", "3", "--temp", "0"}

	_, errs, code := runCLI(t, "", append(args, "--backend", "auto")...)
	require.Equal(t, 0, code, errs)
	line := strings.SplitN(errs, "\n", 2)[0]
	if strings.Contains(line, "backend cuda:") {
		assert.Regexp(t, `^m40llm: backend cuda:\d+ .+ \(compute \d+\.\d+, \d+ GB, (native sm_52|PTX JIT compute_52 → sm_\d+)\)$`, line)
	} else {
		assert.Regexp(t, `^m40llm: backend cpu \(\d+ threads\): no GPU: .+`, line)
	}

	_, errs, code = runCLI(t, "", append(args, "--backend", "cuda")...)
	if code != 0 {
		assert.Equal(t, 6, code, "no usable GPU")
		assert.Contains(t, errs, "--backend cuda:")
	} else {
		assert.Contains(t, errs, "backend cuda:")
	}

	_, errs, code = runCLI(t, "", append(args, "--backend", "tpu")...)
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, `--backend "tpu"`)

	_, errs, code = runCLI(t, "", append(args, "--backend", "cpu", "-v")...)
	require.Equal(t, 0, code, errs)
	assert.Contains(t, errs, "backend cpu (")
	assert.NotContains(t, errs, "GPU memory")
}

// withMetadata writes a copy of the bundled model with the metadata kvs
// set and returns its path.
func withMetadata(t *testing.T, kvs map[string]any) string {
	t.Helper()
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer f.Close()
	for k, v := range kvs {
		require.NoError(t, f.Metadata.SetAny(k, v))
	}
	path := filepath.Join(t.TempDir(), "model.gguf")
	out, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, gguf.Copy(out, f))
	require.NoError(t, out.Close())
	return path
}

// A --ctx-size past the model's training context (2048 for stories260K)
// runs, with one warning line that says which RoPE scaling applies.
func TestContextPastTraining(t *testing.T) {
	stories260K := fixture.BundledModel(t)
	linear := withMetadata(t, map[string]any{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float32(4)})
	tests := []struct {
		name, model, ctx string
		warning          string // "" for none
	}{
		{"default", stories260K, "0", ""},
		{"training context", stories260K, "2048", ""},
		{"past it", stories260K, "4096", "m40llm: warning: --ctx-size 4096 is more than the model's training context of 2048 positions; no RoPE scaling applies (the model file names none), and output past position 2048 may degrade\n"},
		{"past it with linear scaling", linear, "2049", "m40llm: warning: --ctx-size 2049 is more than the model's training context of 2048 positions; the model file's linear RoPE scaling applies (factor 4), and output past position 2048 may degrade\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := runCLI(t, "", "generate", "-m", tt.model, "-c", tt.ctx, "-p", "Once", "-n", "1", "--backend", "cpu")
			require.Equal(t, 0, code, errs)
			var warnings []string
			for _, l := range strings.SplitAfter(errs, "\n") {
				if strings.Contains(l, "warning") {
					warnings = append(warnings, l)
				}
			}
			if tt.warning == "" {
				assert.Empty(t, warnings)
			} else {
				assert.Equal(t, []string{tt.warning}, warnings)
			}
		})
	}
}
