package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/urfave/cli/v2"
)

// placementFlags are the flags that place layers on GPUs and the CPU.
func placementFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "n-gpu-layers", Aliases: []string{"ngl"}, Value: "auto",
			Usage: "`N` layers on the GPUs, the last N as llama.cpp places them (the layer count + 1 or more, such as 99: the output too; 0: all on the CPU); auto: as many as fit"},
		&cli.StringFlag{Name: "tensor-split", Aliases: []string{"ts"},
			Usage: "`P0,P1,...` shares of the GPU layers for each device of --devices (default: by free memory)"},
		&cli.StringFlag{Name: "devices",
			Usage: "`LIST` of CUDA device ordinals that take layers, in order, such as 0,1; one may repeat (0,0) (default: --device)"},
		&cli.StringFlag{Name: "gpu-memory-limit",
			Usage: "use at most `SIZE` of each GPU's memory (bytes, or with K, M, G, T: binary units; KB, MB, GB, TB: decimal) (default: its free memory)"},
	}
}

// placement is the parsed placement flags.
type placement struct {
	ngl     int // -1: auto
	split   []float64
	devices []int // nil: --device
	limit   int64
}

// maxDevices bounds --devices.
const maxDevices = 16

// parsePlacement reads the placement flags; its errors are usage errors.
func parsePlacement(c *cli.Context) (placement, error) {
	p := placement{ngl: -1}
	if s := c.String("n-gpu-layers"); s != "auto" && s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, usageErrorf("--n-gpu-layers %q: want auto or a number of layers ≥ 0", s)
		}
		p.ngl = n
	}
	if s := c.String("devices"); s != "" {
		for f := range strings.SplitSeq(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 {
				return p, usageErrorf("--devices %q: want device ordinals ≥ 0 separated by commas", s)
			}
			p.devices = append(p.devices, n)
		}
		if len(p.devices) > maxDevices {
			return p, usageErrorf("--devices %q: at most %d devices", s, maxDevices)
		}
		if c.IsSet("device") {
			return p, usageErrorf("--device %d and --devices %q: give one of them", c.Int("device"), s)
		}
	}
	if s := c.String("tensor-split"); s != "" {
		sum := 0.0
		for f := range strings.SplitSeq(s, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
				return p, usageErrorf("--tensor-split %q: want numbers ≥ 0 separated by commas", s)
			}
			p.split = append(p.split, v)
			sum += v
		}
		if sum == 0 {
			return p, usageErrorf("--tensor-split %q: every share is 0", s)
		}
		if n := max(len(p.devices), 1); len(p.split) != n {
			return p, usageErrorf("--tensor-split %q: %d shares for %d devices (--devices)", s, len(p.split), n)
		}
	}
	if s := c.String("gpu-memory-limit"); s != "" {
		n, err := parseSize(s)
		if err != nil || n <= 0 {
			return p, usageErrorf("--gpu-memory-limit %q: want a size above 0 such as 20GiB, 8000M or 1500000000", s)
		}
		p.limit = n
	}
	return p, nil
}

// parseSize reads a byte count: digits (a fraction allowed) and an
// optional unit, K/KiB, M/MiB, G/GiB, T/TiB binary, KB, MB, GB, TB
// decimal, B bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}[strings.ToLower(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("unit %q", unit)
	}
	b := v * mult
	if b >= math.MaxInt64 {
		return 0, errors.New("too large")
	}
	return int64(b), nil
}

// placeOnGPUs returns the backend the placement flags give for the model
// at path loaded with opts, over the GPUs of --devices (already open, in
// order; taken over) and newCPU's backend, and a one-line description. It
// fails when the model cannot be planned, on a layout the flags make
// impossible, or when auto-fit finds no layer that fits (a *model.FitError).
func placeOnGPUs(pl placement, path string, opts model.Options, gpus []*cuda.Backend, newCPU func() model.Backend) (model.Backend, string, error) {
	closeAll := func() {
		for _, g := range gpus {
			g.Close()
		}
	}
	plan, err := model.PlanPath(path, opts)
	if err != nil {
		closeAll()
		return nil, "", err
	}
	split := pl.split
	sizers := make([]model.Sizer, len(gpus))
	backends := make([]model.Backend, len(gpus))
	for i, g := range gpus {
		sizers[i], backends[i] = g, g
	}
	if split == nil && len(gpus) > 1 {
		// llama.cpp's default: shares by free memory.
		for _, g := range gpus {
			b, err := g.Budget()
			if err != nil {
				closeAll()
				return nil, "", fmt.Errorf("%s: %w", g.Name(), err)
			}
			split = append(split, float64(max(b, 1)))
		}
	}
	layout, err := model.Place(plan, sizers, split, pl.ngl)
	if err != nil {
		closeAll()
		return nil, "", err
	}
	be, err := layout.Build(newCPU(), backends)
	if err != nil {
		return nil, "", err
	}
	return be, describeBackend(be, layout, plan.Config.Layers), nil
}

// describeBackend says in one line where the model runs.
func describeBackend(be model.Backend, l model.Layout, layers int) string {
	switch b := be.(type) {
	case *cuda.Backend:
		return b.Describe()
	case *model.Split:
		var gpus []string
		for _, st := range b.Stages() {
			if g, ok := st.Backend.(*cuda.Backend); ok {
				gpus = append(gpus, g.Describe())
			}
		}
		return fmt.Sprintf("%d of %d layers on the GPU: %s (%s)", min(l.GPULayers(), layers), layers, b.Placement(), strings.Join(gpus, "; "))
	default:
		return fmt.Sprintf("%s: --n-gpu-layers 0", be.Name())
	}
}
