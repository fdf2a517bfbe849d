// Package cuda is the GPU implementation of model.Backend: the forward pass
// on an NVIDIA GPU through the driver API (cudadrv), the embedded kernels
// (ptx) and, for prompt processing, cuBLAS.
//
// # Precision
//
// Q8_0 and Q4_0 weight matrices stay in their encoding (the GGUF blocks
// regrouped into planes, see ptx.QuantWeight): decode products read them
// with the matvec_q kernels, prompt products dequantize one matrix at a
// time into an FP16 scratch for the GEMM, and the embedding lookup
// dequantizes the rows it needs. Other matrices are stored as FP16 (every
// other GGUF type is converted once, at load, as are quantized tensors
// whose rows are not whole blocks); norm weights, biases and RoPE factors
// stay FP32. Activations and
// all arithmetic are FP32 (the Tesla M40 has no fast FP16 arithmetic). The
// KV cache is laid out [layer][slot][pos][dim], FP16 by default; keys and
// values may each be f32, f16, q8_0 or q4_0 (model.KVConfig), stored in
// ggml's block layouts, quantized on the way in as the CPU backend does
// and read with FP32 arithmetic (ptx.KVCache). Prompt processing
// through cuBLAS rounds the activations fed to each product to FP16 as well
// (see ptx.BLAS); decode uses the built-in matrix-vector kernels, which keep
// them FP32.
//
// # Execution
//
// Ops are not run when they are called: each appends a record to the step
// being built, one small comparable struct per kernel that names its
// operands (records.go), fused with the records before it where one
// kernel does the work of several (fuse, records.go, lists every fusion).
// Read, ReadTopK and Sync submit the whole step in one call on the
// context's thread: the batch is copied to fixed device buffers, the step
// runs — as a CUDA graph, captured the first time a step of equal records
// is seen and replayed after, when it has at most GraphMaxRows tokens —
// and the result is copied back, with one host synchronization.
//
// # Errors
//
// Ops do not return errors: Read, ReadTopK and Sync (and SetBatch, which
// submits the previous batch's step) return the failure of the step they
// submit. A failure is one of two kinds:
//   - An allocation for the step that does not fit (a scratch buffer that
//     grows, the read staging, a RoPE inverse-frequency table, cuBLAS's
//     scratch; SetBatch's batch buffers, whose failure SetBatch returns)
//     fails that step only: its records are dropped before anything runs,
//     the error matches cudadrv.ErrOutOfMemory, Err stays nil, and the next
//     step works.
//   - Any other failure (a launch, a copy, a synchronization: the device's)
//     is sticky: the backend is unusable, Err returns the failure and every
//     later call fails with it at once. InjectFault causes one, for tests.
//
// # Memory
//
// Plan compares what a model needs (FP16 weights, KV cache, activations and
// scratch) with the device's free memory before anything is allocated,
// and reserves one block for all weights. Weights are copied through two
// page-locked staging buffers, converted in parallel on the CPU; no host
// copy is kept (CopiesWeights is true, so model.Load closes the file).
// Close frees everything.
package cuda

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/ptx"
)

// GraphMaxRows is the largest batch whose steps are captured and replayed
// as CUDA graphs: decode, one token per sequence. Longer batches (prompt
// processing) are launched kernel by kernel, which their run time hides.
const GraphMaxRows = ptx.MatVecMaxN

// Options configures New.
type Options struct {
	// Device is the CUDA device ordinal.
	Device int
	// Driver configures the driver library search (cudadrv.Init).
	Driver cudadrv.Options
	// BLAS configures the cuBLAS library search; its compute capability
	// fields are filled in by New.
	BLAS cublas.Options
	// DisableCUBLAS runs prompt-processing products on the built-in tiled
	// kernel instead of cuBLAS.
	DisableCUBLAS bool
	// NoGraphs launches every step kernel by kernel (for tests and
	// diagnosis).
	NoGraphs bool
	// FP16Weights converts every weight matrix to FP16 at load, Q8_0 and
	// Q4_0 too: 2-4x the memory, and faster batched decode (8 or more
	// sequences per step) until the quantized kernels stage their
	// activations as the FP16 ones do.
	FP16Weights bool
	// NoFusion records every op as its own kernel (for tests).
	NoFusion bool
	// MemoryLimit, when above 0, bounds the device memory the backend
	// plans to use (Plan, Budget) below the device's free memory.
	MemoryLimit int64
}

// Backend is the CUDA implementation of model.Backend. It is used by one
// goroutine at a time (model.Model serializes its forward passes).
type Backend struct {
	opts   Options
	info   cudadrv.DeviceInfo
	dev    device // nil once closed
	mode   string // how the kernels run: ptx.LoadMode
	blasLn string // cuBLAS description, or why it is not used
	blasOn bool   // prompt-processing products run on cuBLAS

	mem memory

	kv       model.KVConfig
	kvK, kvV ptx.CacheType     // kv.TypeK and kv.TypeV
	kc, vc   cudadrv.DevicePtr // [layer][slot][pos] rows of KDim|VDim in kvK|kvV

	// planBatch is the largest batch of the Plan (0 without one); shapes
	// holds one weight of each (rows, cols) loaded, for warmUp.
	planBatch int
	shapes    map[[2]int]cudadrv.DevicePtr

	st     step
	stream streamed // the buffer of StreamMatMul
	fault  bool     // InjectFault: the next step launches a faulting kernel

	err     error                 // the failure that made the backend unusable; sticky
	failure atomic.Pointer[error] // err, for Err on other goroutines
}

