package model

import (
	"math"

	"github.com/m40llm/m40llm/gguf"
)

// Weight is a parameter tensor resident on a backend: a (Rows, Cols)
// matrix, or a vector with Rows 1.
type Weight interface {
	Shape() (rows, cols int)
}

// Buf is an activation buffer on a backend: float32, row-major, with room
// for Rows() rows of Cols() elements. Ops say how many rows they use.
type Buf interface {
	Rows() int
	Cols() int
}

// Batch is the set of tokens one forward pass processes: token i sits at
// position Pos[i] of the sequence held in KV-cache slot Slot[i]. A prompt
// is one slot with consecutive positions; batched decode is one token per
// slot.
type Batch struct {
	Tokens []int32
	Pos    []int32
	Slot   []int32
}

// Len returns the number of tokens.
func (b *Batch) Len() int { return len(b.Tokens) }

// KVConfig sizes a backend's KV cache: Slots sequences of up to Ctx positions,
// for each of Layers layers a key row of KDim and a value row of VDim
// elements per position, stored as TypeK and TypeV (see CacheType for the
// row layout). Layout: [layer][slot][pos][row].
type KVConfig struct {
	Layers, Slots, Ctx, KDim, VDim int
	TypeK, TypeV                   CacheType
}

// Bytes returns the size of the cache: keys plus values, at their types.
func (c KVConfig) Bytes() int64 {
	per := int64(c.Layers) * int64(c.Slots) * int64(c.Ctx)
	return per * (c.TypeK.RowBytes(c.KDim) + c.TypeV.RowBytes(c.VDim))
}

// RopeParams describes rotary position embedding for one model.
type RopeParams struct {
	Style     RopeStyle
	Dim       int     // leading dims of each head that rotate (even)
	Base      float32 // theta base
	FreqScale float32 // position multiplier (linear scaling)
	// Factors, when not nil, divides the frequency of pair i by Factors[i]
	// (Llama 3's rope_freqs.weight; Dim/2 values).
	Factors Weight
}

// AttnParams describes grouped-query attention for one model.
type AttnParams struct {
	Heads, KVHeads int
	HeadDim        int // query/key head width
	ValueDim       int // value head width
	Scale          float32
}

// Backend runs the forward pass's operations. The forward pass (Forward) is
// written once against it; the CPU backend is the reference that every
// other backend is tested against op by op.
//
// Errors: ops do not return errors. A backend that can fail asynchronously
// (a GPU) records the failure and reports it from Read, ReadTopK and Sync;
// a failure that leaves the backend unusable (a device fault) is also
// reported by Err from then on, while one that only lost the step (an
// allocation that did not fit) is not. Shape
// mismatches between arguments are programming errors and panic.
//
// Rows: every op acts on the first n rows of its buffers. Ops that need
// positions or slots read them from the batch set by SetBatch.
type Backend interface {
	// Name identifies the backend ("cpu", "cuda:0").
	Name() string

	// LoadWeight makes a tensor resident. data holds the tensor's bytes as
	// stored in the file, is only valid during the call, and may alias a
	// read-only memory mapping. The result is a (ti.Rows(), ti.Dims[0])
	// matrix.
	LoadWeight(ti *gguf.TensorInfo, data []byte) (Weight, error)
	// NewBuf allocates an activation buffer.
	NewBuf(rows, cols int) (Buf, error)
	// InitKV allocates the KV cache. A backend that is not a CacheTyper
	// fails on types other than CacheF16.
	InitKV(cfg KVConfig) error
	// SetBatch makes b the batch the following ops act on.
	SetBatch(b *Batch) error

	// Embed: dst[i] = table[tokens[i]] (as float32) for the batch's tokens.
	Embed(dst Buf, table Weight, n int)
	// RMSNorm: dst[i] = x[i] / sqrt(mean(x[i]²) + eps) * w, over rows of
	// x.Cols() elements; w is a (1, x.Cols()) weight. dst may be x.
	RMSNorm(dst, x Buf, w Weight, n int, eps float32)
	// HeadRMSNorm applies RMSNorm in place to each head of width headDim of
	// the first n rows of x, all heads sharing w (1, headDim).
	HeadRMSNorm(x Buf, w Weight, n, headDim int, eps float32)
	// MatMul: dst[i] = W @ x[i] (+ bias) for i < n, with W (d, k),
	// x rows of k, dst rows of d. bias is nil or (1, d).
	MatMul(dst, x Buf, w Weight, bias Weight, n int)
	// Rope rotates, in place, each head of width headDim in the first n
	// rows of x by the position of its token.
	Rope(x Buf, n, headDim int, p *RopeParams)
	// Attention stores the rows of k and v into the cache of layer at each
	// token's (slot, position), then computes causal grouped-query
	// attention of q over the slot's positions 0..pos: dst[i] is
	// Heads × ValueDim wide.
	Attention(dst, q, k, v Buf, layer, n int, p *AttnParams)
	// SwiGLU: dst[i] = silu(gate[i]) * up[i]. dst may be gate.
	SwiGLU(dst, gate, up Buf, n int)
	// Add: dst[i] += x[i].
	Add(dst, x Buf, n int)
	// GatherRows: dst[j] = src[rows[j]].
	GatherRows(dst, src Buf, rows []int32)
	// Read copies the first n rows of src to the host; it waits for
	// pending work and returns the first error of any op.
	Read(dst []float32, src Buf, n int) error
	// ReadTopK keeps only the k largest values of each of the first n
	// rows of src, so that a GPU sends k candidates per row to the host
	// instead of the whole vocabulary. With 1 ≤ k ≤ MaxTopK and ids and
	// vals holding at least n·k elements it is exactly the unfused
	// sequence
	//
	//	full := make([]float32, n*src.Cols())
	//	err := Read(full, src, n)
	//	for i := range n {
	//		TopK(ids[i*k:(i+1)*k], vals[i*k:(i+1)*k], full[i*src.Cols():(i+1)*src.Cols()])
	//	}
	//
	// with the same ids and values, in the same order. Like Read, it waits
	// for pending work and returns the first error of any op.
	ReadTopK(ids []int32, vals []float32, src Buf, n, k int) error
	// Sync waits for pending work and returns the first error.
	Sync() error
	// Err returns the failure that has made the backend unusable, or nil
	// while it works. It does not wait for pending work.
	Err() error
	// Close frees everything the backend holds.
	Close() error
}

