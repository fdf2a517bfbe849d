package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	var flags []cli.Flag
	for _, f := range modelFlags() {
		// Lists, as llama-bench takes them: the model is loaded once per
		// combination of -b and -t.
		switch f.Names()[0] {
		case "batch-size":
			f = &cli.StringFlag{Name: "batch-size", Aliases: []string{"b"}, Value: fmt.Sprint(model.DefaultBatchSize), Usage: "at most `N` tokens per forward pass; a comma list runs each"}
		case "threads":
			f = &cli.StringFlag{Name: "threads", Aliases: []string{"t"}, Value: "0", Usage: "`N` CPU threads (0: one per CPU); a comma list runs each"}
		case "n-gpu-layers":
			f = &cli.StringFlag{Name: "n-gpu-layers", Aliases: []string{"ngl"}, Value: "auto", Usage: "`N` layers on the GPUs (the last N, as llama.cpp; 0: the CPU; the layer count + 1 or more, such as 99: all); auto: as many as fit; a comma list runs each"}
		case "cache-type-k", "cache-type-v":
			sf := *f.(*cli.StringFlag)
			sf.Usage += "; a comma list runs each"
			f = &sf
		}
		flags = append(flags, f)
	}
	flags = append(flags,
		&cli.StringFlag{Name: "n-prompt", Aliases: []string{"p"}, Value: "512", Usage: "prompt-processing tests of `N` tokens, a comma list (0: none)"},
		&cli.StringFlag{Name: "n-gen", Aliases: []string{"n"}, Value: "128", Usage: "generation tests of `N` tokens, a comma list (0: none)"},
		&cli.IntFlag{Name: "repetitions", Aliases: []string{"r"}, Value: 5, Usage: "`N` runs per test"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "md", Usage: "`FORMAT`: md, csv, json or jsonl (llama-bench's fields plus m40llm's)"},
		&cli.BoolFlag{Name: "json", Usage: "same as --output json"},
	)
	return &cli.Command{
		Name:  "bench",
		Usage: "measure prompt processing (pp) and generation (tg) speed, as llama-bench does; every combination of the lists is one test",
		Flags: flags,
		Action: func(c *cli.Context) error {
			var lists [4][]int
			for i, name := range []string{"n-prompt", "n-gen", "batch-size", "threads"} {
				l, err := intList(c.String(name))
				if err != nil {
					return usageErrorf("--%s: %v", name, err)
				}
				lists[i] = l
			}
			nps, ngs, batches, threads := lists[0], lists[1], lists[2], lists[3]
			nps, ngs = slices.DeleteFunc(nps, isZero), slices.DeleteFunc(ngs, isZero)
			reps := c.Int("repetitions")
			if reps < 1 || len(nps) == 0 && len(ngs) == 0 {
				return usageErrorf("bench needs -p ≥ 0, -n ≥ 0 (not all 0) and -r ≥ 1")
			}
			format := c.String("output")
			if c.Bool("json") {
				format = "json"
			}
			if !slices.Contains([]string{"md", "csv", "json", "jsonl"}, format) {
				return usageErrorf("--output %q: want md, csv, json or jsonl", format)
			}
			need := 1
			for _, np := range nps {
				need = max(need, np)
			}
			for _, ng := range ngs {
				need = max(need, ng+1)
			}
			if !c.IsSet("ctx-size") {
				// Room for the longest test, as llama-bench sizes its context.
				if err := c.Set("ctx-size", fmt.Sprint(need)); err != nil {
					return err
				}
			}
			typesK, typesV := strings.Split(c.String("cache-type-k"), ","), strings.Split(c.String("cache-type-v"), ",")
			ngls := strings.Split(c.String("n-gpu-layers"), ",")
			var results []benchResult
			for _, ngl := range ngls {
				if err := c.Set("n-gpu-layers", strings.TrimSpace(ngl)); err != nil {
					return err
				}
				if _, err := parsePlacement(c); err != nil {
					return err
				}
				for _, batch := range batches {
					for _, th := range threads {
						for _, tk := range typesK {
							for _, tv := range typesV {
								if err := errors.Join(c.Set("batch-size", fmt.Sprint(batch)), c.Set("threads", fmt.Sprint(th)),
									c.Set("cache-type-k", tk), c.Set("cache-type-v", tv)); err != nil {
									return err
								}
								if _, _, err := cacheTypes(c); err != nil {
									return err
								}
								rs, err := benchModel(c, nps, ngs, reps, need)
								results = append(results, rs...)
								if err != nil {
									return err
								}
							}
						}
					}
				}
			}
			return writeBench(c.App.Writer, format, results)
		},
	}
}

