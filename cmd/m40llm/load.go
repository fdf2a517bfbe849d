package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/urfave/cli/v2"
)

// modelFlags are the flags of every command that loads a model.
func modelFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "the GGUF model `FILE` (required)", EnvVars: []string{"M40LLM_MODEL"}},
		&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Usage: "`N` KV cache positions per sequence (0: the model's training context length, at most 4096)"},
		&cli.IntFlag{Name: "batch-size", Aliases: []string{"b"}, Value: model.DefaultBatchSize, Usage: "at most `N` tokens per forward pass; longer prompts go in chunks"},
		&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Usage: "`N` CPU threads (0: one per CPU)"},
		&cli.StringFlag{Name: "backend", Value: "auto", Usage: "`NAME` of the backend: auto (CUDA when a usable GPU exists, else CPU), cpu or cuda"},
		&cli.IntFlag{Name: "device", Value: -1, Usage: "CUDA device ordinal `N` (-1: the first M40-class device, compute 5.2 or 5.3, else device 0)"},
		&cli.StringFlag{Name: "cache-type-k", Aliases: []string{"ctk"}, Value: "f16", Usage: "`TYPE` of the cached keys: " + model.CacheTypeNames()},
		&cli.StringFlag{Name: "cache-type-v", Aliases: []string{"ctv"}, Value: "f16", Usage: "`TYPE` of the cached values: " + model.CacheTypeNames()},
		&cli.BoolFlag{Name: "fp16-weights", Usage: "GPU: expand quantized weights to FP16 (2-7x the memory; faster with 8 or more parallel sequences today)"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "print load and memory details to stderr (chat and run: also the statistics of each reply)"},
	}, placementFlags()...)
}

// samplingFlags are the flags that configure the sampler (llama.cpp's
// names and defaults).
func samplingFlags() []cli.Flag {
	d := sample.DefaultParams()
	return []cli.Flag{
		&cli.Float64Flag{Name: "temp", Value: asWritten(d.Temperature), Usage: "temperature `T`; 0 is greedy"},
		&cli.IntFlag{Name: "top-k", Value: d.TopK, Usage: "keep the `K` most likely tokens (0: off)"},
		&cli.Float64Flag{Name: "top-p", Value: asWritten(d.TopP), Usage: "keep the smallest set of tokens with probability `P` together (1: off)"},
		&cli.Float64Flag{Name: "min-p", Value: asWritten(d.MinP), Usage: "drop tokens less likely than `P` times the most likely (0: off)"},
		&cli.Float64Flag{Name: "repeat-penalty", Value: asWritten(d.RepeatPenalty), Usage: "penalise the tokens seen in the last --repeat-last-n by the factor `R` (1: off)"},
		&cli.IntFlag{Name: "repeat-last-n", Value: d.RepeatLastN, Usage: "`N` tokens the penalties look back at (0: penalties off, -1: all)"},
		&cli.Float64Flag{Name: "presence-penalty", Usage: "subtract `X` from the logit of each token seen in the last --repeat-last-n (0: off)"},
		&cli.Float64Flag{Name: "frequency-penalty", Usage: "subtract `X` from a token's logit for each time it was seen in the last --repeat-last-n (0: off)"},
		&cli.Int64Flag{Name: "seed", Value: -1, Usage: "random `SEED` (-1: a new one each run; in chat, each reply)"},
	}
}

// asWritten returns the float64 nearest the shortest decimal that reads
// back as x (0.8 for float32(0.8), not 0.800000011920929), so that --help
// prints a float32 default as it is written; converted back to float32
// it is x again.
func asWritten(x float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
	return v
}

// samplingParams builds sampler parameters from the flags; the second
// result is the seed actually used.
func samplingParams(c *cli.Context) (sample.Params, uint64) {
	seed := uint64(c.Int64("seed"))
	if c.Int64("seed") < 0 {
		seed = uint64(time.Now().UnixNano())
	}
	return sample.Params{
		Temperature:      float32(c.Float64("temp")),
		TopK:             c.Int("top-k"),
		TopP:             float32(c.Float64("top-p")),
		MinP:             float32(c.Float64("min-p")),
		RepeatPenalty:    float32(c.Float64("repeat-penalty")),
		RepeatLastN:      c.Int("repeat-last-n"),
		PresencePenalty:  float32(c.Float64("presence-penalty")),
		FrequencyPenalty: float32(c.Float64("frequency-penalty")),
		Seed:             seed,
	}, seed
}

