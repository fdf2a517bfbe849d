package model_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPlaceLayers pins llama.cpp's -ngl and --tensor-split rules: the last
// ngl layers on the GPUs, the output too above the layer count, GPU layer j
// on the GPU whose cumulative share first exceeds j/N.
func TestPlaceLayers(t *testing.T) {
	cases := []struct {
		layers, ngl int
		split       []float64
		gpus        int
		want        model.Layout
	}{
		{32, 0, nil, 1, model.Layout{CPU: 32}},
		{32, 0, nil, 0, model.Layout{CPU: 32}},
		{32, 8, nil, 1, model.Layout{CPU: 24, GPU: []int{8}}},
		{32, 32, nil, 1, model.Layout{GPU: []int{32}}},
		{32, 33, nil, 1, model.Layout{GPU: []int{32}, OutputOnGPU: true}},
		{32, 99, nil, 1, model.Layout{GPU: []int{32}, OutputOnGPU: true}},
		{32, 99, nil, 2, model.Layout{GPU: []int{16, 16}, OutputOnGPU: true}},
		{32, 99, []float64{3, 1}, 2, model.Layout{GPU: []int{24, 8}, OutputOnGPU: true}},
		{32, 99, []float64{1, 0}, 2, model.Layout{GPU: []int{32, 0}, OutputOnGPU: true}},
		{32, 99, []float64{0, 1}, 2, model.Layout{GPU: []int{0, 32}, OutputOnGPU: true}},
		{5, 99, []float64{1, 1, 1}, 3, model.Layout{GPU: []int{2, 2, 1}, OutputOnGPU: true}},
		{32, 16, []float64{1, 1}, 2, model.Layout{CPU: 16, GPU: []int{8, 8}}},
	}
	for _, c := range cases {
		got, err := model.PlaceLayers(c.layers, c.ngl, c.split, c.gpus)
		require.NoError(t, err, "%+v", c)
		assert.Equal(t, c.want, got, "%d layers, ngl %d, split %v over %d GPUs", c.layers, c.ngl, c.split, c.gpus)
		assert.Equal(t, min(c.ngl, c.layers+1), got.GPULayers())
	}
	for _, bad := range []struct {
		ngl   int
		split []float64
		gpus  int
		msg   string
	}{
		{-1, nil, 1, "negative"},
		{4, nil, 0, "no GPU"},
		{4, []float64{1}, 2, "1 proportions for 2 GPUs"},
		{4, []float64{0, 0}, 2, "every proportion is 0"},
		{4, []float64{1, -1}, 2, "proportion -1"},
	} {
		_, err := model.PlaceLayers(32, bad.ngl, bad.split, bad.gpus)
		var oe *model.OptionError
		require.ErrorAs(t, err, &oe)
		assert.Contains(t, err.Error(), bad.msg)
	}
}

// fakeGPU is a CPU backend with a device budget: its need is the bytes of
// the tensors and the KV cache it would hold.
type fakeGPU struct {
	*cpu.Backend
	name, key string
	budget    int64
}

func (g *fakeGPU) Name() string { return g.name }
func (g *fakeGPU) Need(p *model.Plan) int64 {
	n := p.KV.Bytes()
	for _, ti := range p.Tensors {
		n += ti.Size
	}
	return n
}
func (g *fakeGPU) Budget() (int64, error) { return g.budget, nil }
func (g *fakeGPU) DeviceKey() string      { return g.key }

// bundledSizes returns stories260K's plan and, computed from the file's
// tensor list, the bytes of each layer (weights and KV cache), of the
// classifier and of the token embedding.
func bundledSizes(t *testing.T, opts model.Options) (p *model.Plan, layer []int64, output, embd int64) {
	f, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	p, err = model.PlanFile(f, opts)
	require.NoError(t, err)
	layer = make([]int64, p.Config.Layers)
	kv := p.KV
	kv.Layers = 1
	for i := range layer {
		layer[i] = kv.Bytes()
	}
	for _, ti := range f.Tensors {
		var l int
		if _, err := fmt.Sscanf(ti.Name, "blk.%d.", &l); err == nil {
			layer[l] += ti.Size
		} else if strings.HasPrefix(ti.Name, "output") {
			output += ti.Size
		} else if ti.Name == "token_embd.weight" {
			embd = ti.Size
		}
	}
	return p, layer, output, embd
}

