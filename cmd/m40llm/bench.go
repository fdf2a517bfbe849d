package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	flags := append(modelFlags(),
		&cli.IntFlag{Name: "n-prompt", Aliases: []string{"p"}, Value: 512, Usage: "prompt-processing test length (0: skip)"},
		&cli.IntFlag{Name: "n-gen", Aliases: []string{"n"}, Value: 128, Usage: "generation test length (0: skip)"},
		&cli.IntFlag{Name: "repetitions", Aliases: []string{"r"}, Value: 5, Usage: "runs per test"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "md", Usage: "md or json (llama-bench's JSON fields plus m40llm's)"},
		&cli.BoolFlag{Name: "json", Usage: "same as --output json"},
	)
	return &cli.Command{
		Name:  "bench",
		Usage: "measure prompt processing (pp) and generation (tg) speed, as llama-bench does",
		Flags: flags,
		Action: func(c *cli.Context) error {
			np, ng, reps := c.Int("n-prompt"), c.Int("n-gen"), c.Int("repetitions")
			if np < 0 || ng < 0 || reps < 1 || np == 0 && ng == 0 {
				return usageErrorf("bench needs -p ≥ 0, -n ≥ 0 (not both 0) and -r ≥ 1")
			}
			format := c.String("output")
			if c.Bool("json") {
				format = "json"
			}
			if format != "md" && format != "json" {
				return usageErrorf("--output %q: want md or json", format)
			}
			if !c.IsSet("ctx-size") {
				// Room for the longest test, as llama-bench sizes its context.
				if err := c.Set("ctx-size", fmt.Sprint(max(np, ng+1))); err != nil {
					return err
				}
			}
			m, err := loadModel(c, 1)
			if err != nil {
				return err
			}
			defer m.Close()
			if np > m.CtxSize() || ng+1 > m.CtxSize() {
				return usageErrorf("the tests need %d positions, --ctx-size is %d", max(np, ng+1), m.CtxSize())
			}
			b := &bencher{m: m, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
			var results []benchResult
			if np > 0 {
				r, err := b.run(c.Context, c.String("model"), np, 0, reps)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			if ng > 0 {
				r, err := b.run(c.Context, c.String("model"), 0, ng, reps)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			if format == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(results)
			}
			return writeBenchTable(c.App.Writer, results)
		},
	}
}

// benchResult is one test's record. Field names follow llama-bench's JSON
// output; the fields after SamplesTS are m40llm's additions.
type benchResult struct {
	BuildCommit  string    `json:"build_commit"`
	CPUInfo      string    `json:"cpu_info"`
	GPUInfo      string    `json:"gpu_info"`
	Backends     string    `json:"backends"`
	ModelFile    string    `json:"model_filename"`
	ModelType    string    `json:"model_type"`
	ModelSize    int64     `json:"model_size"`
	ModelParams  int64     `json:"model_n_params"`
	NBatch       int       `json:"n_batch"`
	NThreads     int       `json:"n_threads"`
	TypeK        string    `json:"type_k"`
	TypeV        string    `json:"type_v"`
	NPrompt      int       `json:"n_prompt"`
	NGen         int       `json:"n_gen"`
	TestTime     string    `json:"test_time"`
	AvgNS        int64     `json:"avg_ns"`
	StddevNS     int64     `json:"stddev_ns"`
	AvgTS        float64   `json:"avg_ts"`
	StddevTS     float64   `json:"stddev_ts"`
	SamplesNS    []int64   `json:"samples_ns"`
	SamplesTS    []float64 `json:"samples_ts"`
	WeightBytes  int64     `json:"weight_bytes"`
	EffectiveGBs float64   `json:"effective_gb_per_s"`
	// DecodeBytes is the weight bytes one decode step reads (as held on
	// the GPU, quantized matrices in their own encoding; the stored tensors
	// on the CPU), EffectiveGBs that times tok/s.
	DecodeBytes int64 `json:"decode_bytes_per_token"`
	// PeakGBs is the device's theoretical memory bandwidth and
	// PeakFraction EffectiveGBs over it (GPU decode tests only).
	PeakGBs      float64 `json:"device_bandwidth_gb_per_s,omitempty"`
	PeakFraction float64 `json:"bandwidth_fraction,omitempty"`
	// GPUMemory is the device memory the backend holds; GPUDeviceUsed
	// what every process holds on the device.
	GPUMemory     int64 `json:"gpu_memory_used,omitempty"`
	GPUDeviceUsed int64 `json:"gpu_memory_device_used,omitempty"`
	// LoadSeconds is the model load time (file to ready), LoadGBs the
	// file's weight bytes over it.
	LoadSeconds float64 `json:"load_seconds"`
	LoadGBs     float64 `json:"load_gb_per_s"`
}

type bencher struct {
	m   *model.Model
	rng *rand.Rand
}

func (b *bencher) tokens(n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(b.rng.IntN(b.m.Config.VocabSize))
	}
	return ids
}

