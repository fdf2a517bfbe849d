package cuda

import (
	"errors"
	"fmt"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/ptx"
)

// category classifies device allocations for MemoryUsage.
type category int

const (
	catWeights category = iota
	catKV
	catActivations
	catScratch
	numCategories
)

// fixedReserve is the device memory Plan keeps free beyond what the model
// needs: cuBLAS's workspace, instantiated graphs and the driver's own
// per-launch state.
const fixedReserve = 128 << 20

// allocAlign is the alignment of every block, as cuMemAlloc gives it.
const allocAlign = 256

func alignUp(n int64) int64 { return (n + allocAlign - 1) &^ (allocAlign - 1) }

// memory tracks the backend's device allocations by category. Weights are
// carved out of one reserved block (the arena) when Plan made one.
type memory struct {
	dev    device
	blocks map[cudadrv.DevicePtr]block
	bytes  [numCategories]int64

	arena      cudadrv.DevicePtr
	arenaSize  int64
	arenaUsed  int64
	arenaSpent int64 // weight bytes taken from the arena
}

type block struct {
	size int64
	cat  category
}

// alloc allocates bytes of device memory (inside Do). It fails with the
// driver's error, cudadrv.ErrOutOfMemory when the device is full.
func (m *memory) alloc(bytes int64, cat category) (cudadrv.DevicePtr, error) {
	p, err := m.dev.alloc(int(bytes))
	if err != nil {
		return 0, err
	}
	if m.blocks == nil {
		m.blocks = map[cudadrv.DevicePtr]block{}
	}
	m.blocks[p] = block{bytes, cat}
	m.bytes[cat] += bytes
	return p, nil
}

// free releases a block from alloc (inside Do). Freeing 0 is a no-op.
func (m *memory) free(p cudadrv.DevicePtr) error {
	if p == 0 {
		return nil
	}
	bl, ok := m.blocks[p]
	if !ok {
		return fmt.Errorf("cuda: free of unknown block %#x", p)
	}
	delete(m.blocks, p)
	m.bytes[bl.cat] -= bl.size
	return m.dev.free(p)
}

// weight returns room for a weight of bytes: from the arena while it
// lasts, else a block of its own (inside Do).
func (m *memory) weight(bytes int64) (cudadrv.DevicePtr, error) {
	n := alignUp(bytes)
	if m.arena != 0 && m.arenaUsed+n <= m.arenaSize {
		p := m.arena.Offset(int(m.arenaUsed))
		m.arenaUsed += n
		m.arenaSpent += n
		return p, nil
	}
	return m.alloc(n, catWeights)
}

// freeAll frees every block (inside Do).
func (m *memory) freeAll() error {
	var errs []error
	for p := range m.blocks {
		errs = append(errs, m.free(p))
	}
	m.arena, m.arenaSize, m.arenaUsed, m.arenaSpent = 0, 0, 0, 0
	return errors.Join(errs...)
}

// usage reports the bytes held by category. The arena counts as weights,
// whether or not it is used up.
func (m *memory) usage() model.MemoryUsage {
	return model.MemoryUsage{
		Weights:     m.bytes[catWeights],
		KV:          m.bytes[catKV],
		Activations: m.bytes[catActivations],
		Scratch:     m.bytes[catScratch],
	}
}

// OutOfMemoryError reports a model that does not fit in the device's free
// memory, found before anything was allocated. It matches
// cudadrv.ErrOutOfMemory with errors.Is.
type OutOfMemoryError struct {
	Device string // "cuda:0 (Tesla M40 24GB)"
	// Need is the total, the sum of the parts below plus a fixed reserve
	// for cuBLAS and graphs.
	Need, Free                        int64
	Weights, KV, Activations, Scratch int64
}

// Error implements error.
func (e *OutOfMemoryError) Error() string {
	return fmt.Sprintf("%s: the model needs %s of GPU memory (FP16 weights %s, KV cache %s, activations %s, scratch %s), "+
		"but only %s is free; use a smaller --ctx-size or --batch-size, or a smaller model",
		e.Device, gib(e.Need), gib(e.Weights), gib(e.KV), gib(e.Activations), gib(e.Scratch+fixedReserve), gib(e.Free))
}

// Unwrap returns cudadrv.ErrOutOfMemory.
func (e *OutOfMemoryError) Unwrap() error { return cudadrv.ErrOutOfMemory }

func gib(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }

// need computes what a plan will allocate on this backend.
func (b *Backend) need(p *model.Plan) *OutOfMemoryError {
	e := &OutOfMemoryError{Device: fmt.Sprintf("%s (%s)", b.Name(), b.info.Name)}
	quantMax := int64(0) // the largest quantized matrix as FP16 (prompt scratch)
	for _, ti := range p.Tensors {
		rows, cols := ti.Rows(), ti.Dims[0]
		switch qt, ok := b.quantized(ti); {
		case rows == 1:
			e.Weights += alignUp(4 * cols)
		case ok:
			e.Weights += alignUp(quantBytes(qt, rows, cols))
			quantMax = max(quantMax, 2*rows*cols)
		default:
			e.Weights += alignUp(2 * rows * cols)
		}
	}
	kv := p.KV
	kb, vb := kvBytes(kv)
	e.KV = alignUp(kb) + alignUp(vb)
	batch, maxK := 1, 1
	for _, s := range p.Bufs {
		e.Activations += alignUp(4 * int64(s[0]) * int64(s[1]))
		batch, maxK = max(batch, s[0]), max(maxK, s[1])
	}
	c := p.Config
	e.Scratch = int64(b.scratchNeed(c, kv, batch, maxK))
	if batch > GraphMaxRows {
		// Prompt products with a quantized weight dequantize it into
		// one FP16 scratch matrix first.
		e.Scratch += quantMax
	}
	e.Need = e.Weights + e.KV + e.Activations + e.Scratch + fixedReserve
	return e
}