func TestFit(t *testing.T) {
	opts := model.Options{CtxSize: 64, Slots: 2}
	p, layer, output, embd := bundledSizes(t, opts)
	require.Len(t, layer, 5)
	var all int64
	for _, b := range layer {
		all += b
	}
	gpu := func(name, key string, budget int64) *fakeGPU {
		return &fakeGPU{Backend: cpu.New(cpu.Options{Threads: 1}), name: name, key: key, budget: budget}
	}

	// Everything fits: all layers and the output on the GPU, which then
	// holds the token embedding too (the first stage does).
	l, err := model.Fit(p, []model.Sizer{gpu("g0", "0", all+output+embd)}, nil)
	require.NoError(t, err)
	assert.Equal(t, model.Layout{GPU: []int{5}, OutputOnGPU: true}, l)

	// One byte short of that: the layers fit, the output and the
	// embedding stay on the CPU.
	l, err = model.Fit(p, []model.Sizer{gpu("g0", "0", all+output+embd-1)}, nil)
	require.NoError(t, err)
	assert.Equal(t, model.Layout{GPU: []int{5}}, l)

	// Room for the last three layers only.
	three := layer[2] + layer[3] + layer[4]
	l, err = model.Fit(p, []model.Sizer{gpu("g0", "0", three)}, nil)
	require.NoError(t, err)
	assert.Equal(t, model.Layout{CPU: 2, GPU: []int{3}}, l)

	// Two backends on one device share its budget; on two devices each
	// has its own.
	l, err = model.Fit(p, []model.Sizer{gpu("g0", "0", three), gpu("g0b", "0", three)}, nil)
	require.NoError(t, err)
	assert.Equal(t, 3, l.GPULayers(), "%+v", l)
	l, err = model.Fit(p, []model.Sizer{gpu("g0", "0", all+output+embd), gpu("g1", "1", all+output+embd)}, nil)
	require.NoError(t, err)
	assert.Equal(t, model.Layout{GPU: []int{3, 2}, OutputOnGPU: true}, l)

	// Not even the last layer fits: a FitError naming the device.
	_, err = model.Fit(p, []model.Sizer{gpu("g0", "0", layer[4]-1)}, nil)
	var fe *model.FitError
	require.ErrorAs(t, err, &fe)
	assert.ErrorIs(t, err, model.ErrOutOfMemory)
	assert.Equal(t, "g0", fe.Device)
	assert.Equal(t, layer[4], fe.Need)
	assert.Contains(t, err.Error(), "not even one layer fits on g0")
}

// TestLayoutBuild: the layout's backend is the one backend that holds
// everything, or a Split whose placement is the layout's; unused backends
// are closed.
func TestLayoutBuild(t *testing.T) {
	c := cpu.New(cpu.Options{Threads: 1})
	g := cpu.New(cpu.Options{Threads: 1})
	be, err := model.Layout{CPU: 5}.Build(c, []model.Backend{g})
	require.NoError(t, err)
	assert.Same(t, c, be)

	c, g = cpu.New(cpu.Options{Threads: 1}), cpu.New(cpu.Options{Threads: 1})
	be, err = model.Layout{GPU: []int{5}, OutputOnGPU: true}.Build(c, []model.Backend{g})
	require.NoError(t, err)
	assert.Same(t, g, be)

	c, g = cpu.New(cpu.Options{Threads: 1}), cpu.New(cpu.Options{Threads: 1})
	be, err = model.Layout{CPU: 2, GPU: []int{3}}.Build(c, []model.Backend{g})
	require.NoError(t, err)
	sp := be.(*model.Split)
	assert.Equal(t, "layers 0-1 and the output on cpu, layers 2-4 on cpu", sp.Placement())
	m, err := model.Load(fixture.BundledModel(t), be, model.Options{CtxSize: 16})
	require.NoError(t, err)
	require.NoError(t, m.Close())

	// All layers on the GPU, the output on the CPU: a CPU stage of 0 layers.
	c, g = cpu.New(cpu.Options{Threads: 1}), cpu.New(cpu.Options{Threads: 1})
	be, err = model.Layout{GPU: []int{5}}.Build(c, []model.Backend{g})
	require.NoError(t, err)
	assert.Equal(t, "the output on cpu, layers 0-4 on cpu", be.(*model.Split).Placement())
}
