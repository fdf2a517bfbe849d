package cuda

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/ptx"
)

// weight is a parameter on the GPU: a (rows, cols) matrix, row-major
// (ggml ne=[cols, rows]), FP16 (f16) or in its quantized encoding (q: the
// planes of ptx.QuantWeight), or, when rows is 1, an FP32 vector (norm
// weights, biases, RoPE factors) with a host copy.
type weight struct {
	rows, cols int
	p          cudadrv.DevicePtr // FP16 matrix or FP32 vector
	f16        bool
	q          *ptx.QuantWeight // quantized matrices only
	host       []float32        // vectors only
}

// matrix reports whether w is a matrix (FP16 or quantized).
func (w *weight) matrix() bool { return w.f16 || w.q != nil }

// quantized returns the quantized encoding that ti is kept in on the GPU,
// or false when it is converted to FP16: matrices of every type the
// kernels read (ptx.QuantTypeOf) whose rows are whole blocks, unless
// Options.FP16Weights.
func (b *Backend) quantized(ti *gguf.TensorInfo) (ptx.QuantType, bool) {
	qt, ok := ptx.QuantTypeOf(ti.Type)
	return qt, ok && !b.opts.FP16Weights && ti.Rows() > 1 && ti.RowAligned()
}

// quantBytes returns the device bytes of a (rows, cols) matrix of type qt:
// its planes, each starting at an aligned offset.
func quantBytes(qt ptx.QuantType, rows, cols int64) int64 {
	var n int64
	for _, p := range qt.PlaneBytes(rows, cols) {
		n += alignUp(p)
	}
	return n
}

func (w *weight) Shape() (int, int) { return w.rows, w.cols }

// LoadWeight copies quantized matrices to the GPU as they are stored (see
// loadQuant), and converts other tensors to FP16 (FP32 for vectors), matrices through the page-locked staging buffers (see
// gpu.upload); the copy may still be in flight when LoadWeight returns
// (data is not needed anymore). It fails on a tensor type that cannot be
// converted (a *model.UnsupportedError), on data that does not decode, and
// with the driver's error when the weight does not fit
// (cudadrv.ErrOutOfMemory) or the copy fails; after Plan, weights are
// carved out of the block it reserved.
func (b *Backend) LoadWeight(ti *gguf.TensorInfo, data []byte) (model.Weight, error) {
	if b.err != nil {
		return nil, b.err
	}
	rows, cols := int(ti.Rows()), int(ti.Dims[0])
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("cuda: tensor %s has shape %v", ti.Name, ti.Dims)
	}
	if !ti.Type.CanDequantize() {
		return nil, &model.UnsupportedError{What: "tensor type", Value: ti.Type.String(), By: b.Name()}
	}
	if rows == 1 {
		w := &weight{rows: 1, cols: cols, host: make([]float32, cols)}
		if err := gguf.Dequantize(w.host, data, ti.Type); err != nil {
			return nil, err
		}
		err := b.dev.do(func() error {
			var err error
			if w.p, err = b.mem.weight(4 * int64(cols)); err != nil {
				return err
			}
			return copyToDevice(b.dev, w.p, w.host)
		})
		return w, err
	}
	if qt, ok := b.quantized(ti); ok {
		return b.loadQuant(ti, qt, data, rows, cols)
	}
	w := &weight{rows: rows, cols: cols, f16: true}
	bytes := 2 * int64(rows) * int64(cols)
	if err := b.dev.do(func() error {
		var err error
		w.p, err = b.mem.weight(bytes)
		return err
	}); err != nil {
		return nil, err
	}
	if b.shapes == nil {
		b.shapes = map[[2]int]cudadrv.DevicePtr{}
	}
	b.shapes[[2]int{rows, cols}] = w.p
	return w, b.dev.upload(w.p, ti, data)
}