// scratchNeed estimates the scratch a model allocates: batch buffers, RoPE
// tables, attention partials, top-k buffers and cuBLAS's FP16 copy of the
// activations (maxK the widest activation).
func (b *Backend) scratchNeed(c *model.Config, kv model.KVConfig, batch, maxK int) int {
	n := 16*batch + 8*batch*c.RopeDim/2 + 8*c.RopeDim/2
	kt, _ := deviceCacheType(kv.TypeK)
	vt, _ := deviceCacheType(kv.TypeV)
	a := ptx.Attention{Cache: ptx.KVCache{Ctx: kv.Ctx, KCols: kv.KDim, VCols: kv.VDim, KType: kt, VType: vt},
		Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim, ValueDim: c.ValueDim}
	rows := min(batch, GraphMaxRows)
	if !a.PrefillSupported() {
		rows = batch
	}
	plan := a.PlanDecode(rows, b.info.SMs)
	n += 4*a.PartialElems(rows, plan) + 4*a.Counters(rows, plan)
	tk := min(batch, GraphMaxRows)
	n += ptx.TopKScratch(tk, c.VocabSize, topKPlanned) + 8*tk*topKPlanned
	if b.blasOn && batch > GraphMaxRows {
		n += 2 * batch * maxK
	}
	return n
}

// topKPlanned is the k that Plan reserves top-k scratch for; larger k
// allocate on first use.
const topKPlanned = 256

// Plan checks that the model fits in the device's free memory before
// anything is allocated, failing with an *OutOfMemoryError that says how
// much it needs and how much is free, then reserves one block for all the
// weights.
func (b *Backend) Plan(p *model.Plan) error {
	if b.err != nil {
		return b.err
	}
	e := b.need(p)
	for _, s := range p.Bufs {
		b.planBatch = max(b.planBatch, s[0])
	}
	return b.dev.do(func() error {
		free, _, err := b.dev.memInfo()
		if err != nil {
			return err
		}
		e.Free = b.limit(int64(free))
		if e.Need > e.Free {
			return e
		}
		if b.mem.arena != 0 {
			return nil
		}
		p, err := b.mem.alloc(e.Weights, catWeights)
		if err != nil {
			return fmt.Errorf("%s: reserving %s for the weights: %w", b.Name(), gib(e.Weights), err)
		}
		b.mem.arena, b.mem.arenaSize = p, e.Weights
		return nil
	})
}

// limit bounds free by Options.MemoryLimit.
func (b *Backend) limit(free int64) int64 {
	if l := b.opts.MemoryLimit; l > 0 {
		return min(free, l)
	}
	return free
}

// Need returns the device memory Plan would check p against: weights, KV
// cache, activations, scratch and a fixed reserve (model.Sizer).
func (b *Backend) Need(p *model.Plan) int64 { return b.need(p).Need }

// Budget returns the device's free memory, bounded by
// Options.MemoryLimit (model.Sizer). It fails as the driver's
// cuMemGetInfo does, or with the backend's failure.
func (b *Backend) Budget() (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	var free int64
	err := b.dev.do(func() error {
		f, _, err := b.dev.memInfo()
		free = int64(f)
		return err
	})
	return b.limit(free), err
}

// DeviceKey identifies the device by its ordinal: backends of one device
// share its memory (model.Sizer).
func (b *Backend) DeviceKey() string { return fmt.Sprintf("cuda:%d", b.opts.Device) }

// warmUp prepares what the first forward pass would otherwise set up while
// the user waits: the batch buffers and the read staging for the planned
// batch, and cuBLAS, which loads and selects its kernels on the first
// product of each shape — each distinct weight shape is run once at the
// planned batch size (inside Do, after the weights are loaded).
func (b *Backend) warmUp() error {
	n := b.planBatch
	if n == 0 {
		return nil
	}
	if err := b.growBatch(n); err != nil {
		return err
	}
	if _, err := b.readStage(1<<20, false); err != nil {
		return err
	}
	return b.dev.warmUpBLAS(n, b.shapes)
}

// deviceBytes returns the bytes w holds on the GPU: its planes when
// quantized, else 2 (FP16 matrix) or 4 (FP32 vector) per element.
func (w *weight) deviceBytes() int64 {
	switch {
	case w.q != nil:
		var n int64
		for _, p := range w.q.Type.PlaneBytes(int64(w.rows), int64(w.cols)) {
			n += p
		}
		return n
	case w.f16:
		return 2 * int64(w.rows) * int64(w.cols)
	}
	return 4 * int64(w.cols)
}

// DecodeBytes returns the weight bytes one decode step reads on this
// backend: every parameter of ws as held on the GPU (quantized matrices in
// their own encoding), but only one row of the embedding table unless it is
// also the classifier. ws must have been loaded by b.
func (b *Backend) DecodeBytes(ws *model.Weights) int64 {
	var n int64
	add := func(w model.Weight) {
		if w != nil {
			n += weightOf(w).deviceBytes()
		}
	}
	for _, l := range ws.Layers {
		for _, w := range []model.Weight{l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.Bq, l.Bk, l.Bv, l.QNorm, l.KNorm,
			l.FFNNorm, l.WGate, l.WUp, l.WDown} {
			add(w)
		}
	}
	add(ws.OutputNorm)
	add(ws.Output)
	add(ws.RopeFreqs)
	if ws.TokenEmbd != ws.Output {
		e := weightOf(ws.TokenEmbd)
		n += e.deviceBytes() / int64(e.rows)
	}
	return n
}
