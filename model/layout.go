package model

import (
	"errors"
	"fmt"
	"math"
)

// Layout places a model's layers on the CPU and GPUs, as llama.cpp's
// -ngl does: the first CPU layers on the CPU, then GPU[i] layers on GPU
// i, in order; the classifier (final norm and output matrix) on the last
// GPU when OutputOnGPU, else on the CPU. The token embedding goes with
// the first layers.
type Layout struct {
	CPU         int
	GPU         []int
	OutputOnGPU bool
}

// GPULayers returns the layers on GPUs, plus one for the output when it is
// on a GPU: the -ngl that gives this layout.
func (l Layout) GPULayers() int {
	n := 0
	for _, g := range l.GPU {
		n += g
	}
	if l.OutputOnGPU {
		n++
	}
	return n
}

// PlaceLayers returns llama.cpp's placement for -ngl ngl of a model of
// layers layers over gpus GPUs: the last min(ngl, layers) layers on the
// GPUs, the classifier too when ngl > layers. GPU layers go to the GPUs in
// proportion to split (llama.cpp's --tensor-split: GPU i takes GPU layer j
// when j/N falls in its share of the cumulative proportions); a nil split
// shares them equally. It fails on a negative ngl, gpus < 1 when ngl > 0,
// or a split of the wrong length, with a negative or non-finite entry, or
// all zero.
func PlaceLayers(layers, ngl int, split []float64, gpus int) (Layout, error) {
	if ngl < 0 {
		return Layout{}, &OptionError{Option: "GPULayers", Msg: fmt.Sprintf("%d is negative", ngl)}
	}
	if ngl == 0 {
		return Layout{CPU: layers}, nil
	}
	if gpus < 1 {
		return Layout{}, &OptionError{Option: "GPULayers", Msg: fmt.Sprintf("%d layers on the GPU, and no GPU", ngl)}
	}
	shares, err := splitShares(split, gpus)
	if err != nil {
		return Layout{}, err
	}
	onGPU := min(ngl, layers)
	l := Layout{CPU: layers - onGPU, GPU: make([]int, gpus), OutputOnGPU: ngl > layers}
	for j := range onGPU {
		f := float64(j) / float64(onGPU)
		g := gpus - 1
		for i, c := range shares {
			if f < c {
				g = i
				break
			}
		}
		l.GPU[g]++
	}
	return l, nil
}

// splitShares returns the cumulative shares of split, normalized to end
// at 1 (equal shares for nil).
func splitShares(split []float64, gpus int) ([]float64, error) {
	if split == nil {
		split = make([]float64, gpus)
		for i := range split {
			split[i] = 1
		}
	}
	if len(split) != gpus {
		return nil, &OptionError{Option: "TensorSplit", Msg: fmt.Sprintf("%d proportions for %d GPUs", len(split), gpus)}
	}
	sum := 0.0
	for _, v := range split {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, &OptionError{Option: "TensorSplit", Msg: fmt.Sprintf("proportion %v: want a finite number of 0 or more", v)}
		}
		sum += v
	}
	if sum == 0 {
		return nil, &OptionError{Option: "TensorSplit", Msg: "every proportion is 0"}
	}
	c, shares := 0.0, make([]float64, gpus)
	for i, v := range split {
		c += v
		shares[i] = c / sum
	}
	return shares, nil
}

// stageLayers returns the stages of l (the CPU stage first when it holds
// layers or the output, then every GPU that holds layers or the output)
// as their layer counts and device indexes (-1 for the CPU), and the
// output stage.
func (l Layout) stageLayers() (layers, devs []int, output int) {
	output = -1
	if l.CPU > 0 || !l.OutputOnGPU {
		layers, devs = append(layers, l.CPU), append(devs, -1)
		if !l.OutputOnGPU {
			output = 0
		}
	}
	for i, g := range l.GPU {
		out := l.OutputOnGPU && i == len(l.GPU)-1
		if g == 0 && !out {
			continue
		}
		layers, devs = append(layers, g), append(devs, i)
		if out {
			output = len(layers) - 1
		}
	}
	return layers, devs, output
}

