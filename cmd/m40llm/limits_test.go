package main

import (
	"strings"
	"testing"
	"time"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/internal/hostile"
	"github.com/stretchr/testify/assert"
)

// TestInputAndFlagBounds: inputs and flag values that cannot work end at
// once with one line and exit 2, before a model is loaded: -f /dev/zero
// used to read without limit (7.8 GB in 20 s), --threads 100000 started
// 100000 workers (2.7 GB), serve --parallel 10000 failed only after the
// model had loaded.
func TestInputAndFlagBounds(t *testing.T) {
	m := fixture.BundledModel(t)
	tests := []struct {
		name  string
		stdin string
		args  []string
		msg   string
	}{
		{"prompt file without end", "", []string{"generate", "-m", m, "-f", "/dev/zero", "--backend", "cpu"}, "larger than 8 MiB"},
		{"tokenize file without end", "", []string{"tokenize", "-m", m, "-f", "/dev/zero"}, "larger than 64 MiB"},
		{"tokenize stdin too large", strings.Repeat("x", maxTokenizeBytes+1), []string{"tokenize", "-m", m}, "standard input is larger than 64 MiB"},
		{"threads", "", []string{"generate", "-m", m, "-p", "x", "--threads", "100000"}, "--threads 100000"},
		{"negative threads", "", []string{"generate", "-m", m, "-p", "x", "--threads", "-3"}, "--threads -3"},
		{"parallel", "", []string{"serve", "-m", m, "--parallel", "10000", "--addr", "127.0.0.1:0"}, "--parallel 10000"},
		{"batch below parallel", "", []string{"serve", "-m", m, "--parallel", "8", "-b", "4", "--addr", "127.0.0.1:0"}, "--batch-size 4 is smaller than --parallel 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			out, errs, code := runCLI(t, tt.stdin, tt.args...)
			assert.Equal(t, 2, code, errs)
			assert.Contains(t, errs, tt.msg)
			assert.NotContains(t, errs, "loading", "refused before the model is loaded")
			assert.Empty(t, out)
			assert.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// TestInspectHostileFiles: inspect (and generate, which loads) answer every
// file of the hostile corpus with a normal run or one line and the exit
// status of its class, quickly.
func TestInspectHostileFiles(t *testing.T) {
	for _, c := range hostile.Corpus(t) {
		t.Run(c.Name, func(t *testing.T) {
			for _, args := range [][]string{
				{"inspect", c.Path},
				{"generate", "-m", c.Path, "-p", "Once", "-n", "2", "--temp", "0", "--backend", "cpu", "-c", "64"},
			} {
				start := time.Now()
				_, errs, code := runCLI(t, "", args...)
				assert.Less(t, time.Since(start), 2*time.Second, "%s", args[0])
				assert.NotContains(t, errs, "goroutine", "no stack trace")
				if code != 0 {
					assert.Contains(t, []int{3, 4, 5, 7, 8}, code, "%s: %s", args[0], errs)
					lines := strings.Split(strings.TrimSpace(errs), "\n")
					last := lines[len(lines)-1]
					assert.True(t, strings.HasPrefix(last, "m40llm: "), "%s: %q", args[0], errs)
					assert.NotContains(t, errs, "panic")
				}
			}
		})
	}
}
