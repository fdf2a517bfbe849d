package main

// These tests build libm40llm.so the way users do, then compile and run the
// C test program (tests/capi_test.c), the example (examples/generate.c) and
// the Python smoke test (tests/smoke.py) against it. They need a C compiler
// (gcc, or $CC), which cgo needs anyway.

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// workDir holds everything the tests build; TestMain removes it.
var workDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "m40llm-capi-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// libVariant is one way of building the library.
type libVariant struct {
	name string
	args []string // extra go build arguments
	env  []string
}

var (
	// plainLib is the library as users build it.
	plainLib = libVariant{name: "plain"}
	// asanLib has the Go code instrumented by AddressSanitizer as well
	// (go build -asan) and the stricter cgo pointer checks of cgocheck2.
	asanLib = libVariant{name: "asan", args: []string{"-asan"}, env: []string{"GOEXPERIMENT=cgocheck2"}}
)

type buildResult struct {
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*sync.Once{}
	built    = map[string]buildResult{}
)

// library builds the variant once per test binary and returns the path of
// libm40llm.so.
func library(t *testing.T, v libVariant) string {
	t.Helper()
	buildsMu.Lock()
	once := builds[v.name]
	if once == nil {
		once = new(sync.Once)
		builds[v.name] = once
	}
	buildsMu.Unlock()
	once.Do(func() {
		dir := filepath.Join(workDir, v.name)
		out := filepath.Join(dir, "libm40llm.so")
		args := append([]string{"build"}, v.args...)
		args = append(args, "-buildmode=c-shared", "-o", out, ".")
		cmd := exec.Command(goTool(), args...)
		cmd.Env = append(os.Environ(), append([]string{"CGO_ENABLED=1"}, v.env...)...)
		res := buildResult{path: out}
		if b, err := cmd.CombinedOutput(); err != nil {
			res.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		buildsMu.Lock()
		built[v.name] = res
		buildsMu.Unlock()
	})
	buildsMu.Lock()
	res := built[v.name]
	buildsMu.Unlock()
	require.NoError(t, res.err)
	return res.path
}

// goTool returns the go command; go test puts GOROOT/bin first in PATH.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// cc returns the C compiler: $CC or gcc.
func cc(t *testing.T) string {
	t.Helper()
	c := os.Getenv("CC")
	if c == "" {
		c = "gcc"
	}
	p, err := exec.LookPath(c)
	if err != nil {
		t.Skipf("no C compiler (%s): %v", c, err)
	}
	return p
}

// compile builds a C program against the library at lib.
func compile(t *testing.T, lib, out string, flags []string, srcs ...string) string {
	t.Helper()
	dir := filepath.Dir(lib)
	args := []string{"-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-Iinclude"}
	args = append(args, flags...)
	args = append(args, "-o", out)
	args = append(args, srcs...)
	args = append(args, "-L"+dir, "-lm40llm", "-Wl,-rpath,"+dir, "-lpthread", "-lm")
	cmd := exec.Command(cc(t), args...)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s\n%s", cmd.Path, strings.Join(args, " "), b)
	return out
}

// run runs a program and returns its stdout and stderr.
func run(t *testing.T, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// headerFunctions lists the functions include/m40llm.h declares.
func headerFunctions(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("include/m40llm.h")
	require.NoError(t, err)
	src := regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(string(b), "")
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^[a-z_][\w *]*?\b(m40llm_\w+)\s*\(`).FindAllStringSubmatch(src, -1) {
		names = append(names, m[1])
	}
	slices.Sort(names)
	require.NotEmpty(t, names)
	return names
}

// TestExportedSymbols checks that the library exports exactly the
// functions of the header under m40llm_ (what `nm -D libm40llm.so | grep
// m40llm_` lists), and nothing else with that prefix.
func TestExportedSymbols(t *testing.T) {
	lib := library(t, plainLib)
	want := headerFunctions(t)

	f, err := elf.Open(lib)
	require.NoError(t, err)
	defer f.Close()
	syms, err := f.DynamicSymbols()
	require.NoError(t, err)
	var got []string
	for _, s := range syms {
		if strings.Contains(s.Name, "m40llm_") {
			assert.Equal(t, elf.STT_FUNC, elf.ST_TYPE(s.Info), "%s is not a function", s.Name)
			assert.NotEqual(t, elf.SHN_UNDEF, s.Section, "%s is undefined", s.Name)
			got = append(got, s.Name)
		}
	}
	slices.Sort(got)
	assert.Equal(t, want, got)
	t.Logf("%d functions in the header, %d m40llm_ symbols in the library", len(want), len(got))

	// The literal check, where binutils are installed.
	nm, err := exec.LookPath("nm")
	if err != nil {
		t.Logf("nm not found; checked the ELF dynamic symbol table only")
		return
	}
	out, err := exec.Command(nm, "-D", lib).Output()
	require.NoError(t, err)
	var listed []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "m40llm_") {
			fields := strings.Fields(line)
			listed = append(listed, fields[len(fields)-1])
		}
	}
	slices.Sort(listed)
	assert.Equal(t, want, listed, "nm -D | grep m40llm_")
}

// TestTLSBlockIsSmall guards dlopen: the Go runtime uses initial-exec TLS,
// so the library's whole TLS block must fit in the loader's static TLS
// surplus (a few hundred bytes), or dlopen fails with "cannot allocate
// memory in static TLS block".
func TestTLSBlockIsSmall(t *testing.T) {
	f, err := elf.Open(library(t, plainLib))
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_TLS {
			assert.LessOrEqual(t, p.Memsz, uint64(64), "TLS block of %d bytes", p.Memsz)
		}
	}
}

// lsanSuppressions is written next to the ASan build. libcuda.so.1 leaks
// about 870 bytes each time cuInit fails (no GPU), and cudadrv closes the
// library after such a failure, so the leaked blocks' stacks end in an
// unknown module entered through purego's call trampoline. The pattern
// matches only stacks through that trampoline, i.e. memory the CUDA
// libraries allocated.
const lsanSuppressions = "leak:github.com/ebitengine/purego\n"

// sanitizerEnv returns the environment for the C test program under the
// sanitizers, with the suppressions written to dir.
func sanitizerEnv(t *testing.T, dir string) []string {
	supp := filepath.Join(dir, "lsan.supp")
	require.NoError(t, os.WriteFile(supp, []byte(lsanSuppressions), 0o644))
	return []string{
		"ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1",
		"LSAN_OPTIONS=suppressions=" + supp + ":print_suppressions=1",
		"UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1",
	}
}

func runCTests(t *testing.T, bin string, env []string) {
	scratch := t.TempDir()
	stdout, stderr, err := run(t, env, bin, fixture.BundledModel(t), scratch)
	t.Logf("%s\n%s", strings.TrimSpace(stdout), strings.TrimSpace(stderr))
	require.NoError(t, err, "C tests failed")
	assert.Contains(t, stdout, " checks, 0 failed")
}

// TestCProgram runs tests/capi_test.c: every function, error paths
// included. Its low-level GPU part skips (with a message in the log) when no
// GPU is usable, and fails instead under M40LLM_REQUIRE_GPU=1.
func TestCProgram(t *testing.T) {
	t.Parallel()
	lib := library(t, plainLib)
	bin := compile(t, lib, filepath.Join(filepath.Dir(lib), "capi_test"), nil, "tests/capi_test.c")
	runCTests(t, bin, nil)
}

// TestCProgramASan runs the C tests built with -fsanitize=address,undefined
// against the library built with go build -asan (Go's memory accesses
// checked too, cgocheck2 on), with LeakSanitizer at exit.
func TestCProgramASan(t *testing.T) {
	t.Parallel()
	probe := filepath.Join(workDir, "asan-probe")
	src := probe + ".c"
	require.NoError(t, os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o644))
	if b, err := exec.Command(cc(t), "-fsanitize=address,undefined", "-o", probe, src).CombinedOutput(); err != nil {
		t.Skipf("the C compiler cannot build with -fsanitize=address,undefined: %v\n%s", err, b)
	}
	lib := library(t, asanLib)
	dir := filepath.Dir(lib)
	bin := compile(t, lib, filepath.Join(dir, "capi_test"),
		[]string{"-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"},
		"tests/capi_test.c")
	runCTests(t, bin, sanitizerEnv(t, dir))
}

