package cpu

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/synth"
)

var stepThreads = flag.String("threads", "1,2", "comma-separated thread counts of BenchmarkDecodeStep")

var stepSpin = flag.Duration("poolspin", poolSpin, "poolSpin of BenchmarkDecodeStep")

// benchThreads returns the thread counts of -threads (1 for an entry that
// is not a positive number).
func benchThreads() []int {
	var ts []int
	for _, f := range strings.Split(*stepThreads, ",") {
		t, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || t < 1 {
			t = 1
		}
		ts = append(ts, t)
	}
	return ts
}

// stepModels caches the synthetic models the step benchmarks load, one
// file per shape for the whole test binary.
var stepModels struct {
	sync.Mutex
	dir   string
	paths map[string]string
}

// stepModel writes (once) a synthetic Q4_0 model of the named preset with
// the given number of layers and returns its path.
func stepModel(b *testing.B, preset string, layers int) string {
	b.Helper()
	stepModels.Lock()
	defer stepModels.Unlock()
	key := fmt.Sprintf("%s-%d", preset, layers)
	if p, ok := stepModels.paths[key]; ok {
		return p
	}
	if stepModels.dir == "" {
		dir, err := os.MkdirTemp("", "m40llm-step")
		if err != nil {
			b.Fatal(err)
		}
		stepModels.dir, stepModels.paths = dir, map[string]string{}
	}
	p := synth.Presets[preset]
	p.Layers = layers
	path := filepath.Join(stepModels.dir, key+".gguf")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := synth.Write(f, p, synth.Options{Type: gguf.TypeQ4_0, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	stepModels.paths[key] = path
	return path
}

// stepBytes returns the bytes of the tensors one decode step reads whole:
// all but the token embedding table (one row of it is read).
func stepBytes(b *testing.B, path string) int64 {
	f, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var n int64
	for _, t := range f.Tensors {
		if t.Name != "token_embd.weight" {
			n += t.Size
		}
	}
	return n
}

// BenchmarkDecodeStep measures one decode step (one token at position
// 32, after a 32-token prompt) of synthetic Q4_0 models of real widths and
// a few layers, for 1 and 2 threads (more with -threads). bytes/s counts
// the weights the step reads (stepBytes). Run with -cpuprofile for the cost of each
// op; the lead's 16-core command is in docs/PERFORMANCE.md.
func BenchmarkDecodeStep(b *testing.B) {
	poolSpin = *stepSpin
	defer func() {
		if stepModels.dir != "" {
			os.RemoveAll(stepModels.dir)
			stepModels.dir, stepModels.paths = "", nil
		}
	}()
	shapes := []struct {
		preset string
		layers int
	}{{"tinyllama", 4}, {"llama2-7b", 2}}
	for _, sh := range shapes {
		for _, threads := range benchThreads() {
			b.Run(fmt.Sprintf("%s-%dL/t%d", sh.preset, sh.layers, threads), func(b *testing.B) {
				path := stepModel(b, sh.preset, sh.layers)
				be := New(Options{Threads: threads})
				m, err := model.Load(path, be, model.Options{CtxSize: 128})
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				s, err := m.NewSession(0)
				if err != nil {
					b.Fatal(err)
				}
				prompt := make([]int32, 32)
				for i := range prompt {
					prompt[i] = int32(i*7919+13) % int32(m.Config.VocabSize)
				}
				ctx := context.Background()
				if _, err := s.Eval(ctx, prompt); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(stepBytes(b, path))
				runtime.GC() // the garbage of writing the model, not of the steps
				b.ResetTimer()
				for b.Loop() {
					s.Truncate(len(prompt))
					if _, err := s.Eval(ctx, []int32{42}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
			})
		}
	}
}
