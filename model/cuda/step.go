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

// scratchBuf returns a scratch buffer of at least bytes, growing it if
// needed; a replaced buffer is freed only after the next submission, since
// recorded ops may still name it. New buffers are zeroed.
func (b *Backend) scratchBuf(slot scratchSlot, bytes int) (cudadrv.DevicePtr, bool) {
	sc := &b.st.scratch[slot]
	if sc.cap >= bytes && sc.p != 0 {
		return sc.p, true
	}
	size := max(bytes, 256)
	b.do(func() error {
		p, err := b.mem.alloc(int64(size), catScratch)
		if err != nil {
			return fmt.Errorf("scratch of %d bytes: %w", size, err)
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
	return sc.p, b.err == nil
}

// SetBatch makes batch the one the following ops act on. Work recorded for
// the previous batch is submitted first. The tokens, positions and slots
// are copied to page-locked memory; they reach the device with the step.
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
	if len(st.ops) > 0 {
		if err := b.flush(nil); err != nil {
			return err
		}
	}
	if n > st.cap {
		b.do(func() error { return b.growBatch(n) })
		if b.err != nil {
			return b.err
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
// in flight).
func (b *Backend) growBatch(n int) error {
	st := &b.st
	if n <= st.cap {
		return nil
	}
	c := (n + 63) &^ 63
	dev, err := b.mem.alloc(16*int64(c), catScratch)
	if err != nil {
		return fmt.Errorf("batch buffers for %d tokens: %w", c, err)
	}
	host, err := b.dev.allocHost(16 * c)
	if err != nil {
		if ferr := b.mem.free(dev); ferr != nil {
			return ferr
		}
		return fmt.Errorf("page-locked batch buffers for %d tokens: %w", c, err)
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
