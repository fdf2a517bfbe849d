package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
)

// scratchSlot names a scratch buffer of the step.
type scratchSlot int

const (
	scrRopeCS   scratchSlot = iota // (batch, ropeDim/2) float2 cos/sin table
	scrPartials                    // attn_decode partial results
	scrCounters                    // attn_decode arrival counters (zeroed)
	scrTopK                        // top-k ping-pong buffers
	scrTopKOut                     // top-k values (rows, k) then ids (rows, k)
	scrDequant                     // a quantized weight as FP16, for a prompt GEMM
	numScratch
)

type scratch struct {
	p   cudadrv.DevicePtr
	cap int // bytes
}

// step is the work being recorded: the batch, its device and page-locked
// copies, the recorded ops and the scratch they use.
type step struct {
	ops   []op
	boxes []boxes // records stored at each index of recent steps (see put)
	n     int     // batch length; 0 before the first batch
	// err is the failure of an allocation for this step (a *stepError):
	// ops are not recorded anymore, and the next submission drops the
	// step and returns err instead of running it.
	err error

	// The batch travels as four int32 arrays of cap entries each: tokens,
	// positions, slots and the row indices of GatherRows, page-locked on
	// the host (filled by SetBatch and GatherRows) and on the device
	// (uploaded in one copy before the step runs).
	cap      int
	dev      cudadrv.DevicePtr
	host     hostBuf
	rowsUsed int
	dirty    bool // host arrays changed since the last upload

	// ropeValid says that the cos/sin table of the batch for ropeKey and
	// ropeScale is in scratch[scrRopeCS]: recorded in this step, or
	// computed by an earlier step of the same batch.
	ropeValid bool
	ropeKey   ropeKey
	ropeScale float32
	invFreq   map[ropeKey]cudadrv.DevicePtr

	scratch [numScratch]scratch
	retired []cudadrv.DevicePtr // freed after the next submission

	read hostBuf // page-locked landing area for Read
}

func (s *step) tokens() cudadrv.DevicePtr { return s.dev }
func (s *step) pos() cudadrv.DevicePtr    { return s.dev.Offset(4 * s.cap) }
func (s *step) seq() cudadrv.DevicePtr    { return s.dev.Offset(8 * s.cap) }
func (s *step) rows() cudadrv.DevicePtr   { return s.dev.Offset(12 * s.cap) }

// hostArrays returns the page-locked tokens, positions, slots and rows.
func (s *step) hostArrays() (tokens, pos, seq, rows []int32) {
	all := unsafe.Slice((*int32)(s.host.Ptr()), 4*s.cap)
	c := s.cap
	return all[:c:c], all[c : 2*c : 2*c], all[2*c : 3*c : 3*c], all[3*c:]
}

// stageRows copies GatherRows indices into the step's row area and returns
// their device address, or 0 when the area is full.
func (s *step) stageRows(rows []int32) cudadrv.DevicePtr {
	if s.rowsUsed+len(rows) > s.cap {
		return 0
	}
	_, _, _, hr := s.hostArrays()
	copy(hr[s.rowsUsed:], rows)
	p := s.rows().Offset(4 * s.rowsUsed)
	s.rowsUsed += len(rows)
	s.dirty = true
	return p
}

// drop forgets the recorded ops and the step's failure: nothing of the
// step ran, so the cos/sin table it recorded was not computed.
func (s *step) drop() {
	s.ops = s.ops[:0]
	s.err = nil
	s.ropeValid = false
}

// close frees the page-locked buffers (device memory is freed by memory).
func (s *step) close() error {
	var errs []error
	for _, h := range []hostBuf{s.host, s.read} {
		if h != nil {
			errs = append(errs, h.Free())
		}
	}
	s.host, s.read = nil, nil
	return errors.Join(errs...)
}

// stepError is the failure of an allocation made for one step: it loses
// that step only (see the package doc). It wraps the driver's error.
type stepError struct{ err error }

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// stepAlloc returns err, the failure of an allocation for the step being
// recorded or submitted, as a *stepError when it is out of memory: that is
// a failure of the step, after which the backend works; any other error
// is the device's.
func stepAlloc(err error) error {
	if err != nil && errors.Is(err, cudadrv.ErrOutOfMemory) {
		return &stepError{err}
	}
	return err
}

// failed sorts err, from the device: a *stepError is returned, named after
// the backend, and leaves the backend working; any other error makes it
// unusable (b.err) and that is returned.
func (b *Backend) failed(err error) error {
	if err == nil {
		return nil
	}
	var se *stepError
	if errors.As(err, &se) {
		return fmt.Errorf("%s: %w", b.Name(), err)
	}
	b.fail(err)
	return b.err
}

