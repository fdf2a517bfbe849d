package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withTemplate writes a copy of the bundled model with src as its chat
// template and returns its path.
func withTemplate(t *testing.T, src string) string {
	t.Helper()
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Metadata.SetAny(chat.KeyTemplate, src))
	path := filepath.Join(t.TempDir(), "model.gguf")
	out, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, gguf.Copy(out, f))
	require.NoError(t, out.Close())
	return path
}

// TestChatTemplateLimits: a template that recurses or loops without end
// fails each message with one line, and the session goes on. The first
// used to kill the process with a stack overflow.
func TestChatTemplateLimits(t *testing.T) {
	tests := []struct{ name, src, limit string }{
		{"recursion", `{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}`, "MaxDepth"},
		{"loops", `{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}`, "MaxSteps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, "hi\nhello\n", "chat", "-m", withTemplate(t, tt.src), "--backend", "cpu", "-n", "4")
			require.Equal(t, 0, code, errs)
			assert.Empty(t, out)
			var failures []string
			for _, line := range strings.Split(errs, "\n") {
				if strings.Contains(line, "(limit ") {
					failures = append(failures, line)
					assert.Contains(t, line, `chat template "tokenizer.chat_template": `)
					assert.Contains(t, line, "(limit "+tt.limit+")")
				}
			}
			assert.Len(t, failures, 2, "one line per message: %s", errs)
			assert.NotContains(t, errs, "goroutine")
		})
	}
}
