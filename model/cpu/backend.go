// Package cpu is the pure-Go reference backend of the forward pass. It is
// the fallback when no GPU is usable and the oracle that every other
// backend is tested against, op by op.
//
// Weights stay in their stored GGUF type. Matrix products with Q4_0, Q8_0,
// Q4_K and Q6_K weights quantize the activations to 8 bits and take integer
// dot products per block; other types dequantize one row at a time into
// per-worker scratch. Work is spread over a fixed pool
// of goroutines when it is large enough to pay for the hand-off.
package cpu

import (
	"fmt"
	"math"
	"runtime"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
)

// Options configures New.
type Options struct {
	// Threads is the number of goroutines that share the work; 0 means
	// runtime.GOMAXPROCS(0), and values above MaxThreads mean MaxThreads.
	Threads int
	// FloatActivations makes matrix products take the float activations
	// and dequantize each weight row, as for types without an integer
	// kernel, instead of quantizing the activations to 8 bits for the
	// integer kernels (see MatMul). It is slower and differs from the
	// default by the activation quantization error (a logits NMSE of about
	// 1.5e-4 on synthetic models); it is the reference for backends whose
	// products keep float activations, such as model/cuda's kernels.
	FloatActivations bool
}

// Backend is the CPU implementation of model.Backend.
type Backend struct {
	pool          *pool
	threads       int
	batch         model.Batch
	kv            model.KVConfig
	kcache        kvHalf // [layer][slot][pos] rows of KDim, as kv.TypeK
	vcache        kvHalf // [layer][slot][pos] rows of VDim, as kv.TypeV
	rope          ropeTable
	scratch       [][]float32 // per worker, for dequantized rows and scores
	qx            qrows       // activations quantized for the integer kernels
	floatProducts bool        // Options.FloatActivations
}

var _ model.Backend = (*Backend)(nil)

// MaxThreads is the most worker goroutines a backend starts: 4× the
// CPUs (more only adds hand-offs and memory).
func MaxThreads() int { return 4 * runtime.NumCPU() }

// New returns a CPU backend. Threads above MaxThreads are lowered to it.
func New(opts Options) *Backend {
	t := opts.Threads
	if t <= 0 {
		t = runtime.GOMAXPROCS(0)
	}
	t = min(t, MaxThreads())
	return &Backend{pool: newPool(t), threads: t, floatProducts: opts.FloatActivations}
}

// Name returns "cpu".
func (b *Backend) Name() string { return "cpu" }

// Threads returns the number of worker goroutines.
func (b *Backend) Threads() int { return b.threads }

// Err returns nil: the CPU backend reports every failure from the call
// that meets it and never becomes unusable.
func (b *Backend) Err() error { return nil }

// buf is a CPU activation buffer.
type buf struct {
	rows, cols int
	data       []float32
}

func (x *buf) Rows() int { return x.rows }
func (x *buf) Cols() int { return x.cols }

// row returns row i.
func (x *buf) row(i int) []float32 { return x.data[i*x.cols : (i+1)*x.cols : (i+1)*x.cols] }

// NewBuf allocates a zeroed buffer.
func (b *Backend) NewBuf(rows, cols int) (model.Buf, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("cpu: invalid buffer shape %dx%d", rows, cols)
	}
	return &buf{rows, cols, make([]float32, rows*cols)}, nil
}

// BufFrom wraps host data as a buffer (for tests and tools).
func BufFrom(rows, cols int, data []float32) model.Buf {
	if len(data) != rows*cols {
		panic(fmt.Sprintf("cpu: %d values for a %dx%d buffer", len(data), rows, cols))
	}
	return &buf{rows, cols, data}
}

// Data returns a buffer's values (for tests and tools).
func Data(x model.Buf) []float32 { return x.(*buf).data }

// LoadWeight keeps the tensor in its stored type (see weight).
func (b *Backend) LoadWeight(ti *gguf.TensorInfo, data []byte) (model.Weight, error) {
	return newWeight(ti, data)
}

// InitKV allocates the KV cache, keys as cfg.TypeK and values as
// cfg.TypeV (see kvHalf for the layout). It fails on an invalid shape, a
// type that is not one, a row that is not a whole number of the type's
// blocks, and a cache above 1 TiB.
func (b *Backend) InitKV(cfg model.KVConfig) error {
	per := int64(cfg.Layers) * int64(cfg.Slots) * int64(cfg.Ctx)
	if per <= 0 || cfg.KDim <= 0 || cfg.VDim <= 0 || !b.SupportsCacheType(cfg.TypeK) || !b.SupportsCacheType(cfg.TypeV) {
		return fmt.Errorf("cpu: invalid KV cache config %+v", cfg)
	}
	if (per*int64(cfg.KDim+cfg.VDim))*4 > 1<<40 {
		return fmt.Errorf("cpu: KV cache of %d positions is too large", per)
	}
	k, err := newKVHalf(cfg.TypeK, per, cfg.KDim)
	if err != nil {
		return err
	}
	v, err := newKVHalf(cfg.TypeV, per, cfg.VDim)
	if err != nil {
		return err
	}
	b.kv, b.kcache, b.vcache = cfg, k, v
	return nil
}

