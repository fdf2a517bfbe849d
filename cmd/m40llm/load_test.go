package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
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

// TestNoGPUNotice: when the driver library search fails, a command prints
// one line about the backend choice; the paths tried appear only with -v
// (one line each) and in `devices`. It runs twice: with M40LLM_LIBCUDA
// naming a file that does not exist (the real search, one path), and with
// a search that tried ten paths, as on a machine without the driver.
func TestNoGPUNotice(t *testing.T) {
	m := fixture.BundledModel(t)
	args := []string{"generate", "-m", m, "-p", "Once", "-n", "3", "--temp", "0"}
	tried := []cudadrv.Attempt{}
	for i := range 10 {
		p := fmt.Sprintf("/lib%d/libcuda.so.1", i)
		tried = append(tried, cudadrv.Attempt{Path: p, Err: &fs.PathError{Op: "stat", Path: p, Err: syscall.ENOENT}})
	}
	tests := []struct {
		name   string
		search func(*testing.T)
		paths  int
	}{
		{"M40LLM_LIBCUDA missing", func(t *testing.T) {
			t.Setenv("M40LLM_LIBCUDA", filepath.Join(t.TempDir(), "libcuda.so.1"))
		}, 1},
		{"ten paths", func(t *testing.T) {
			old := discover
			discover = func(cudadrv.Options) (*cudadrv.System, error) {
				return nil, &cudadrv.LoadError{Library: cudadrv.Library, Tried: tried}
			}
			t.Cleanup(func() { discover = old })
		}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.search(t)
			notice := fmt.Sprintf(`^m40llm: backend cpu \(\d+ threads\): no GPU: libcuda.so.1 not found in %d places? searched; install the NVIDIA driver, or set M40LLM_LIBCUDA=/path/to/libcuda.so.1$`, tt.paths)

			_, errs, code := runCLI(t, "", args...)
			require.Equal(t, 0, code, errs)
			lines := nonEmptyLines(errs)
			require.Len(t, lines, 2, "the backend notice and the statistics:\n%s", errs)
			assert.Regexp(t, notice, lines[0])
			assert.Contains(t, lines[1], "tok/s")

			_, errs, code = runCLI(t, "", append(args, "-v")...)
			require.Equal(t, 0, code, errs)
			lines = nonEmptyLines(errs)
			var search []string
			for _, l := range lines {
				if strings.HasPrefix(l, "m40llm: tried ") {
					search = append(search, l)
				}
			}
			assert.Len(t, search, tt.paths, "-v lists each path tried:\n%s", errs)
			assert.Regexp(t, `^m40llm: tried /.*libcuda.so.1: stat .*: no such file or directory$`, search[0])
			assert.Regexp(t, notice, lines[tt.paths], "the notice follows the search")

			_, errs, code = runCLI(t, "", append(args, "--backend", "cuda")...)
			assert.Equal(t, 6, code)
			assert.Len(t, nonEmptyLines(errs), 1, "--backend cuda fails in one line:\n%s", errs)

			out, _, code := runCLI(t, "", "devices")
			require.Equal(t, 0, code)
			assert.Equal(t, tt.paths+2, len(nonEmptyLines(out)), "devices shows the search:\n%s", out)
		})
	}
}

func nonEmptyLines(s string) []string {
	var lines []string
	for l := range strings.Lines(s) {
		if l = strings.TrimRight(l, "\n"); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}