var (
	_ model.Backend        = (*Backend)(nil)
	_ model.WeightCopier   = (*Backend)(nil)
	_ model.Planner        = (*Backend)(nil)
	_ model.MemoryReporter = (*Backend)(nil)
	_ model.Sizer          = (*Backend)(nil)
	_ model.BufWriter      = (*Backend)(nil)
)

// New initializes the driver, opens device opts.Device, loads the embedded
// kernels and, unless disabled, cuBLAS (a missing or unsuitable cuBLAS is
// not an error: the built-in kernels take over; BLASStatus says why). It
// fails with the driver's error when there is no such device or it cannot
// be opened (cudadrv.ErrNoDevice without a GPU, cudadrv.ErrInvalidDevice
// for an ordinal past the last device).
func New(opts Options) (*Backend, error) {
	sys, err := cudadrv.Discover(opts.Driver)
	if err != nil {
		return nil, err
	}
	if opts.Device < 0 || opts.Device >= len(sys.Devices) {
		return nil, fmt.Errorf("cuda: device %d does not exist (%d devices): %w", opts.Device, len(sys.Devices), cudadrv.ErrInvalidDevice)
	}
	info := sys.Devices[opts.Device]
	g, err := openGPU(info, opts)
	if err != nil {
		return nil, err
	}
	b := newBackend(opts, info, g)
	b.mode, b.blasLn, b.blasOn = g.k.Mode().String(), g.blasLn, g.blas != nil
	return b, nil
}

// newBackend returns a backend on dev.
func newBackend(opts Options, info cudadrv.DeviceInfo, dev device) *Backend {
	b := &Backend{opts: opts, info: info, dev: dev}
	b.mem.dev = dev
	return b
}

// Name returns "cuda:N", N the device ordinal.
func (b *Backend) Name() string { return fmt.Sprintf("cuda:%d", b.opts.Device) }

// Device returns the GPU's description.
func (b *Backend) Device() cudadrv.DeviceInfo { return b.info }

// Describe returns one line naming the GPU: "cuda:0 Tesla M40 (compute
// 5.2, 24 GB, native sm_52)".
func (b *Backend) Describe() string {
	return fmt.Sprintf("%s %s (compute %d.%d, %.0f GB, %s)", b.Name(), b.info.Name, b.info.Major, b.info.Minor,
		float64(b.info.TotalMem)/1e9, b.mode)
}

// BLASStatus says whether cuBLAS runs prompt-processing products, and if
// not, why.
func (b *Backend) BLASStatus() string { return b.blasLn }

// CopiesWeights reports true: weights are copied to the GPU, so the model
// file can be closed once they are loaded.
func (b *Backend) CopiesWeights() bool { return true }

// Err returns the failure that made the backend unusable (a launch, copy
// or synchronization that failed, a device fault, or Close), or nil while
// it works; a step that only lost an allocation leaves it nil. It does
// not wait for pending work.
// Unlike the other methods, it may be called from any goroutine while the
// backend is used (the engine's callers ask it before submitting).
func (b *Backend) Err() error {
	if p := b.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the first error.
func (b *Backend) fail(err error) {
	if err != nil && b.err == nil {
		b.setErr(fmt.Errorf("%s: %w", b.Name(), err))
	}
}

// setErr makes err the backend's failure, for this goroutine (err) and
// for Err's callers on others (failure).
func (b *Backend) setErr(err error) {
	b.err = err
	b.failure.Store(&err)
}

// Graphs returns the number of captured graphs (for tests).
func (b *Backend) Graphs() int {
	if b.dev == nil {
		return 0
	}
	return b.dev.graphs()
}

// MemoryUsage reports the device memory the backend holds, and the
// device's memory in use by every process (zero when the driver cannot
// tell).
func (b *Backend) MemoryUsage() model.MemoryUsage {
	u := b.mem.usage()
	if b.dev == nil {
		return u
	}
	_ = b.dev.do(func() error {
		free, total, err := b.dev.memInfo()
		if err == nil {
			u.DeviceUsed, u.DeviceTotal = int64(total-free), int64(total)
		}
		return err
	})
	return u
}

// Close waits for pending work and frees everything the backend holds,
// returning the errors of doing so (after a device fault, the driver's).
// It is safe to call on a partly initialized backend and more than once;
// afterwards every call fails.
func (b *Backend) Close() error {
	if b.dev == nil {
		return nil
	}
	err := b.dev.do(func() error {
		errs := []error{b.dev.sync(), b.dev.finishUploads(), b.st.close(), b.mem.freeAll()}
		return errors.Join(errs...)
	})
	err = errors.Join(err, b.dev.close())
	b.dev = nil
	if b.err == nil {
		b.setErr(fmt.Errorf("%s: backend is closed", b.Name()))
	}
	return err
}
