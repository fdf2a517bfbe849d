package main

import (
	"io"
	"regexp"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Flags may follow positional arguments, as in llama.cpp's and ollama's
// commands; each row's two spellings must give the same output.
func TestFlagsAfterArguments(t *testing.T) {
	stories260K := fixture.BundledModel(t)
	tests := []struct {
		name          string
		after, before []string
	}{
		{"inspect json", []string{"inspect", stories260K, "--json"}, []string{"inspect", "--json", stories260K}},
		{"inspect -m", []string{"inspect", "-m", stories260K, "--json"}, []string{"inspect", "--json", stories260K}},
		{"inspect --model=", []string{"inspect", "--all", "--model=" + stories260K}, []string{"inspect", "--all", stories260K}},
		{"tokenize", []string{"tokenize", "Once", "-m", stories260K, "--no-bos"}, []string{"tokenize", "-m", stories260K, "--no-bos", "Once"}},
		{"tokenize between", []string{"tokenize", "-m", stories260K, "Once", "--no-bos"}, []string{"tokenize", "--no-bos", "-m", stories260K, "Once"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outA, errA, codeA := runCLI(t, "", tt.after...)
			require.Equal(t, 0, codeA, errA)
			outB, errB, codeB := runCLI(t, "", tt.before...)
			require.Equal(t, 0, codeB, errB)
			assert.Equal(t, outB, outA)
			assert.NotEmpty(t, outA)
		})
	}
	// The two spellings differ from leaving the flag out.
	assert.Equal(t, []int32{403}, tokenizeIDs(t, "Once", "-m", stories260K, "--no-bos"))
	assert.Equal(t, []int32{1, 403}, tokenizeIDs(t, "Once", "-m", stories260K))
}

// Everything after "--" is an argument, even when it looks like a flag;
// a flag's value may start with a dash.
func TestFlagTerminatorAndDashValues(t *testing.T) {
	stories260K := fixture.BundledModel(t)
	withFlagText := tokenizeIDs(t, "-m", stories260K, "--", "--no-bos")
	assert.Equal(t, int32(1), withFlagText[0], "BOS kept: --no-bos after -- is the text")
	assert.Greater(t, len(withFlagText), 2)
	assert.Equal(t, withFlagText, tokenizeIDs(t, "-m", stories260K, "--", "--no-bos"))
	assert.Equal(t, withFlagText[1:], tokenizeIDs(t, "--no-bos", "-m", stories260K, "--", "--no-bos"))

	// -p's value "-x" is not a flag; generation runs (exit 0) rather than
	// failing on an unknown flag -x.
	_, errs, code := runCLI(t, "", "generate", "-p", "-x", "-m", stories260K, "-n", "1", "--backend", "cpu")
	assert.Equal(t, 0, code, errs)
	// -n -1 reads -1 as the value of -n.
	_, errs, code = runCLI(t, "", "generate", "-m", stories260K, "-p", "Once", "-n", "-1", "-c", "8", "--backend", "cpu")
	assert.Equal(t, 0, code, errs)
}

func TestInspectModelArguments(t *testing.T) {
	stories260K := fixture.BundledModel(t)
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"none", []string{"inspect"}, "inspect needs a model"},
		{"two", []string{"inspect", stories260K, stories260K}, "one MODEL.gguf argument, got 2"},
		{"both", []string{"inspect", "-m", stories260K, stories260K}, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, "", tt.args...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out)
			assert.Contains(t, errs, tt.msg)
		})
	}
}

