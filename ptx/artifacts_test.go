package ptx

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The embedded artifacts must come from the sources in this directory.
func TestArtifactsMatchSources(t *testing.T) {
	var files []string
	for _, glob := range []string{"*.cu", "*.cuh"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no kernel sources found")
	}
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		got := hex.EncodeToString(sum[:])
		want, ok := sourceHashes[f]
		switch {
		case !ok:
			t.Errorf("%s is not in zkernels.go: run go generate ./ptx (nvcc 11.x or 12.x)", f)
		case got != want:
			t.Errorf("%s changed since its artifacts were built (sha256 %s, built from %s): run go generate ./ptx", f, got[:12], want[:12])
		}
		seen[f] = true
	}
	for f := range sourceHashes {
		if !seen[f] {
			t.Errorf("zkernels.go embeds artifacts of %s, which no longer exists: run go generate ./ptx", f)
		}
	}
	t.Logf("%s\n%s\n%s", NVCCVersion, nvccFatbinCommand, nvccPTXCommand)
}

// fatbinMagic starts every fatbin (fatbinary.h).
const fatbinMagic = 0xBA55ED50

func TestEmbeddedImages(t *testing.T) {
	for _, img := range images {
		if len(img.fatbin) < 16 || binary.LittleEndian.Uint32(img.fatbin) != fatbinMagic {
			t.Errorf("%s.fatbin: no fatbin header", img.name)
		}
		if !strings.Contains(img.ptx, ".target sm_52") {
			t.Errorf("%s.ptx: not compute_52 PTX", img.name)
		}
	}
}

var (
	entryRE = regexp.MustCompile(`^\.visible \.entry (\w+)\(`)
	paramRE = regexp.MustCompile(`^\s*\.param \.(\w+) \w+`)
)

// ptxEntries returns each kernel of a PTX text with its parameter kinds in
// kernelTable's notation.
func ptxEntries(t *testing.T, ptx string) map[string]string {
	entries := map[string]string{}
	var cur string
	in := false
	s := bufio.NewScanner(strings.NewReader(ptx))
	for s.Scan() {
		line := s.Text()
		if m := entryRE.FindStringSubmatch(line); m != nil {
			cur, in = m[1], true
			entries[cur] = ""
			continue
		}
		if !in {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), ")") {
			in = false
			continue
		}
		m := paramRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("kernel %s: unparsed parameter line %q", cur, line)
		}
		var kind string
		switch m[1] {
		case "u64", "b64", "s64":
			kind = "p"
		case "u32", "s32", "b32":
			kind = "i"
		case "f32":
			kind = "f"
		default:
			kind = "?" + m[1]
		}
		entries[cur] += kind
	}
	return entries
}

// Every kernel the Go side launches exists in the PTX with the parameters
// the launcher passes.
func TestKernelTableMatchesPTX(t *testing.T) {
	byModule := map[string]map[string]string{}
	for _, img := range images {
		byModule[img.name] = ptxEntries(t, img.ptx)
	}
	used := map[string]bool{}
	for _, spec := range kernelTable {
		if spec.name == "" {
			continue // kvKernel reports it absent
		}
		entries, ok := byModule[spec.module]
		if !ok {
			t.Errorf("%s: no module %s", spec.name, spec.module)
			continue
		}
		got, ok := entries[spec.name]
		if !ok {
			t.Errorf("%s: not in %s.ptx", spec.name, spec.module)
			continue
		}
		if got != spec.params {
			t.Errorf("%s: PTX parameters %q (%d), kernelTable %q (%d)", spec.name, got, len(got), spec.params, len(spec.params))
		}
		used[spec.module+"."+spec.name] = true
	}
	for mod, entries := range byModule {
		for name := range entries {
			if !used[mod+"."+name] {
				t.Errorf("%s.ptx defines %s, which kernelTable does not list", mod, name)
			}
		}
	}
}
