package main

import (
	"strings"
	"testing"

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