// MaxTopK is the largest k ReadTopK must accept.
const MaxTopK = 1024

// TopK is the reference selection that ReadTopK implementations match:
// it writes the len(ids) largest values of row to vals and their indices to
// ids, in descending order of value with ties broken toward the lower
// index (the order sample.Sampler.SampleCandidates expects). NaN counts as
// -Inf. When len(ids) > len(row) the remaining entries are (-1, -Inf).
// len(vals) must equal len(ids).
func TopK(ids []int32, vals []float32, row []float32) {
	k := len(ids)
	if len(vals) != k {
		panic("model: TopK: len(ids) != len(vals)")
	}
	ninf := float32(math.Inf(-1))
	before := func(av float32, ai int32, bv float32, bi int32) bool {
		return av > bv || av == bv && ai < bi
	}
	n := 0 // entries held, sorted
	for i, v := range row {
		if v != v {
			v = ninf
		}
		id := int32(i)
		if n == k && !before(v, id, vals[k-1], ids[k-1]) {
			continue
		}
		j := min(n, k-1)
		for j > 0 && before(v, id, vals[j-1], ids[j-1]) {
			vals[j], ids[j] = vals[j-1], ids[j-1]
			j--
		}
		vals[j], ids[j] = v, id
		n = min(n+1, k)
	}
	for ; n < k; n++ {
		vals[n], ids[n] = ninf, -1
	}
}

// Plan describes everything Load is about to allocate on a backend, before
// it allocates anything.
type Plan struct {
	Config *Config
	// Tensors are the model file's tensors; Load passes each tensor the
	// model uses to LoadWeight.
	Tensors []*gguf.TensorInfo
	// KV is the cache InitKV will allocate.
	KV KVConfig
	// Bufs are the (rows, cols) shapes NewBuf will be asked for.
	Bufs [][2]int
}

// Planner is implemented by backends that check a Plan against the memory
// they have (and may reserve it) before Load allocates anything, so that a
// model that does not fit fails at once with how much it needs.
type Planner interface {
	Plan(p *Plan) error
}

// MemoryUsage is the device memory a backend holds, in bytes.
type MemoryUsage struct {
	Weights     int64 // parameters as stored on the device
	KV          int64 // the KV cache
	Activations int64 // activation buffers
	Scratch     int64 // everything else the backend allocated
	// DeviceUsed and DeviceTotal are the device's memory in use by every
	// process (cuMemGetInfo) and its size; 0 when unknown.
	DeviceUsed, DeviceTotal int64
}

// Total returns the bytes this backend holds.
func (u MemoryUsage) Total() int64 { return u.Weights + u.KV + u.Activations + u.Scratch }

// MemoryReporter is implemented by backends that hold device memory.
type MemoryReporter interface {
	MemoryUsage() MemoryUsage
}

// SlotCopier is implemented by backends that copy cached keys and values
// from one KV-cache slot to another on the device, so that requests of
// the same prompt (Engine.SubmitAll) evaluate it once. A Batcher whose
// backend lacks it evaluates the prompt in every slot.
type SlotCopier interface {
	// CopySlot copies the keys and values of positions 0..n-1 of slot src
	// over those of slot dst, in every layer, after the work submitted
	// before it and before any work submitted after it. It fails, copying
	// nothing, for slots outside the cache, dst == src or n outside
	// 0..Ctx, and with the backend's failure (the error of Sync).
	CopySlot(dst, src, n int) error
}