// TestExampleMatchesCLI checks that examples/generate.c prints the same
// text as `m40llm generate` for the same prompt and sampling settings:
// greedy (--temp 0) and seeded sampling.
func TestExampleMatchesCLI(t *testing.T) {
	t.Parallel()
	modelPath := fixture.BundledModel(t)
	lib := library(t, plainLib)
	dir := filepath.Dir(lib)
	example := compile(t, lib, filepath.Join(dir, "generate"), nil, "examples/generate.c")

	cli := filepath.Join(dir, "m40llm")
	build := exec.Command(goTool(), "build", "-o", cli, "./cmd/m40llm")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := build.CombinedOutput()
	require.NoError(t, err, "building the m40llm command:\n%s", b)

	tests := []struct {
		name, prompt, n, temp, seed string
	}{
		{"greedy", "Once upon a time", "64", "0", "0"},
		{"greedy long", "Lily and Ben went to the park", "300", "0", "0"},
		{"special tokens", "<s>Tom had a red ball", "40", "0", "0"},
		{"seeded", "Once upon a time", "80", "0.8", "7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, cliErr, err := run(t, nil, cli, "generate", "--backend", "cpu", "-m", modelPath,
				"-p", tt.prompt, "-n", tt.n, "--temp", tt.temp, "--seed", tt.seed)
			require.NoError(t, err, cliErr)
			got, exErr, err := run(t, nil, example, "--backend", "cpu", "-m", modelPath,
				"-p", tt.prompt, "-n", tt.n, "--temp", tt.temp, "--seed", tt.seed)
			require.NoError(t, err, exErr)
			require.NotEmpty(t, want)
			assert.Equal(t, want, got, "example output differs from the CLI's")
			assert.Regexp(t, `generated \d+ tokens in [0-9.]+ s \([0-9.]+ tok/s\)`, exErr)
			t.Logf("example: %s", strings.TrimSpace(exErr))
		})
	}
}