// newBackend returns the backend the flags ask for, for the model at path
// loaded with opts, and a one-line description of the choice and its
// reason: the CPU, one GPU, or layers split over GPUs and the CPU
// (--n-gpu-layers, --devices, --tensor-split; auto-fit by default). With
// --verbose it prints the driver library search on stderr when the search
// failed.
func newBackend(c *cli.Context, path string, opts model.Options) (model.Backend, string, error) {
	threads := c.Int("threads")
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	pl, err := parsePlacement(c)
	if err != nil {
		return nil, "", err
	}
	newCPU := func() model.Backend { return cpu.New(cpu.Options{Threads: threads}) }
	cpuWhy := func(why string) string { return fmt.Sprintf("cpu (%d threads): %s", threads, why) }
	switch name := c.String("backend"); name {
	case "cpu":
		if pl.ngl > 0 {
			return nil, "", usageErrorf("--n-gpu-layers %d with --backend cpu: the cpu backend runs every layer", pl.ngl)
		}
		return newCPU(), cpuWhy("as requested"), nil
	case "cuda", "auto":
		if pl.ngl == 0 {
			return newCPU(), cpuWhy("--n-gpu-layers 0"), nil
		}
		gpus, err := openGPUs(c, pl, gpuOptionsFromEnv())
		if err != nil {
			if c.Bool("verbose") {
				for _, l := range searchDetails(err) {
					fmt.Fprintf(c.App.ErrWriter, "m40llm: %s\n", l)
				}
			}
			if name == "cuda" || pl.devices != nil {
				return nil, "", fmt.Errorf("--backend %s: %w", name, err)
			}
			if pl.ngl > 0 {
				return newCPU(), cpuWhy(fmt.Sprintf("no GPU, --n-gpu-layers %d ignored: %v", pl.ngl, err)), nil
			}
			return newCPU(), cpuWhy("no GPU: " + err.Error()), nil
		}
		be, why, err := placeOnGPUs(pl, path, opts, gpus, newCPU)
		var fe *model.FitError
		if errors.As(err, &fe) && name == "auto" && pl.limit == 0 {
			return newCPU(), cpuWhy(err.Error()), nil
		}
		if err != nil {
			return nil, "", err
		}
		if _, ok := be.(*cpu.Backend); ok {
			why = cpuWhy("no layer on the GPU")
		}
		return be, why, nil
	default:
		return nil, "", usageErrorf("--backend %q: want auto, cpu or cuda", name)
	}
}

// openGPUs opens a CUDA backend for each device of --devices, or the one
// --device names (by default the first Tesla M40-class device, compute
// 5.2 or 5.3 (cudadrv.DeviceInfo.NativeCode), else device 0), each under
// --gpu-memory-limit. Its errors say precisely why no GPU can be used.
func openGPUs(c *cli.Context, pl placement, o gpuOptions) ([]*cuda.Backend, error) {
	sys, err := discover(o.driver)
	if err != nil {
		return nil, &noGPUError{reason: noGPUReason(sys, err), err: err}
	}
	devs := pl.devices
	if devs == nil {
		dev := c.Int("device")
		if dev < 0 {
			dev = 0
			for _, d := range sys.Devices {
				if d.NativeCode() {
					dev = d.Ordinal
					break
				}
			}
		}
		devs = []int{dev}
	}
	var gpus []*cuda.Backend
	for _, dev := range devs {
		if dev >= len(sys.Devices) {
			err = fmt.Errorf("device %d: there are %d CUDA devices (see m40llm devices)", dev, len(sys.Devices))
		} else {
			var g *cuda.Backend
			g, err = cuda.New(cuda.Options{Device: dev, Driver: o.driver, BLAS: o.blas, DisableCUBLAS: o.disableCUBLAS,
				FP16Weights: c.Bool("fp16-weights"), MemoryLimit: pl.limit})
			gpus = append(gpus, g)
		}
		if err != nil {
			for _, g := range gpus {
				if g != nil {
					g.Close()
				}
			}
			return nil, err
		}
	}
	return gpus, nil
}

// noGPUError says in one sentence why no GPU can be used, and keeps the
// driver's error for its class.
type noGPUError struct {
	reason string
	err    error
}

func (e *noGPUError) Error() string { return e.reason }
func (e *noGPUError) Unwrap() error { return e.err }

// maxSlots bounds --parallel: each slot holds a KV cache of --ctx-size
// positions, and every step holds a token of each.
const maxSlots = 1024

// checkModelFlags refuses, before anything is opened, flag values and
// combinations that cannot work (exit 2).
func checkModelFlags(c *cli.Context, slots int) error {
	ctx, batch, threads := c.Int("ctx-size"), c.Int("batch-size"), c.Int("threads")
	switch {
	case ctx < 0 || batch < 0:
		return usageErrorf("--ctx-size and --batch-size must not be negative")
	case threads < 0 || threads > cpu.MaxThreads():
		return usageErrorf("--threads %d: want 0 (all cores) to %d (%d× the %d CPUs)", threads, cpu.MaxThreads(), cpu.MaxThreads()/runtime.NumCPU(), runtime.NumCPU())
	case slots > maxSlots:
		return usageErrorf("--parallel %d: at most %d slots", slots, maxSlots)
	case c.IsSet("batch-size") && batch > 0 && batch < slots:
		return usageErrorf("--batch-size %d is smaller than --parallel %d: every step holds the next token of each slot", batch, slots)
	}
	if _, err := parsePlacement(c); err != nil {
		return err
	}
	_, _, err := cacheTypes(c)
	return err
}

