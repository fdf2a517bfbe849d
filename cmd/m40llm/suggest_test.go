package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A mistyped command or flag is one line on stderr naming what was
// probably meant, and exit status 2 (README: command-line mistakes).
func TestUnknownCommandsAndFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"command typo", []string{"genrate", "-p", "x"}, `unknown command "genrate"; did you mean "generate"?`},
		{"swapped letters", []string{"insepct", "x.gguf"}, `did you mean "inspect"?`},
		{"no close command", []string{"frobnicate"}, `unknown command "frobnicate" (commands: version, inspect,`},
		{"help for an unknown command", []string{"help", "tokenise"}, `unknown command "tokenise"; did you mean "tokenize"?`},
		{"flag typo", []string{"inspect", "x.gguf", "--jsn"}, "unknown flag --jsn for m40llm inspect; did you mean --json?"},
		{"flag before the argument", []string{"tokenize", "--no-bso", "x"}, "did you mean --no-bos?"},
		{"longer spelling", []string{"generate", "--temperature", "0.5"}, "unknown flag --temperature for m40llm generate; did you mean --temp?"},
		{"prefix", []string{"generate", "--ctx", "512"}, "did you mean --ctx-size?"},
		{"no close flag", []string{"generate", "--xyzzy"}, "unknown flag --xyzzy for m40llm generate (see m40llm generate --help)"},
		{"top-level flag", []string{"--verison"}, "unknown flag --verison for m40llm; did you mean --version?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, "", tt.args...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out)
			assert.Equal(t, "m40llm: ", errs[:min(len(errs), 8)])
			assert.Equal(t, 1, strings.Count(errs, "\n"), "one line: %q", errs)
			assert.Contains(t, errs, tt.msg)
		})
	}
}

// "help COMMAND" prints that command's help, as "COMMAND --help" does.
func TestHelpCommand(t *testing.T) {
	for _, cmd := range []string{"generate", "inspect", "tokenize"} {
		want, _, code := runCLI(t, "", cmd, "--help")
		require.Equal(t, 0, code)
		require.Contains(t, want, "m40llm "+cmd+" - ")
		got, errs, code := runCLI(t, "", "help", cmd)
		assert.Equal(t, 0, code, errs)
		assert.Equal(t, want, got)
	}
	top, _, code := runCLI(t, "", "help")
	assert.Equal(t, 0, code)
	assert.Contains(t, top, "COMMANDS:")
}

func TestClosest(t *testing.T) {
	names := []string{"model", "m", "ctx-size", "c", "temp", "top-k", "top-p", "no-bos"}
	tests := []struct{ in, want string }{
		{"modle", "model"},
		{"MODEL", "model"},
		{"top-q", "top-k"}, // a tie between top-k and top-p goes to the first
		{"tmp", "temp"},
		{"temperature", "temp"},
		{"ctx", "ctx-size"},
		{"nobos", "no-bos"},
		{"x", ""},
		{"C", "c"},
		{"seed", ""},
		{"verbose", ""},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, closest(tt.in, names), "closest(%q)", tt.in)
	}
	assert.Equal(t, 3, editDistance("kitten", "sitting"))
	assert.Equal(t, 1, editDistance("ab", "ba"), "a swap of neighbours is one edit")
	assert.Equal(t, 3, editDistance("", "abc"))
}
