// Command ptxgen builds the CUDA kernels in a directory (by default the
// current one, which is where `go generate ./ptx` runs it) and writes the Go
// file that embeds them.
//
// For every NAME.cu it runs
//
//	nvcc -fatbin -O3 -gencode arch=compute_52,code=sm_52 -gencode arch=compute_52,code=compute_52 -o NAME.fatbin NAME.cu
//	nvcc -ptx -O3 -arch=compute_52 -o NAME.ptx NAME.cu
//
// With -v the first command also gets -Xptxas -v (ptxas prints each
// kernel's registers, shared memory and spills); the fatbin records that
// option, so the generated file records the command as run.
//
// The fatbin holds native Maxwell (sm_52) code for the Tesla M40 and
// compute_52 PTX that the driver JIT-compiles on newer GPUs; the separate
// PTX file is embedded as text so that tests can read the kernel signatures.
// The generated zkernels.go records the nvcc version and the sha256 of every
// .cu and .cuh file, which lets a plain `go test` notice stale artifacts.
//
// nvcc 13 and later cannot target sm_52, so ptxgen refuses them; use CUDA
// 11.x or 12.x (Debian 12: the non-free nvidia-cuda-toolkit package, 11.8).
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// arch is the compute capability the kernels are built for: the Tesla M40.
const arch = "52"

// maxNVCCMajor is the newest nvcc that still targets sm_52.
const maxNVCCMajor = 12

func main() {
	dir := flag.String("dir", ".", "directory holding the .cu sources; artifacts are written there")
	nvcc := flag.String("nvcc", "nvcc", "nvcc executable")
	out := flag.String("o", "zkernels.go", "generated Go file, relative to -dir")
	pkg := flag.String("pkg", "ptx", "package name of the generated file")
	verbose := flag.Bool("v", false, "print ptxas resource usage (registers, shared memory, spills)")
	flag.Parse()
	if err := run(*dir, *nvcc, *out, *pkg, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "ptxgen:", err)
		os.Exit(1)
	}
}

// fatbinArgs returns the nvcc arguments that build NAME.fatbin; verbose
// adds -Xptxas -v, which the fatbin records among its ptxas options, so
// that the command written to the generated file is the one that made the
// bytes.
func fatbinArgs(name string, verbose bool) []string {
	var args []string
	if verbose {
		args = []string{"-Xptxas", "-v"}
	}
	return append(args, "-fatbin", "-O3",
		"-gencode", "arch=compute_"+arch+",code=sm_"+arch,
		"-gencode", "arch=compute_"+arch+",code=compute_"+arch,
		"-o", name+".fatbin", name+".cu")
}

func ptxArgs(name string) []string {
	return []string{"-ptx", "-O3", "-arch=compute_" + arch, "-o", name + ".ptx", name + ".cu"}
}

var releaseRE = regexp.MustCompile(`release (\d+)\.(\d+), (V[0-9.]+)`)

// nvccVersion returns the "release X.Y, VX.Y.Z" line of nvcc --version.
func nvccVersion(nvcc string) (string, error) {
	b, err := exec.Command(nvcc, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v\n%s", nvcc, err, b)
	}
	m := releaseRE.FindStringSubmatch(string(b))
	if m == nil {
		return "", fmt.Errorf("%s --version: no release line in %q", nvcc, b)
	}
	major, _ := strconv.Atoi(m[1])
	if major > maxNVCCMajor {
		return "", fmt.Errorf("nvcc %s.%s cannot build sm_%s code; use CUDA %d.x or older", m[1], m[2], arch, maxNVCCMajor)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "release ") {
			return strings.TrimSpace(line), nil
		}
	}
	return m[0], nil
}

func run(dir, nvcc, out, pkg string, verbose bool) error {
	version, err := nvccVersion(nvcc)
	if err != nil {
		return err
	}
	sources, err := filepath.Glob(filepath.Join(dir, "*.cu"))
	if err != nil {
		return err
	}
	if len(sources) == 0 {
		return fmt.Errorf("no .cu files in %s", dir)
	}
	headers, err := filepath.Glob(filepath.Join(dir, "*.cuh"))
	if err != nil {
		return err
	}
	hashed := append(append([]string(nil), sources...), headers...)
	sort.Strings(sources)
	sort.Strings(hashed)

	hashes := map[string]string{}
	for _, f := range hashed {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		hashes[filepath.Base(f)] = hex.EncodeToString(sum[:])
	}

	var names []string
	for _, src := range sources {
		name := strings.TrimSuffix(filepath.Base(src), ".cu")
		if !isIdent(name) {
			return fmt.Errorf("%s: name must be a Go identifier (letters, digits, underscore)", src)
		}
		for _, args := range [][]string{fatbinArgs(name, verbose), ptxArgs(name)} {
			cmd := exec.Command(nvcc, args...)
			cmd.Dir = dir
			b, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("nvcc %s: %v\n%s", strings.Join(args, " "), err, b)
			}
			os.Stderr.Write(b)
		}
		names = append(names, name)
	}

	src, err := generate(pkg, version, names, hashes, verbose)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, out), src, 0o644)
}

func isIdent(s string) bool {
	for i, r := range s {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return s != ""
}

func generate(pkg, version string, names []string, hashes map[string]string, verbose bool) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by ptxgen; DO NOT EDIT.\n\npackage %s\n\nimport _ \"embed\"\n\n", pkg)
	fmt.Fprintf(&b, "// NVCCVersion is the nvcc that built the embedded kernels.\nconst NVCCVersion = %q\n\n", version)
	fmt.Fprintf(&b, "// nvccFatbinCommand and nvccPTXCommand built NAME.fatbin and NAME.ptx from NAME.cu.\nconst (\n")
	fmt.Fprintf(&b, "\tnvccFatbinCommand = %q\n", "nvcc "+strings.Join(fatbinArgs("NAME", verbose), " "))
	fmt.Fprintf(&b, "\tnvccPTXCommand = %q\n)\n\n", "nvcc "+strings.Join(ptxArgs("NAME"), " "))
	b.WriteString("var (\n")
	for _, n := range names {
		fmt.Fprintf(&b, "\t//go:embed %s.fatbin\n\t%sFatbin []byte\n\t//go:embed %s.ptx\n\t%sPTX string\n", n, n, n, n)
	}
	b.WriteString(")\n\n")
	b.WriteString("// sourceHashes holds the sha256 of every kernel source when the artifacts were built.\nvar sourceHashes = map[string]string{\n")
	keys := make([]string, 0, len(hashes))
	for k := range hashes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "\t%q: %q,\n", k, hashes[k])
	}
	b.WriteString("}\n\n")
	b.WriteString("// images lists the embedded modules, one per .cu file.\nvar images = []image{\n")
	for _, n := range names {
		fmt.Fprintf(&b, "\t{name: %q, fatbin: %sFatbin, ptx: %sPTX},\n", n, n, n)
	}
	b.WriteString("}\n")
	return format.Source(b.Bytes())
}