// cacheTypes parses --cache-type-k and --cache-type-v. It refuses, as a
// usage error (exit 2) that lists the accepted values, a name that is not
// a type; both backends run every type. Head dimensions are checked by
// model.Load, before it loads anything.
func cacheTypes(c *cli.Context) (k, v model.CacheType, err error) {
	var ts [2]model.CacheType
	for i, name := range []string{"cache-type-k", "cache-type-v"} {
		val := c.String(name)
		t, perr := model.ParseCacheType(val)
		if perr != nil {
			return 0, 0, usageErrorf("--%s %q: not a cache type (accepted values: %s)", name, val, model.CacheTypeNames())
		}
		ts[i] = t
	}
	return ts[0], ts[1], nil
}

// loadModel loads the model the flags name, with slots KV-cache slots,
// reporting what it did on stderr.
func loadModel(c *cli.Context, slots int) (*model.Model, error) {
	if c.String("model") == "" {
		return nil, usageErrorf("no model: pass -m MODEL.gguf (or set M40LLM_MODEL)")
	}
	return loadModelFile(c, c.String("model"), slots)
}

// loadModelFile is loadModel for the model at path.
func loadModelFile(c *cli.Context, path string, slots int) (*model.Model, error) {
	if err := checkModelFlags(c, slots); err != nil {
		return nil, err
	}
	typeK, typeV, err := cacheTypes(c)
	if err != nil {
		return nil, err
	}
	stderr := c.App.ErrWriter
	var prog *progress
	opts := model.Options{
		CtxSize:    c.Int("ctx-size"),
		Slots:      slots,
		BatchSize:  c.Int("batch-size"),
		CacheTypeK: typeK,
		CacheTypeV: typeV,
		Progress: func(done, total int64) {
			if prog == nil {
				prog = newProgress(stderr, "loading "+filepath.Base(path), total)
			}
			prog.update(done, total)
		},
	}
	be, why, err := newBackend(c, path, opts)
	if err != nil {
		return nil, err
	}
	m, err := model.Load(path, be, opts)
	if prog != nil {
		prog.done()
	}
	if err != nil {
		be.Close()
		return nil, err
	}
	fmt.Fprintf(stderr, "m40llm: backend %s\n", why)
	if w := contextWarning(m.Config, m.CtxSize()); w != "" {
		fmt.Fprintf(stderr, "m40llm: warning: %s\n", w)
	}
	if c.Bool("verbose") {
		describeModel(stderr, path, m)
	}
	return m, nil
}

// contextWarning says, when a KV cache of ctxSize positions is longer
// than the context cfg was trained on, what that means: the RoPE scaling
// the file asks for, if any, applies as it is (m40llm stretches nothing
// itself), and past the training context output may degrade, as
// llama.cpp's n_ctx_train warning says. It is "" when the context fits.
func contextWarning(cfg *model.Config, ctxSize int) string {
	train := cfg.ContextLength
	if train <= 0 || ctxSize <= train {
		return ""
	}
	rope := "no RoPE scaling applies (the model file names none)"
	if cfg.RopeFreqScale != 1 {
		rope = fmt.Sprintf("the model file's linear RoPE scaling applies (factor %s)",
			strconv.FormatFloat(1/float64(cfg.RopeFreqScale), 'g', 4, 64))
	}
	return fmt.Sprintf("--ctx-size %d is more than the model's training context of %d positions; %s, and output past position %d may degrade",
		ctxSize, train, rope, train)
}

func describeModel(w io.Writer, path string, m *model.Model) {
	cfg := m.Config
	fmt.Fprintf(w, "m40llm: loaded %s in %v (%.2f GB/s): %s, %d layers, dim %d, %d/%d heads, ffn %d, vocab %d, %s of weights\n",
		path, m.LoadTime.Round(time.Millisecond), float64(m.Weights.Bytes)/m.LoadTime.Seconds()/1e9, cfg.Arch, cfg.Layers,
		cfg.Dim, cfg.Heads, cfg.KVHeads, cfg.FFNDim, cfg.VocabSize, humanBytes(m.Weights.Bytes))
	mr, gpu := m.Backend().(model.MemoryReporter)
	kv := m.KV()
	fmt.Fprintf(w, "m40llm: context %d positions x %d slots, KV cache %s (keys %s, values %s), batch %d\n",
		m.CtxSize(), m.Slots(), humanBytes(kv.Bytes()), kv.TypeK, kv.TypeV, m.BatchSize())
	if gpu {
		if b, ok := m.Backend().(*cuda.Backend); ok {
			fmt.Fprintf(w, "m40llm: matrix products for prompts: %s\n", b.BLASStatus())
		}
		fmt.Fprintf(w, "m40llm: %s\n", gpuMemory(mr.MemoryUsage()))
	}
}

// gpuMemory describes a backend's device memory in one line.
func gpuMemory(u model.MemoryUsage) string {
	s := fmt.Sprintf("GPU memory in use: %s (weights %s, KV cache %s, activations %s, scratch %s)",
		humanBytes(u.Total()), humanBytes(u.Weights), humanBytes(u.KV), humanBytes(u.Activations), humanBytes(u.Scratch))
	if u.DeviceTotal > 0 {
		s += fmt.Sprintf("; device: %s of %s in use by all processes", humanBytes(u.DeviceUsed), humanBytes(u.DeviceTotal))
	}
	return s
}