// run times reps runs (after one warm-up) of a prompt of np tokens, or of
// ng one-token decode steps starting from an empty cache, as llama-bench's
// pp and tg tests do.
func (b *bencher) run(ctx context.Context, path string, np, ng, reps int) (benchResult, error) {
	s, err := b.m.NewSession(0)
	if err != nil {
		return benchResult{}, err
	}
	once := func() (time.Duration, error) {
		s.Reset()
		if np > 0 {
			ids := b.tokens(np)
			start := time.Now()
			_, err := s.Eval(ctx, ids)
			return time.Since(start), err
		}
		first := b.tokens(1)
		if b.m.Tokenizer.AddBOS() {
			first[0] = b.m.Tokenizer.BOS()
		}
		ids := append(first, b.tokens(ng-1)...)
		start := time.Now()
		for _, id := range ids {
			if _, err := s.Eval(ctx, []int32{id}); err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
	if _, err := once(); err != nil {
		return benchResult{}, err
	}
	n := np + ng
	r := benchResult{
		BuildCommit: version, Backends: b.m.Backend().Name(), ModelFile: filepath.Base(path),
		ModelType: fmt.Sprintf("%s %d layers %d dim", b.m.Config.Arch, b.m.Config.Layers, b.m.Config.Dim),
		ModelSize: b.m.Weights.Bytes, NBatch: b.m.BatchSize(), TypeK: "f32", TypeV: "f32",
		NPrompt: np, NGen: ng, TestTime: time.Now().UTC().Format(time.RFC3339),
		WeightBytes: b.m.Weights.Bytes,
	}
	if t, ok := b.m.Backend().(interface{ Threads() int }); ok {
		r.NThreads = t.Threads()
	}
	r.DecodeBytes = r.WeightBytes
	r.LoadSeconds = b.m.LoadTime.Seconds()
	r.LoadGBs = float64(r.WeightBytes) / r.LoadSeconds / 1e9
	if g, ok := b.m.Backend().(*cuda.Backend); ok {
		r.GPUInfo = g.Describe()
		r.TypeK, r.TypeV = "f16", "f16"
		r.DecodeBytes = g.DecodeBytes(b.m.Weights)
		r.PeakGBs = g.Device().Bandwidth() / 1e9
	}
	for range reps {
		d, err := once()
		if err != nil {
			return r, err
		}
		r.SamplesNS = append(r.SamplesNS, d.Nanoseconds())
		r.SamplesTS = append(r.SamplesTS, float64(n)/d.Seconds())
	}
	r.AvgNS, r.StddevNS = meanStd(r.SamplesNS)
	r.AvgTS, r.StddevTS = meanStdF(r.SamplesTS)
	if ng > 0 {
		// Decode reads every weight once per token.
		r.EffectiveGBs = float64(r.DecodeBytes) * r.AvgTS / 1e9
		if r.PeakGBs > 0 {
			r.PeakFraction = r.EffectiveGBs / r.PeakGBs
		}
	}
	if mr, ok := b.m.Backend().(model.MemoryReporter); ok {
		u := mr.MemoryUsage()
		r.GPUMemory, r.GPUDeviceUsed = u.Total(), u.DeviceUsed
	}
	return r, nil
}

func meanStd(xs []int64) (int64, int64) {
	fs := make([]float64, len(xs))
	for i, x := range xs {
		fs[i] = float64(x)
	}
	m, s := meanStdF(fs)
	return int64(m), int64(s)
}

func meanStdF(xs []float64) (float64, float64) {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}

func writeBenchTable(w io.Writer, rs []benchResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| model\t| size\t| backend\t| threads\t| test\t| t/s\t| weights GB/s\t| of peak\t| GPU memory\t|")
	fmt.Fprintln(tw, "| ---\t| ---:\t| ---\t| ---:\t| ---\t| ---:\t| ---:\t| ---:\t| ---:\t|")
	for _, r := range rs {
		test := fmt.Sprintf("pp%d", r.NPrompt)
		gbs, frac, mem := "", "", ""
		if r.NGen > 0 {
			test = fmt.Sprintf("tg%d", r.NGen)
			gbs = fmt.Sprintf("%.2f", r.EffectiveGBs)
			if r.PeakFraction > 0 {
				frac = fmt.Sprintf("%.0f%%", 100*r.PeakFraction)
			}
		}
		if r.GPUMemory > 0 {
			mem = humanBytes(r.GPUMemory)
		}
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %d\t| %s\t| %.2f ± %.2f\t| %s\t| %s\t| %s\t|\n",
			strings.TrimSuffix(r.ModelFile, ".gguf"), humanBytes(r.ModelSize), r.Backends, r.NThreads, test, r.AvgTS, r.StddevTS, gbs, frac, mem)
	}
	if len(rs) > 0 {
		r := rs[0]
		if r.GPUInfo != "" {
			fmt.Fprintf(tw, "\n%s; peak %.0f GB/s\n", r.GPUInfo, r.PeakGBs)
		}
		fmt.Fprintf(tw, "load: %.2f s, %.2f GB/s\n", r.LoadSeconds, r.LoadGBs)
	}
	return tw.Flush()
}
