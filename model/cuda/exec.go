package cuda

import (
	"fmt"
	"unsafe"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/ptx"
)

// readback is the copy to the host that ends a step: bytes from src into
// the page-locked read staging, which flush sets in stage, or, when stage
// stays nil (the read is too large for it), into Go memory by the caller
// after the step.
type readback struct {
	src   cudadrv.DevicePtr
	bytes int
	force bool // always through the staging (ReadTopK)
	stage hostBuf
}

// flush submits the recorded step in one call on the context's thread:
// it readies the read staging (a submission's only allocation), uploads
// the batch, runs the records (replaying a graph when the step has been
// seen before; InjectFault's kernel last when one is pending), enqueues
// rb's copy and synchronizes once, then frees the scratch buffers replaced
// while recording. A step that failed while it was recorded, or whose read
// staging does not fit, is dropped before anything runs: flush returns its
// error and the backend keeps working. Any other failure is the backend's:
// it is recorded (sticky) and returned.
func (b *Backend) flush(rb *readback) error {
	if b.err != nil {
		return b.err
	}
	st := &b.st
	if err := st.err; err != nil {
		st.drop()
		return err
	}
	err := b.dev.do(func() error {
		if err := b.dev.waitUploads(); err != nil {
			return err
		}
		if rb != nil {
			stage, err := b.readStage(rb.bytes, rb.force)
			if err != nil {
				return err
			}
			rb.stage = stage
		}
		if b.fault {
			b.fault = false
			put(st, fault{dst: faultAddr, src: st.tokens()})
		}
		if len(st.ops) > 0 {
			if st.dirty {
				if err := b.dev.copyInAsync(st.dev, st.host, 16*st.cap); err != nil {
					return err
				}
				st.dirty = false
			}
			if err := b.dev.run(st.n, st.ops); err != nil {
				return err
			}
		}
		if rb != nil && rb.stage != nil {
			if err := b.dev.copyOutAsync(rb.stage, rb.src, rb.bytes); err != nil {
				return err
			}
		}
		if err := b.dev.sync(); err != nil {
			return err
		}
		for _, p := range st.retired {
			if err := b.mem.free(p); err != nil {
				return err
			}
		}
		st.retired = st.retired[:0]
		return nil
	})
	if err != nil {
		st.drop()
		return b.failed(err)
	}
	st.ops = st.ops[:0]
	return nil
}

// readStage returns page-locked memory for reads of bytes, or nil when a
// read that large should go straight to Go memory (inside Do). Out of
// memory is a *stepError.
func (b *Backend) readStage(bytes int, force bool) (hostBuf, error) {
	const maxStage = 16 << 20
	if bytes > maxStage && !force {
		return nil, nil
	}
	st := &b.st
	if st.read != nil && st.read.Len() >= bytes {
		return st.read, nil
	}
	if st.read != nil {
		if err := st.read.Free(); err != nil {
			return nil, err
		}
		st.read = nil
	}
	h, err := b.dev.allocHost(max(bytes, 1<<20))
	if err != nil {
		return nil, stepAlloc(fmt.Errorf("read staging of %d bytes: %w", max(bytes, 1<<20), err))
	}
	st.read = h
	return h, nil
}

// Read submits the recorded work and copies the first n rows of src to
// dst, with one synchronization. It fails with the step's failure: an
// error matching cudadrv.ErrOutOfMemory when an allocation for the step
// did not fit (nothing of the step ran; the backend keeps working), or the
// device's error (a launch, copy or synchronization), after which the
// backend is unusable and Err returns it; once the backend is unusable,
// it fails at once with Err's failure.
func (b *Backend) Read(dst []float32, src model.Buf, n int) error {
	s := bufOf(src)
	if n < 0 || n > s.rows || len(dst) < n*s.cols {
		return fmt.Errorf("cuda: Read of %d rows of %d into %d values", n, s.cols, len(dst))
	}
	bytes := 4 * n * s.cols
	if bytes == 0 {
		return b.Sync()
	}
	rb := &readback{src: s.p, bytes: bytes}
	if err := b.flush(rb); err != nil {
		return err
	}
	out := dst[:n*s.cols]
	if rb.stage != nil {
		copy(out, unsafe.Slice((*float32)(rb.stage.Ptr()), len(out)))
		return nil
	}
	return b.failed(b.dev.do(func() error { return copyFromDevice(b.dev, out, s.p) }))
}

// ReadTopK records the top-k selection of the first n rows of src (see
// model.Backend.ReadTopK), submits the step and copies only the n·k
// candidates to the host. It fails as Read does; the selection's scratch
// is one of the step's allocations.
func (b *Backend) ReadTopK(ids []int32, vals []float32, src model.Buf, n, k int) error {
	s := bufOf(src)
	if n < 1 || n > s.rows || k < 1 || k > model.MaxTopK || k > ptx.TopKMax || len(ids) < n*k || len(vals) < n*k {
		return fmt.Errorf("cuda: ReadTopK of %d rows, k=%d into %d ids and %d values", n, k, len(ids), len(vals))
	}
	if b.err != nil {
		return b.err
	}
	out, ok := b.scratchBuf(scrTopKOut, 8*n*k)
	var scr cudadrv.DevicePtr
	if tmp := ptx.TopKScratch(n, s.cols, k); ok && tmp > 0 {
		scr, ok = b.scratchBuf(scrTopK, tmp)
	}
	if ok {
		record(b, topK{vals: out, ids: out.Offset(4 * n * k), src: s.p, scratch: scr, rows: n, cols: s.cols, k: k})
	}
	rb := &readback{src: out, bytes: 8 * n * k, force: true}
	if err := b.flush(rb); err != nil {
		return err
	}
	all := unsafe.Slice((*float32)(rb.stage.Ptr()), 2*n*k)
	copy(vals[:n*k], all[:n*k])
	copy(ids[:n*k], unsafe.Slice((*int32)(unsafe.Pointer(&all[n*k])), n*k))
	return nil
}

// Sync submits the recorded work and waits for it. It fails as Read does.
func (b *Backend) Sync() error { return b.flush(nil) }

// Write submits the recorded work, then copies src into the first
// len(src)/Cols() rows of dst (for tests and tools: filling inputs, or
// poisoning outputs). It fails as Sync does, and as the backend's failure
// when the copy fails.
func (b *Backend) Write(dst model.Buf, src []float32) error {
	d := bufOf(dst)
	if len(src) > d.rows*d.cols {
		return fmt.Errorf("cuda: Write of %d values into %dx%d", len(src), d.rows, d.cols)
	}
	if err := b.Sync(); err != nil {
		return err
	}
	return b.failed(b.dev.do(func() error { return copyToDevice(b.dev, d.p, src) }))
}

// InjectFault is for tests of what uses the backend: the next step
// submitted (by Read, ReadTopK, Sync, or SetBatch when ops are pending)
// also launches a real kernel that writes through an address that is never
// mapped, so that the step fails with the driver's error
// (CUDA_ERROR_ILLEGAL_ADDRESS on current GPUs), exactly as after a real
// device fault: the backend is unusable from then on, Err returns that
// failure, and every later Read, ReadTopK, Sync and SetBatch fails at once
// with it. A backend that has already failed is left as it is.
//
// The fault is a real one: it corrupts the device's primary CUDA context,
// which every Backend of that device in the process shares, and which CUDA
// makes usable again only in a new process. Run a test that injects a fault
// in a process of its own (internal/gputest.Isolate does that).
func (b *Backend) InjectFault() {
	if b.err == nil {
		b.fault = true
	}
}