// doStep runs fn on the context's thread for the step being recorded and
// reports whether it succeeded. A *stepError from fn fails the step
// (st.err), any other error the backend. Nothing runs once either has
// failed.
func (b *Backend) doStep(fn func() error) bool {
	if b.err != nil || b.st.err != nil {
		return false
	}
	if err := b.failed(b.dev.do(fn)); err != nil {
		if b.err == nil {
			b.st.err = err
		}
		return false
	}
	return true
}

// scratchBuf returns a scratch buffer of at least bytes, growing it if
// needed; a replaced buffer is freed only after the next submission, since
// recorded ops may still name it. New buffers are zeroed. It returns false
// when the step or the backend has failed, or fails now (out of memory
// fails the step only).
func (b *Backend) scratchBuf(slot scratchSlot, bytes int) (cudadrv.DevicePtr, bool) {
	if b.err != nil || b.st.err != nil {
		return 0, false
	}
	sc := &b.st.scratch[slot]
	if sc.cap >= bytes && sc.p != 0 {
		return sc.p, true
	}
	size := max(bytes, 256)
	ok := b.doStep(func() error {
		p, err := b.mem.alloc(int64(size), catScratch)
		if err != nil {
			return stepAlloc(fmt.Errorf("scratch of %d bytes: %w", size, err))
		}
		if err := b.dev.zero(p, size); err != nil {
			return err
		}
		if sc.p != 0 {
			b.st.retired = append(b.st.retired, sc.p)
		}
		sc.p, sc.cap = p, size
		return nil
	})
	return sc.p, ok
}

// SetBatch makes batch the one the following ops act on. Work recorded for
// the previous batch is submitted first, and its failure returned. The
// tokens, positions and slots are copied to page-locked memory; they
// reach the device with the step.
//
// It fails when the batch is malformed or outside the KV cache; with the
// backend's failure (Err) once it is unusable; and with an error matching
// cudadrv.ErrOutOfMemory when a batch longer than any before needs buffers
// that do not fit: then no batch is set (ops panic until a SetBatch
// succeeds) and the backend keeps working.
func (b *Backend) SetBatch(batch *model.Batch) error {
	if b.err != nil {
		return b.err
	}
	n := batch.Len()
	if n == 0 || len(batch.Pos) != n || len(batch.Slot) != n {
		return fmt.Errorf("cuda: batch of %d tokens, %d positions, %d slots", n, len(batch.Pos), len(batch.Slot))
	}
	for i := range n {
		if b.kv.Ctx > 0 && (batch.Pos[i] < 0 || int(batch.Pos[i]) >= b.kv.Ctx || batch.Slot[i] < 0 || int(batch.Slot[i]) >= b.kv.Slots) {
			return fmt.Errorf("cuda: token %d at position %d of slot %d is outside the KV cache (%d slots of %d)",
				i, batch.Pos[i], batch.Slot[i], b.kv.Slots, b.kv.Ctx)
		}
	}
	st := &b.st
	if len(st.ops) > 0 || st.err != nil {
		if err := b.flush(nil); err != nil {
			return err
		}
	}
	if n > st.cap {
		if err := b.failed(b.dev.do(func() error { return b.growBatch(n) })); err != nil {
			st.n = 0
			return err
		}
	}
	tokens, pos, seq, _ := st.hostArrays()
	copy(tokens, batch.Tokens)
	copy(pos, batch.Pos)
	copy(seq, batch.Slot)
	st.n, st.rowsUsed, st.dirty, st.ropeValid = n, 0, true, false
	return nil
}

// growBatch makes room for batches of n tokens (inside Do; no work may be
// in flight). Out of memory is a *stepError.
func (b *Backend) growBatch(n int) error {
	st := &b.st
	if n <= st.cap {
		return nil
	}
	c := (n + 63) &^ 63
	dev, err := b.mem.alloc(16*int64(c), catScratch)
	if err != nil {
		return stepAlloc(fmt.Errorf("batch buffers for %d tokens: %w", c, err))
	}
	host, err := b.dev.allocHost(16 * c)
	if err != nil {
		if ferr := b.mem.free(dev); ferr != nil {
			return ferr
		}
		return stepAlloc(fmt.Errorf("page-locked batch buffers for %d tokens: %w", c, err))
	}
	if st.dev != 0 {
		st.retired = append(st.retired, st.dev)
	}
	var ferr error
	if st.host != nil {
		ferr = st.host.Free()
	}
	st.dev, st.host, st.cap = dev, host, c
	return ferr
}