func isZero(n int) bool { return n == 0 }

// intList parses a comma list of integers ≥ 0 ("512,1024").
func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q: want integers ≥ 0, separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// benchModel loads the model as the flags say and runs the pp test of
// each length in nps and the tg test of each in ngs.
func benchModel(c *cli.Context, nps, ngs []int, reps, need int) ([]benchResult, error) {
	m, err := loadModel(c, 1)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if need > m.CtxSize() {
		return nil, usageErrorf("the tests need %d positions, --ctx-size is %d", need, m.CtxSize())
	}
	b := &bencher{m: m, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	// The parameter count, as llama-bench reports it: every tensor's
	// elements (the file was just loaded, so it opens).
	f, err := gguf.Open(c.String("model"))
	if err != nil {
		return nil, err
	}
	b.params = f.ParameterCount()
	b.modelType = modelType(m.Config.Arch, b.params, f)
	f.Close()
	var results []benchResult
	for _, np := range nps {
		r, err := b.run(c.Context, c.String("model"), np, 0, reps)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	for _, ng := range ngs {
		r, err := b.run(c.Context, c.String("model"), 0, ng, reps)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

// writeBench writes the results as format says: md (a table), json (an
// array), jsonl (one object per line) or csv (a header of the JSON field
// names, then one row per test; the sample arrays are left out, as
// llama-bench's csv does).
func writeBench(w io.Writer, format string, rs []benchResult) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rs)
	case "jsonl":
		enc := json.NewEncoder(w)
		for _, r := range rs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	case "csv":
		return writeBenchCSV(w, rs)
	}
	return writeBenchTable(w, rs)
}

func writeBenchCSV(w io.Writer, rs []benchResult) error {
	t := reflect.TypeFor[benchResult]()
	var header []string
	var fields []int
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if t.Field(i).Type.Kind() == reflect.Slice {
			continue
		}
		header = append(header, name)
		fields = append(fields, i)
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(header); err != nil {
		return err
	}
	for _, r := range rs {
		v := reflect.ValueOf(r)
		row := make([]string, len(fields))
		for j, i := range fields {
			row[j] = fmt.Sprint(v.Field(i).Interface())
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// buildCommit returns the short VCS revision the binary was built from
// ("+" when the tree was modified), or "unknown".
func buildCommit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	rev = rev[:min(len(rev), 7)]
	if dirty {
		rev += "+"
	}
	return rev
}

// cpuInfo returns the CPU's model name from /proc/cpuinfo, or the
// architecture where there is none.
func cpuInfo() string {
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

// modelType describes a model as llama-bench does: the architecture, the
// size in parameters rounded as llama.cpp names sizes ("7B" for 6.74 G,
// "494M") and the file type ("llama 7B Q4_K - Medium"); without
// general.file_type, guessed from the type holding most matrix elements,
// as llama.cpp's loader guesses it ("all F32 (guessed)").
func modelType(arch string, params int64, f *gguf.File) string {
	var size string
	switch {
	case params >= 1e9:
		size = fmt.Sprintf("%.0fB", float64(params)/1e9)
	case params >= 1e6:
		size = fmt.Sprintf("%.0fM", float64(params)/1e6)
	default:
		size = fmt.Sprintf("%.0fK", float64(params)/1e3)
	}
	return arch + " " + size + " " + fileTypeName(f)
}

// fileTypeName names the file type of f ("Q4_K - Medium"): its
// general.file_type, or, without one, the type holding most matrix
// elements, as llama.cpp's loader guesses it ("all F32 (guessed)").
func fileTypeName(f *gguf.File) string {
	if v, err := f.Metadata.Uint32(gguf.KeyFileType); err == nil {
		return gguf.FileTypeName(v)
	}
	top := f.MatrixType()
	ft := top.String()
	if top == gguf.TypeF32 {
		ft = "all F32"
	}
	return ft + " (guessed)"
}

// benchResult is one test's record. Field names follow llama-bench's JSON
// output; the fields after SamplesTS are m40llm's additions.
type benchResult struct {
	BuildCommit string `json:"build_commit"`
	BuildNumber int    `json:"build_number"` // llama.cpp's commit count; 0: not counted here
	CPUInfo     string `json:"cpu_info"`
	GPUInfo     string `json:"gpu_info"`
	Backends    string `json:"backends"` // llama.cpp's backend names: CPU or CUDA
	ModelFile   string `json:"model_filename"`
	ModelType   string `json:"model_type"`
	ModelSize   int64  `json:"model_size"`
	ModelParams int64  `json:"model_n_params"`
	NBatch      int    `json:"n_batch"`
	NUBatch     int    `json:"n_ubatch"` // one forward pass takes up to n_batch tokens
	// NGPULayers is the layers on the GPU: all on the CUDA backend, none
	// on the CPU.
	NGPULayers int `json:"n_gpu_layers"`
	NThreads   int `json:"n_threads"`
	// CPUMask, CPUStrict and Poll: the worker pool is not pinned to CPUs
	// and its workers block rather than poll (llama.cpp's default is 50%
	// polling).
	CPUMask   string `json:"cpu_mask"`
	CPUStrict bool   `json:"cpu_strict"`
	Poll      int    `json:"poll"`
	TypeK     string `json:"type_k"`
	TypeV     string `json:"type_v"`
	// NCPUMoE 0: no expert tensors are kept on the CPU (no MoE models).
	NCPUMoE int `json:"n_cpu_moe"`
	// SplitMode "none": one device holds the whole model; MainGPU its
	// index on CUDA; Devices the device ("cpu", "cuda:0").
	SplitMode   string `json:"split_mode"`
	MainGPU     int    `json:"main_gpu"`
	NoKVOffload bool   `json:"no_kv_offload"`
	// FlashAttn 1: the CUDA attention kernels are fused (softmax and the
	// weighted sum in one pass over the cache); 0 on the CPU backend.
	FlashAttn    int    `json:"flash_attn"`
	Devices      string `json:"devices"`
	TensorSplit  string `json:"tensor_split"`
	BuftOverride string `json:"tensor_buft_overrides"`
	// LoadMode "mmap": tensors are read from the mapped file.
	LoadMode    string `json:"load_mode"`
	Embeddings  bool   `json:"embeddings"`
	NoOpOffload int    `json:"no_op_offload"`
	NoHost      bool   `json:"no_host"`
	// FitTarget, FitMinCtx 0: no automatic fitting to memory.
	FitTarget int `json:"fit_target"`
	FitMinCtx int `json:"fit_min_ctx"`
	NPrompt   int `json:"n_prompt"`
	NGen      int `json:"n_gen"`
	// NDepth 0: the tests start from an empty KV cache (no -d).
	NDepth       int       `json:"n_depth"`
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
	// Placement says which device holds which layers when they are split
	// (model.Split.Placement).
	Placement string `json:"placement,omitempty"`
	// Backend is m40llm's name of the device the test ran on ("cpu",
	// "cuda:0").
	Backend string `json:"backend"`
}

type bencher struct {
	m         *model.Model
	rng       *rand.Rand
	params    int64  // tensor elements of the file
	modelType string // as llama-bench names it (see modelType)
}

func (b *bencher) tokens(n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(b.rng.IntN(b.m.Config.VocabSize))
	}
	return ids
}

// benchGPU returns the GPU backend the model runs on (the first GPU
// stage of a split) and the layers on GPUs, +1 with the output there, as
// llama-bench's n_gpu_layers counts them; nil and 0 on the CPU.
func benchGPU(m *model.Model) (*cuda.Backend, int) {
	switch be := m.Backend().(type) {
	case *cuda.Backend:
		return be, m.Config.Layers + 1
	case *model.Split:
		var first *cuda.Backend
		n := 0
		for i, st := range be.Stages() {
			g, ok := st.Backend.(*cuda.Backend)
			if !ok {
				continue
			}
			if first == nil {
				first = g
			}
			n += st.Layers
			if i == be.OutputStage() {
				n++
			}
		}
		return first, n
	}
	return nil, 0
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
		BuildCommit: buildCommit(), CPUInfo: cpuInfo(), Backends: "CPU", Backend: b.m.Backend().Name(), ModelFile: filepath.Base(path),
		CPUMask: "0x0", SplitMode: "none", Devices: b.m.Backend().Name(), TensorSplit: "0.00", BuftOverride: "none",
		LoadMode:  "mmap",
		ModelType: b.modelType, ModelParams: b.params,
		ModelSize: b.m.Weights.Bytes, NBatch: b.m.BatchSize(), NUBatch: b.m.BatchSize(), TypeK: b.m.KV().TypeK.String(), TypeV: b.m.KV().TypeV.String(),
		NPrompt: np, NGen: ng, TestTime: time.Now().UTC().Format(time.RFC3339),
		WeightBytes: b.m.Weights.Bytes,
	}
	if t, ok := b.m.Backend().(interface{ Threads() int }); ok {
		r.NThreads = t.Threads()
	}
	r.DecodeBytes = r.WeightBytes
	r.LoadSeconds = b.m.LoadTime.Seconds()
	r.LoadGBs = float64(r.WeightBytes) / r.LoadSeconds / 1e9
	if g, gpuLayers := benchGPU(b.m); g != nil {
		r.GPUInfo = g.Describe()
		r.Backends = "CUDA"
		r.FlashAttn = 1
		if n, err := strconv.Atoi(strings.TrimPrefix(g.Name(), "cuda:")); err == nil {
			r.MainGPU = n
		}
		r.NGPULayers = gpuLayers
		if _, alone := b.m.Backend().(*cuda.Backend); alone {
			// Everything on the one GPU: its bytes and bandwidth.
			r.DecodeBytes = g.DecodeBytes(b.m.Weights)
			r.PeakGBs = g.Device().Bandwidth() / 1e9
		}
	}
	if sp, ok := b.m.Backend().(*model.Split); ok {
		r.Placement = sp.Placement()
		r.Devices = sp.Name()
		r.SplitMode = "layer"
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
	fmt.Fprintln(tw, "| model\t| size\t| backend\t| threads\t| n_batch\t| test\t| t/s\t| weights GB/s\t| of peak\t| GPU memory\t|")
	fmt.Fprintln(tw, "| ---\t| ---:\t| ---\t| ---:\t| ---:\t| ---\t| ---:\t| ---:\t| ---:\t| ---:\t|")
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
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %d\t| %d\t| %s\t| %.2f ± %.2f\t| %s\t| %s\t| %s\t|\n",
			strings.TrimSuffix(r.ModelFile, ".gguf"), humanBytes(r.ModelSize), r.Backend, r.NThreads, r.NBatch, test, r.AvgTS, r.StddevTS, gbs, frac, mem)
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