// Build returns the backend of the layout: the CPU backend or one GPU
// backend alone when it holds everything, else a Split over them. It takes
// ownership of cpu and gpus (gpus[i] is GPU i): the ones the layout does
// not use are closed. It fails when a needed backend is nil, as NewSplit
// fails, or with the errors of closing.
func (l Layout) Build(cpu Backend, gpus []Backend) (Backend, error) {
	layers, devs, output := l.stageLayers()
	used := make([]bool, len(gpus))
	var stages []Stage
	for i, d := range devs {
		be := cpu
		if d >= 0 {
			if d >= len(gpus) {
				return nil, fmt.Errorf("model: the layout places layers on GPU %d of %d", d, len(gpus))
			}
			be, used[d] = gpus[d], true
		}
		if be == nil {
			return nil, fmt.Errorf("model: no backend for stage %d of the layout", i)
		}
		stages = append(stages, Stage{Backend: be, Layers: layers[i]})
	}
	var errs []error
	if devs[0] >= 0 && cpu != nil {
		errs = append(errs, cpu.Close())
	}
	for i, g := range gpus {
		if !used[i] && g != nil {
			errs = append(errs, g.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(stages) == 1 {
		return stages[0].Backend, nil
	}
	return NewSplit(stages, output)
}

// Sizer is implemented by backends whose memory bounds the layers they
// take (GPUs): Fit places layers by it.
type Sizer interface {
	Backend
	// Need returns the bytes the backend would allocate for p.
	Need(p *Plan) int64
	// Budget returns the bytes the backend may allocate: its device's free
	// memory, or less under a set limit. It fails when the device cannot
	// be asked.
	Budget() (int64, error)
	// DeviceKey identifies the device: backends with the same key share
	// its memory, and Fit counts their needs against one budget.
	DeviceKey() string
}

// FitError is Fit's failure: not even one layer fits on the GPUs.
type FitError struct {
	Device string // the device that is short
	Need   int64  // what one layer (with its KV cache) needs there
	Budget int64
}

func (e *FitError) Error() string {
	return fmt.Sprintf("not even one layer fits on %s: %s needed (weights, KV cache and buffers of one layer), %s available",
		e.Device, gib(e.Need), gib(e.Budget))
}

// Unwrap returns ErrOutOfMemory.
func (e *FitError) Unwrap() error { return ErrOutOfMemory }

func gib(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }

// Fit returns the layout with the most GPU layers (ngl from the layer
// count + 1, everything on the GPUs, down to 1) whose share of p fits each
// device's budget, with layers over the GPUs in proportion to split (see
// PlaceLayers). Backends with one DeviceKey share one budget. It fails
// with a *FitError when not even one layer fits, with the Budget error of
// a device, or as PlaceLayers does.
func Fit(p *Plan, gpus []Sizer, split []float64) (Layout, error) {
	layers := p.Config.Layers
	budgets := map[string]int64{}
	for _, g := range gpus {
		b, err := g.Budget()
		if err != nil {
			return Layout{}, fmt.Errorf("%s: %w", g.Name(), err)
		}
		k := g.DeviceKey()
		if old, ok := budgets[k]; !ok || b < old {
			budgets[k] = b
		}
	}
	var short *FitError
	for ngl := layers + 1; ngl >= 1; ngl-- {
		l, err := PlaceLayers(layers, ngl, split, len(gpus))
		if err != nil {
			return Layout{}, err
		}
		e := l.check(p, gpus, budgets)
		if e == nil {
			return l, nil
		}
		short = e
	}
	return Layout{}, short
}

// Place returns the layout for -ngl ngl (PlaceLayers over the GPUs), or,
// with ngl < 0, the one Fit finds. It fails as those do.
func Place(p *Plan, gpus []Sizer, split []float64, ngl int) (Layout, error) {
	if ngl >= 0 {
		return PlaceLayers(p.Config.Layers, ngl, split, len(gpus))
	}
	return Fit(p, gpus, split)
}

// check returns nil when l's share of p fits every device's budget, else
// the first device that is short.
func (l Layout) check(p *Plan, gpus []Sizer, budgets map[string]int64) *FitError {
	layers, devs, output := l.stageLayers()
	subs := splitOf(layers, output).plans(p)
	need := map[string]int64{}
	for i, d := range devs {
		if d >= 0 {
			need[gpus[d].DeviceKey()] += gpus[d].Need(subs[i])
		}
	}
	for _, d := range devs {
		if d < 0 {
			continue
		}
		k := gpus[d].DeviceKey()
		if need[k] > budgets[k] {
			return &FitError{Device: gpus[d].Name(), Need: need[k], Budget: budgets[k]}
		}
	}
	return nil
}