func TestReorderArgs(t *testing.T) {
	app := newApp(nil, io.Discard, io.Discard)
	tests := []struct {
		in, want []string
	}{
		{[]string{"m40llm"}, []string{"m40llm"}},
		{[]string{"m40llm", "-v"}, []string{"m40llm", "-v"}},
		{[]string{"m40llm", "--help"}, []string{"m40llm", "--help"}},
		{[]string{"m40llm", "nosuch", "x", "--y"}, []string{"m40llm", "nosuch", "x", "--y"}},
		{[]string{"m40llm", "help", "inspect"}, []string{"m40llm", "inspect", "--help"}},
		{[]string{"m40llm", "help"}, []string{"m40llm", "--help"}},
		{[]string{"m40llm", "inspect", "M", "--json"}, []string{"m40llm", "inspect", "--json", "M"}},
		{[]string{"m40llm", "tokenize", "T", "-m", "M", "-f", "-"}, []string{"m40llm", "tokenize", "-m", "M", "-f", "-", "T"}},
		{[]string{"m40llm", "tokenize", "-", "--no-bos"}, []string{"m40llm", "tokenize", "--no-bos", "-"}},
		{[]string{"m40llm", "tokenize", "T", "--", "-m", "--"}, []string{"m40llm", "tokenize", "--", "T", "-m", "--"}},
		{[]string{"m40llm", "tokenize", "-m", "M", "--"}, []string{"m40llm", "tokenize", "-m", "M"}},
		{[]string{"m40llm", "-v", "generate", "-n", "-1"}, []string{"m40llm", "generate", "-v", "-n", "-1"}},
		{[]string{"m40llm", "-v"}, []string{"m40llm", "-v"}},
		{[]string{"m40llm", "generate", "-p", "-x", "-n", "-1", "y"}, []string{"m40llm", "generate", "-p", "-x", "-n", "-1", "y"}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, reorderArgs(app, tt.in), "%q", tt.in)
	}
}

// --version and -V print the version anywhere; -v does only alone, and
// with a command (before or after its name) is --verbose.
func TestVersionAndVerbose(t *testing.T) {
	want, _, code := runCLI(t, "", "version")
	require.Equal(t, 0, code)
	require.Contains(t, want, "m40llm "+version)
	for _, args := range [][]string{{"--version"}, {"-V"}, {"-v"}, {"generate", "--version"}, {"inspect", "x.gguf", "-V"}} {
		out, errs, code := runCLI(t, "", args...)
		assert.Equal(t, 0, code, "%q: %s", args, errs)
		assert.Equal(t, "m40llm version "+version+"\n", out, "%q", args)
	}
	stories260K := fixture.BundledModel(t)
	gen := []string{"-m", stories260K, "-p", "Once", "-n", "2", "--temp", "0", "--backend", "cpu"}
	for _, args := range [][]string{
		append([]string{"-v", "generate"}, gen...),
		append([]string{"generate", "-v"}, gen...),
		append(append([]string{"generate"}, gen...), "--verbose"),
	} {
		out, errs, code := runCLI(t, "", args...)
		assert.Equal(t, 0, code, errs)
		assert.NotContains(t, out, "m40llm version")
		assert.Contains(t, errs, "m40llm: loaded", "%q is verbose", args)
	}
	// A flag value that reads "--version" is a value.
	out, errs, code := runCLI(t, "", "generate", "-p", "--version", "-m", stories260K, "-n", "1", "--backend", "cpu")
	assert.Equal(t, 0, code, errs)
	assert.NotContains(t, out, "m40llm version")
}

// --help prints float defaults as they are written (0.8, not the float64
// of float32(0.8), 0.800000011920929).
func TestHelpFloatDefaults(t *testing.T) {
	long := regexp.MustCompile(`default: -?\d+\.\d{6,}`)
	for _, cmd := range newApp(nil, io.Discard, io.Discard).Commands {
		out, _, code := runCLI(t, "", cmd.Name, "--help")
		require.Equal(t, 0, code)
		assert.Empty(t, long.FindAllString(out, -1), cmd.Name)
	}
	out, _, _ := runCLI(t, "", "generate", "--help")
	for _, want := range []string{"(default: 0.8)", "(default: 0.95)", "(default: 0.05)"} {
		assert.Contains(t, out, want)
	}
	assert.Equal(t, float32(0.8), float32(asWritten(0.8)), "the value is unchanged")
}
