package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/ptx"
)

// device is the GPU as the backend uses it: memory, copies, weight uploads
// and the running of a step's records. Everything the backend does with the
// driver goes through it. gpu is the device; the package's tests also run
// the backend on a fake one that hands out addresses without a GPU, so that
// the recording path (the op methods, the fusions, scratch and batch
// bookkeeping, step failures) is tested on machines without one.
//
// Every method except do, upload, uploadQuant and close is called inside do.
type device interface {
	// do runs fn on the thread that owns the device's context.
	do(fn func() error) error
	// upload converts the matrix ti (data its bytes) to FP16 and copies
	// it to dst; the copy may be in flight when it returns (finishUploads
	// waits for it), but data is no longer needed.
	upload(dst cudadrv.DevicePtr, ti *gguf.TensorInfo, data []byte) error
	// uploadQuant copies the planes of a quantized matrix (data its GGUF
	// blocks) to dsts[j], packed on the way (ptx.QuantType.PackPlane); as
	// upload, the copies may be in flight when it returns.
	uploadQuant(dsts [3]cudadrv.DevicePtr, qt ptx.QuantType, data []byte) error
	// finishUploads waits for the uploads in flight and frees their
	// staging buffers; waitUploads only waits.
	finishUploads() error
	waitUploads() error

	alloc(bytes int) (cudadrv.DevicePtr, error) // device memory, 256-byte aligned
	free(p cudadrv.DevicePtr) error
	memInfo() (free, total uint64, err error)
	allocHost(bytes int) (hostBuf, error) // page-locked host memory

	// Synchronous transfers, src and dst may be Go memory.
	zero(p cudadrv.DevicePtr, bytes int) error
	copyIn(dst cudadrv.DevicePtr, src unsafe.Pointer, bytes int) error
	copyOut(dst unsafe.Pointer, src cudadrv.DevicePtr, bytes int) error
	// copyDevice copies between device buffers; it does not wait for the
	// step's stream (sync it first).
	copyDevice(dst, src cudadrv.DevicePtr, bytes int) error

	// The step's stream.
	copyInAsync(dst cudadrv.DevicePtr, src hostBuf, bytes int) error
	copyOutAsync(dst hostBuf, src cudadrv.DevicePtr, bytes int) error
	// run enqueues the records of a step of n tokens, in order.
	run(n int, ops []op) error
	// sync waits for the step's stream.
	sync() error

	// reserveBLAS makes cuBLAS's scratch hold elems FP16 values (nothing
	// without cuBLAS); warmUpBLAS runs one product of each weight shape
	// for n rows.
	reserveBLAS(elems int) error
	warmUpBLAS(n int, shapes map[[2]int]cudadrv.DevicePtr) error

	// graphs returns the number of captured graphs.
	graphs() int
	// close frees what the device holds and ends its context (not inside
	// do).
	close() error
}

// hostBuf is page-locked host memory: a *cudadrv.HostBuffer on the GPU.
type hostBuf interface {
	Ptr() unsafe.Pointer
	Len() int
	Free() error
}

// copyToDevice copies src (Go memory, no pointers) to dst (inside do).
func copyToDevice[T any](d device, dst cudadrv.DevicePtr, src []T) error {
	if len(src) == 0 {
		return nil
	}
	return d.copyIn(dst, unsafe.Pointer(&src[0]), len(src)*int(unsafe.Sizeof(src[0])))
}

// copyFromDevice copies len(dst) elements from src into dst (Go memory, no
// pointers; inside do).
func copyFromDevice[T any](d device, dst []T, src cudadrv.DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	return d.copyOut(unsafe.Pointer(&dst[0]), src, len(dst)*int(unsafe.Sizeof(dst[0])))
}

// gpu is the device of a real GPU: its context, the embedded kernels, the
// stream steps run on, cuBLAS when it loads, the weight loader and the
// graphs captured from the steps seen so far.
type gpu struct {
	ctx      *cudadrv.Context
	k        *ptx.Kernels
	stream   cudadrv.Stream
	blas     *ptx.BLAS // nil when cuBLAS is off or missing
	blasH    *cublas.Handle
	blasLn   string // cuBLAS description, or why it is not used
	load     loader
	cache    graphCache
	noGraphs bool
	launch   launcher // what the records of a step launch with
}

var _ device = (*gpu)(nil)