var _ model.CacheTyper = (*Backend)(nil)

// SupportsCacheType reports true for every model.CacheType: f32, f16,
// q8_0 and q4_0.
func (b *Backend) SupportsCacheType(t model.CacheType) bool {
	for _, u := range model.CacheTypes() {
		if t == u {
			return true
		}
	}
	return false
}

// KVBytes is the memory the KV cache holds.
func (b *Backend) KVBytes() int64 { return b.kcache.bytes() + b.vcache.bytes() }

// SetBatch records the batch.
func (b *Backend) SetBatch(batch *model.Batch) error {
	b.batch = *batch
	b.rope.valid = false
	return nil
}

// Read copies n rows of src.
func (b *Backend) Read(dst []float32, src model.Buf, n int) error {
	s := src.(*buf)
	copy(dst, s.data[:n*s.cols])
	return nil
}

// Write copies src into the first len(src)/dst.Cols() rows of dst. It
// fails when src does not fit.
func (b *Backend) Write(dst model.Buf, src []float32) error {
	d := dst.(*buf)
	if len(src) > len(d.data) {
		return fmt.Errorf("cpu: Write of %d values into %dx%d", len(src), d.rows, d.cols)
	}
	copy(d.data, src)
	return nil
}

// Sync returns nil: CPU ops complete before they return.
func (b *Backend) Sync() error { return nil }

// Close stops the worker goroutines.
func (b *Backend) Close() error {
	b.pool.close()
	b.kcache, b.vcache = kvHalf{}, kvHalf{}
	return nil
}

// scratchFor returns scratch space of at least n floats for a chunk of a
// parallel loop; each concurrent chunk owns one.
func (b *Backend) scratchFor(chunk, n int) []float32 {
	for len(b.scratch) <= chunk {
		b.scratch = append(b.scratch, nil)
	}
	if cap(b.scratch[chunk]) < n {
		b.scratch[chunk] = make([]float32, n)
	}
	return b.scratch[chunk][:n]
}

// Embed gathers token rows of the embedding table.
func (b *Backend) Embed(dst model.Buf, table model.Weight, n int) {
	d, w := dst.(*buf), table.(*weight)
	checkCols(d.cols, w.cols, "Embed")
	for i := range n {
		r := w.row(int(b.batch.Tokens[i]), d.row(i))
		copy(d.row(i), r)
	}
}

// RMSNorm normalizes each row and scales it by w.
func (b *Backend) RMSNorm(dst, x model.Buf, w model.Weight, n int, eps float32) {
	d, s, g := dst.(*buf), x.(*buf), w.(*weight).vec()
	checkCols(d.cols, s.cols, "RMSNorm")
	checkCols(len(g), s.cols, "RMSNorm weight")
	for i := range n {
		rmsNorm(d.row(i), s.row(i), g, eps)
	}
}

// HeadRMSNorm normalizes each head of each row in place.
func (b *Backend) HeadRMSNorm(x model.Buf, w model.Weight, n, headDim int, eps float32) {
	s, g := x.(*buf), w.(*weight).vec()
	checkCols(len(g), headDim, "HeadRMSNorm weight")
	for i := range n {
		row := s.row(i)
		for h := 0; h+headDim <= len(row); h += headDim {
			rmsNorm(row[h:h+headDim], row[h:h+headDim], g, eps)
		}
	}
}

func rmsNorm(dst, x, g []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	scale := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	for j, v := range x {
		dst[j] = v * scale * g[j]
	}
}

// SwiGLU computes silu(gate)·up elementwise.
func (b *Backend) SwiGLU(dst, gate, up model.Buf, n int) {
	d, g, u := dst.(*buf), gate.(*buf), up.(*buf)
	checkCols(d.cols, g.cols, "SwiGLU")
	checkCols(d.cols, u.cols, "SwiGLU")
	dd, gg, uu := d.data[:n*d.cols], g.data[:n*d.cols], u.data[:n*d.cols]
	for j, v := range gg {
		dd[j] = v / (1 + expf(-v)) * uu[j]
	}
}

// Add adds x to dst elementwise.
func (b *Backend) Add(dst, x model.Buf, n int) {
	d, s := dst.(*buf), x.(*buf)
	checkCols(d.cols, s.cols, "Add")
	dd, ss := d.data[:n*d.cols], s.data[:n*d.cols]
	for j, v := range ss {
		dd[j] += v
	}
}

// GatherRows copies the listed rows of src.
func (b *Backend) GatherRows(dst, src model.Buf, rows []int32) {
	d, s := dst.(*buf), src.(*buf)
	checkCols(d.cols, s.cols, "GatherRows")
	for j, r := range rows {
		copy(d.row(j), s.row(int(r)))
	}
}

func checkCols(a, b int, op string) {
	if a != b {
		panic(fmt.Sprintf("cpu: %s: width mismatch %d != %d", op, a, b))
	}
}