// TestPythonSmoke drives the library from Python's ctypes.
func TestPythonSmoke(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the ctypes smoke test did not run")
	}
	lib := library(t, plainLib)
	stdout, stderr, err := run(t, nil, py, "tests/smoke.py", lib, fixture.BundledModel(t))
	t.Logf("%s%s", stdout, stderr)
	require.NoError(t, err)
	assert.Contains(t, stdout, " checks, 0 failed")
}

// TestHeaderInCxx compiles and links a C++ program against the header: the
// extern "C" guards must give C linkage.
func TestHeaderInCxx(t *testing.T) {
	t.Parallel()
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "g++"
	}
	if _, err := exec.LookPath(cxx); err != nil {
		t.Skipf("no C++ compiler (%s): the header was not checked as C++", cxx)
	}
	lib := library(t, plainLib)
	dir := t.TempDir()
	src := filepath.Join(dir, "cxx.cc")
	prog := `#include "m40llm.h"
#include <cstdio>
int main() {
    m40llm_model_params p;
    if (m40llm_model_params_init(&p) != M40LLM_OK) return 1;
    std::printf("%s %d\n", m40llm_version(), m40llm_abi_version());
    return m40llm_abi_version() == M40LLM_ABI_VERSION ? 0 : 1;
}
`
	require.NoError(t, os.WriteFile(src, []byte(prog), 0o644))
	bin := filepath.Join(dir, "cxx")
	libDir := filepath.Dir(lib)
	b, err := exec.Command(cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Iinclude", "-o", bin, src,
		"-L"+libDir, "-lm40llm", "-Wl,-rpath,"+libDir).CombinedOutput()
	require.NoError(t, err, "%s", b)
	out, stderr, err := run(t, nil, bin)
	require.NoError(t, err, stderr)
	assert.Regexp(t, `^\S+ 1\n$`, out)
}