// openGPU makes info's device ready: its context, kernels, stream, weight
// loader and, unless disabled, cuBLAS (a missing or unusable cuBLAS is
// not an error: the built-in kernels take over). It fails with the
// driver's error, naming the device as "cuda:N".
func openGPU(info cudadrv.DeviceInfo, opts Options) (*gpu, error) {
	name := fmt.Sprintf("cuda:%d", opts.Device)
	ctx, err := cudadrv.NewContext(info.Device)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	g := &gpu{ctx: ctx, noGraphs: opts.NoGraphs}
	g.cache.init()
	if g.k, err = ptx.Load(ctx); err != nil {
		g.close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	err = ctx.Do(func() error {
		var err error
		if g.stream, err = cudadrv.NewStream(); err != nil {
			return err
		}
		return g.load.init()
	})
	if err != nil {
		g.close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	g.initBLAS(info, opts)
	g.launch = launcher{k: g.k, s: g.stream, blas: g.blas}
	return g, nil
}

// initBLAS loads cuBLAS unless it is disabled; failures leave the built-in
// kernels in charge.
func (g *gpu) initBLAS(info cudadrv.DeviceInfo, opts Options) {
	if opts.DisableCUBLAS {
		g.blasLn = "disabled; built-in GEMM kernels"
		return
	}
	bo := opts.BLAS
	bo.ComputeMajor, bo.ComputeMinor = info.Major, info.Minor
	lib, err := cublas.Load(bo)
	if err != nil {
		g.blasLn = fmt.Sprintf("not available (%v); built-in GEMM kernels", err)
		return
	}
	err = g.ctx.Do(func() error {
		h, err := lib.NewHandle()
		if err != nil {
			return err
		}
		g.blasH = h
		g.blas = ptx.NewBLAS(g.k, h)
		return nil
	})
	if err != nil {
		g.blasLn = fmt.Sprintf("not usable (%v); built-in GEMM kernels", err)
		return
	}
	major, minor, patch := lib.Version()
	g.blasLn = fmt.Sprintf("cuBLAS %d.%d.%d (%s)", major, minor, patch, lib.Path())
}

func (g *gpu) do(fn func() error) error { return g.ctx.Do(fn) }

// upload sends matrices through the loader's staging buffers, converted by
// all cores while the previous chunk is copied. Tensors whose rows are not
// whole quantization blocks, or too wide for a staging buffer, are
// converted whole.
func (g *gpu) upload(dst cudadrv.DevicePtr, ti *gguf.TensorInfo, data []byte) error {
	rows, cols := int(ti.Rows()), int(ti.Dims[0])
	if !ti.RowAligned() || 2*cols > stageBytes {
		h := make([]uint16, rows*cols)
		if err := gguf.DequantizeF16(h, data, ti.Type); err != nil {
			return err
		}
		return g.ctx.Do(func() error { return cudadrv.CopyToDevice(dst, h) })
	}
	return g.load.upload(g.ctx, dst, ti.Type, data, rows, cols)
}

func (g *gpu) uploadQuant(dsts [3]cudadrv.DevicePtr, qt ptx.QuantType, data []byte) error {
	return g.load.uploadQuant(g.ctx, dsts, qt, data)
}

func (g *gpu) finishUploads() error { return g.load.finish() }
func (g *gpu) waitUploads() error   { return g.load.wait() }

func (g *gpu) alloc(bytes int) (cudadrv.DevicePtr, error) { return cudadrv.MemAlloc(bytes) }
func (g *gpu) free(p cudadrv.DevicePtr) error             { return cudadrv.MemFree(p) }
func (g *gpu) memInfo() (uint64, uint64, error)           { return cudadrv.MemGetInfo() }

func (g *gpu) allocHost(bytes int) (hostBuf, error) {
	h, err := cudadrv.MemAllocHost(bytes)
	if err != nil {
		return nil, err
	}
	return h, nil
}

func (g *gpu) zero(p cudadrv.DevicePtr, bytes int) error { return cudadrv.MemsetD8(p, 0, bytes) }
func (g *gpu) copyIn(dst cudadrv.DevicePtr, src unsafe.Pointer, bytes int) error {
	return cudadrv.MemcpyHtoD(dst, src, bytes)
}
func (g *gpu) copyOut(dst unsafe.Pointer, src cudadrv.DevicePtr, bytes int) error {
	return cudadrv.MemcpyDtoH(dst, src, bytes)
}
func (g *gpu) copyDevice(dst, src cudadrv.DevicePtr, bytes int) error {
	return cudadrv.MemcpyDtoD(dst, src, bytes)
}
func (g *gpu) copyInAsync(dst cudadrv.DevicePtr, src hostBuf, bytes int) error {
	return cudadrv.MemcpyHtoDAsync(dst, src.Ptr(), bytes, g.stream)
}
func (g *gpu) copyOutAsync(dst hostBuf, src cudadrv.DevicePtr, bytes int) error {
	return cudadrv.MemcpyDtoHAsync(dst.Ptr(), src, bytes, g.stream)
}
func (g *gpu) sync() error { return g.stream.Synchronize() }

// run launches the step: through the graph captured for an identical step
// when the batch is small enough (decode), one by one otherwise.
func (g *gpu) run(n int, ops []op) error {
	l := &g.launch
	if g.noGraphs || n > GraphMaxRows {
		return launchAll(l, ops)
	}
	for _, o := range ops {
		if _, ok := o.(gemm); ok {
			// Products through cuBLAS are not captured: cuBLAS and
			// ptx.BLAS may allocate during the call.
			return launchAll(l, ops)
		}
	}
	if exec, ok := g.cache.find(n, ops); ok {
		return exec.Launch(g.stream)
	}
	exec, err := g.stream.Capture(func() error { return launchAll(l, ops) })
	if err != nil {
		return err
	}
	g.cache.add(n, ops, exec)
	return exec.Launch(g.stream)
}

// launchAll launches ops one by one on l's stream.
func launchAll(l *launcher, ops []op) error {
	for i, o := range ops {
		if err := o.launch(l); err != nil {
			return fmt.Errorf("op %d of %d (%s): %w", i, len(ops), o.kernel(), err)
		}
	}
	return nil
}

func (g *gpu) reserveBLAS(elems int) error {
	if g.blas == nil {
		return nil
	}
	return g.blas.Reserve(elems)
}

// warmUpBLAS makes cuBLAS load and select its kernels for each weight
// shape, at n rows, which it otherwise does on the first product of each
// shape while the user waits.
func (g *gpu) warmUpBLAS(n int, shapes map[[2]int]cudadrv.DevicePtr) error {
	if g.blas == nil || n <= GraphMaxRows || len(shapes) == 0 {
		return nil
	}
	maxM, maxK := 0, 0
	for s := range shapes {
		maxM, maxK = max(maxM, s[0]), max(maxK, s[1])
	}
	if err := g.blas.Reserve(n * maxK); err != nil {
		return err
	}
	x, err := cudadrv.MemAlloc(4 * n * maxK)
	if err != nil {
		return err
	}
	defer cudadrv.MemFree(x)
	y, err := cudadrv.MemAlloc(4 * n * maxM)
	if err != nil {
		return err
	}
	defer cudadrv.MemFree(y)
	if err := cudadrv.MemsetD32(x, 0, n*maxK); err != nil {
		return err
	}
	for s, w := range shapes {
		if err := g.blas.MatMulF16(g.stream, y, x, w, n, s[0], s[1]); err != nil {
			return err
		}
	}
	return g.stream.Synchronize()
}

func (g *gpu) graphs() int { return g.cache.count() }

// close frees the loader, the graphs, cuBLAS, the stream and the kernels,
// then releases the context. It is safe on a partly opened gpu.
func (g *gpu) close() error {
	err := g.ctx.Do(func() error {
		errs := []error{g.load.close()}
		g.cache.clear()
		if g.blas != nil {
			errs = append(errs, g.blas.Close(), g.blasH.Destroy())
			g.blas, g.blasH = nil, nil
		}
		if g.stream != 0 {
			errs = append(errs, g.stream.Destroy())
			g.stream = 0
		}
		return errors.Join(errs...)
	})
	if g.k != nil {
		err = errors.Join(err, g.k.Close())
		g.k = nil
	}
	return errors.Join(err, g.ctx.Close())
}

// graphCache holds the executable graphs of the steps seen so far, by
// batch length and record count; each bucket keeps the most recent few.
type graphCache struct {
	m map[graphKey][]graphEntry
}

type graphKey struct{ n, ops int }

type graphEntry struct {
	ops  []op
	exec cudadrv.GraphExec
}

// graphsPerKey bounds the graphs kept per (rows, records) bucket.
const graphsPerKey = 4

func (c *graphCache) init() { c.m = map[graphKey][]graphEntry{} }

// find returns the graph captured for a step equal to ops.
func (c *graphCache) find(n int, ops []op) (cudadrv.GraphExec, bool) {
	for _, e := range c.m[graphKey{n, len(ops)}] {
		if equalOps(e.ops, ops) {
			return e.exec, true
		}
	}
	return 0, false
}

// equalOps reports whether two steps hold equal records, in order.
func equalOps(a, b []op) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// add stores a new graph, evicting the oldest of its bucket (inside Do;
// no graph is in flight between steps).
func (c *graphCache) add(n int, ops []op, exec cudadrv.GraphExec) {
	key := graphKey{n, len(ops)}
	list := c.m[key]
	if len(list) == graphsPerKey {
		list[0].exec.Destroy()
		list = list[1:]
	}
	c.m[key] = append(list, graphEntry{ops: append([]op(nil), ops...), exec: exec})
}

// clear destroys every graph (inside Do).
func (c *graphCache) clear() {
	for k, list := range c.m {
		for _, e := range list {
			e.exec.Destroy()
		}
		delete(c.m, k)
	}
}

func (c *graphCache) count() int {
	n := 0
	for _, list := range c.m {
		n += len(list)
	}
	return n
}