// loadQuant uploads a quantized matrix as it is stored, regrouped into the
// planes of its type (ptx.PackQuant), one after the other at aligned
// offsets of one block of device memory; the planes are packed straight
// into the loader's staging buffers (gpu.uploadQuant).
func (b *Backend) loadQuant(ti *gguf.TensorInfo, qt ptx.QuantType, data []byte, rows, cols int) (model.Weight, error) {
	sizes := qt.PlaneBytes(int64(rows), int64(cols))
	if want, _ := ti.Type.RowSize(int64(rows) * int64(cols)); int64(len(data)) != want {
		return nil, fmt.Errorf("cuda: tensor %s: %d bytes of data, want %d", ti.Name, len(data), want)
	}
	w := &weight{rows: rows, cols: cols, q: &ptx.QuantWeight{Type: qt, M: rows, K: cols}}
	err := b.dev.do(func() error {
		p, err := b.mem.weight(quantBytes(qt, int64(rows), int64(cols)))
		if err != nil {
			return err
		}
		off := int64(0)
		for j, n := range sizes {
			if n > 0 {
				w.q.Planes[j] = p.Offset(int(off))
				off += alignUp(n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := b.dev.uploadQuant(w.q.Planes, qt, data); err != nil {
		return nil, fmt.Errorf("cuda: tensor %s: %w", ti.Name, err)
	}
	return w, nil
}

// stageBytes is the size of each of the two staging buffers.
const stageBytes = 32 << 20

// loader copies weights to the GPU through two page-locked buffers on its
// own stream: while one is copied, the CPU fills the other.
type loader struct {
	stream   cudadrv.Stream
	stage    [2]*cudadrv.HostBuffer
	done     [2]cudadrv.Event // recorded after each buffer's copy
	next     int
	inflight bool
}

// init creates the stream and events (inside Do).
func (l *loader) init() error {
	var err error
	if l.stream, err = cudadrv.NewStream(); err != nil {
		return err
	}
	for i := range l.done {
		if l.done[i], err = cudadrv.NewEvent(); err != nil {
			return err
		}
	}
	return nil
}

// upload converts rows of data (type t, rows of cols elements) to FP16 and
// copies them to dst, one staging buffer at a time.
func (l *loader) upload(ctx *cudadrv.Context, dst cudadrv.DevicePtr, t gguf.Type, data []byte, rows, cols int) error {
	rowBytes := len(data) / rows
	chunk := max(1, stageBytes/(2*cols))
	for r0 := 0; r0 < rows; r0 += chunk {
		nr := min(chunk, rows-r0)
		buf, i, err := l.take(ctx)
		if err != nil {
			return err
		}
		out := unsafe.Slice((*uint16)(buf.Ptr()), nr*cols)
		if err := convertF16(out, data[r0*rowBytes:(r0+nr)*rowBytes], t, nr, cols); err != nil {
			return err
		}
		if err := l.send(ctx, i, dst.Offset(2*r0*cols), buf, 2*nr*cols); err != nil {
			return err
		}
	}
	return nil
}

// take returns the next staging buffer (allocated on first use) once its
// previous copy is done, and its index.
func (l *loader) take(ctx *cudadrv.Context) (*cudadrv.HostBuffer, int, error) {
	i := l.next
	l.next ^= 1
	err := ctx.Do(func() error {
		if l.stage[i] == nil {
			var err error
			if l.stage[i], err = cudadrv.MemAllocHost(stageBytes); err != nil {
				return err
			}
		}
		// The buffer's previous copy must be done before it is refilled.
		return l.done[i].Synchronize()
	})
	return l.stage[i], i, err
}

// send copies the first bytes of staging buffer i (buf) to dst on the
// loader's stream and records its event.
func (l *loader) send(ctx *cudadrv.Context, i int, dst cudadrv.DevicePtr, buf *cudadrv.HostBuffer, bytes int) error {
	return ctx.Do(func() error {
		if err := cudadrv.MemcpyHtoDAsync(dst, buf.Ptr(), bytes, l.stream); err != nil {
			return err
		}
		l.inflight = true
		return l.done[i].Record(l.stream)
	})
}

// uploadQuant packs each plane of the GGUF blocks in data (type qt) into
// the staging buffers, the blocks split among all cores, and copies it to
// dsts[j], one staging buffer at a time.
func (l *loader) uploadQuant(ctx *cudadrv.Context, dsts [3]cudadrv.DevicePtr, qt ptx.QuantType, data []byte) error {
	bb := qt.GGUF().TypeSize()
	nb := len(data) / bb
	for j, dst := range dsts {
		n := qt.PlaneBlockBytes(j)
		if n == 0 {
			continue
		}
		chunk := max(1, stageBytes/n)
		for b0 := 0; b0 < nb; b0 += chunk {
			nc := min(chunk, nb-b0)
			buf, i, err := l.take(ctx)
			if err != nil {
				return err
			}
			out := unsafe.Slice((*byte)(buf.Ptr()), nc*n)
			if err := packPlane(qt, j, out, data[b0*bb:(b0+nc)*bb]); err != nil {
				return err
			}
			if err := l.send(ctx, i, dst.Offset(b0*n), buf, nc*n); err != nil {
				return err
			}
		}
	}
	return nil
}

// packPlane is qt.PackPlane with the blocks split among all cores.
func packPlane(qt ptx.QuantType, j int, dst, blocks []byte) error {
	bb, n := qt.GGUF().TypeSize(), qt.PlaneBlockBytes(j)
	nb := len(blocks) / bb
	workers := max(1, min(runtime.GOMAXPROCS(0), len(dst)/(256<<10)))
	per := (nb + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*per, min(nb, (w+1)*per)
		if lo >= hi {
			continue
		}
		wg.Go(func() { errs[w] = qt.PackPlane(j, dst[lo*n:hi*n], blocks[lo*bb:hi*bb]) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// convertF16 converts rows of src (type t) to FP16 in dst, the rows split
// among all cores. F16 rows are copied as they are.
func convertF16(dst []uint16, src []byte, t gguf.Type, rows, cols int) error {
	workers := max(1, min(runtime.GOMAXPROCS(0), rows, len(dst)/(64<<10)))
	per := (rows + workers - 1) / workers
	rowBytes := len(src) / rows
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*per, min(rows, (w+1)*per)
		if lo >= hi {
			continue
		}
		wg.Go(func() {
			out, in := dst[lo*cols:hi*cols], src[lo*rowBytes:hi*rowBytes]
			if t == gguf.TypeF16 {
				copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), 2*len(out)), in)
				return
			}
			errs[w] = gguf.DequantizeF16(out, in, t)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// wait waits for the copies in flight, keeping the staging buffers for
// more (inside Do).
func (l *loader) wait() error {
	if !l.inflight {
		return nil
	}
	l.inflight = false
	return l.stream.Synchronize()
}

// finish waits for the copies in flight and frees the staging buffers
// (inside Do).
func (l *loader) finish() error {
	var errs []error
	if l.inflight {
		errs = append(errs, l.stream.Synchronize())
		l.inflight = false
	}
	for i, s := range l.stage {
		if s != nil {
			errs = append(errs, s.Free())
			l.stage[i] = nil
		}
	}
	return errors.Join(errs...)
}

// close finishes and destroys the stream and events (inside Do).
func (l *loader) close() error {
	errs := []error{l.finish()}
	for i, e := range l.done {
		if e != 0 {
			errs = append(errs, e.Destroy())
			l.done[i] = 0
		}
	}
	if l.stream != 0 {
		errs = append(errs, l.stream.Destroy())
		l.stream = 0
	}
	return errors.Join(errs...)
}
