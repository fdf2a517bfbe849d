package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/ptx"
)

// flush submits the recorded step in one call on the context's thread:
// the batch upload, the ops (a graph replay when the step has been seen
// before), then read (which enqueues copies to the host) and one
// synchronization, after which done runs (copies out of page-locked
// memory). The first error is recorded and returned.
func (b *Backend) flush(read func(s cudadrv.Stream) error, done func()) error {
	if b.err != nil {
		return b.err
	}
	st := &b.st
	err := b.ctx.Do(func() error {
		if err := b.load.finish(); err != nil {
			return err
		}
		if len(st.ops) > 0 && st.dirty {
			if err := cudadrv.MemcpyHtoDAsync(st.dev, st.host.Ptr(), 16*st.cap, b.stream); err != nil {
				return err
			}
			st.dirty = false
		}
		if len(st.ops) > 0 {
			if err := b.runOps(); err != nil {
				return err
			}
		}
		if read != nil {
			if err := read(b.stream); err != nil {
				return err
			}
		}
		if err := b.stream.Synchronize(); err != nil {
			return err
		}
		var errs []error
		for _, p := range st.retired {
			errs = append(errs, b.mem.free(p))
		}
		st.retired = st.retired[:0]
		return errors.Join(errs...)
	})
	st.ops = st.ops[:0]
	if err != nil {
		b.fail(err)
		return b.err
	}
	if done != nil {
		done()
	}
	return nil
}

// runOps launches the step's ops: through the graph captured for an
// identical step when the batch is small enough, one by one otherwise
// (inside Do).
func (b *Backend) runOps() error {
	ops := b.st.ops
	if b.opts.NoGraphs || b.st.n > GraphMaxRows {
		return b.launchAll(ops)
	}
	for _, o := range ops {
		if o.kind == opGEMM {
			return b.launchAll(ops)
		}
	}
	if exec, ok := b.graphs.find(ops); ok {
		return exec.Launch(b.stream)
	}
	exec, err := b.stream.Capture(func() error { return b.launchAll(ops) })
	if err != nil {
		return err
	}
	b.graphs.add(ops, exec)
	return exec.Launch(b.stream)
}

// launchAll launches ops one by one on the backend's stream.
func (b *Backend) launchAll(ops []op) error {
	for i := range ops {
		if err := b.launch(&ops[i]); err != nil {
			return fmt.Errorf("op %d of %d: %w", i, len(ops), err)
		}
	}
	return nil
}

// launch enqueues the kernel(s) of one op.
func (b *Backend) launch(o *op) error {
	k, s := b.k, b.stream
	switch o.kind {
	case opEmbed:
		return k.Embed(s, o.a, o.b, o.tokens, o.n, o.i0)
	case opRMSNorm:
		return k.RMSNorm(s, o.a, o.b, o.c, o.n, o.i0, o.f)
	case opAddRMSNorm:
		return k.AddRMSNorm(s, o.a, o.b, o.c, o.d, o.n, o.i0, o.f)
	case opHeadRMSNorm:
		return k.HeadRMSNorm(s, o.a, o.b, o.n, o.i0, o.i1, o.f)
	case opMatVec:
		return k.MatVec(s, o.b, o.n, o.i0, o.mv[:o.nmv]...)
	case opGateUp:
		return k.GateUp(s, o.a, o.b, o.c, o.d, o.e, o.n, o.i0, o.i1)
	case opGEMM:
		if b.blas != nil {
			return b.blas.MatMulF16(s, o.a, o.b, o.c, o.n, o.i0, o.i1)
		}
		return k.MatMulF16(s, o.a, o.b, o.c, o.n, o.i0, o.i1)
	case opAddBias:
		return k.AddBias(s, o.a, o.b, o.n, o.i0)
	case opSwiGLU:
		return k.SwiGLU(s, o.a, o.b, o.c, o.n*o.i0)
	case opAdd:
		return k.Add(s, o.a, o.b, o.n*o.i0)
	case opGather:
		return k.GatherRows(s, o.a, o.b, o.c, o.n, o.i0)
	case opRopeTable:
		return k.RopeTable(s, o.a, o.pos, o.b, o.n, o.i0, o.f)
	case opRope:
		return k.Rope(s, o.a, o.b, o.n, o.i0, o.i1, o.i2, o.neox)
	case opKVAppend:
		return k.KVAppend(s, o.attn.Cache, o.a, o.b, o.seq, o.pos, o.n)
	case opRopeAppend:
		return k.RopeAppend(s, o.attn.Cache, o.a, o.b, o.c, o.d, o.seq, o.pos, o.n, o.i0, o.i1, o.i2, o.neox)
	case opAttnDecode:
		return k.AttnDecode(s, &o.attn, o.plan, o.a, o.c, o.d, o.b, o.seq, o.pos, o.n)
	case opAttnPrefill:
		return k.AttnPrefill(s, &o.attn, o.a, o.b, o.seq, o.pos, o.n)
	case opTopK:
		return k.TopK(s, o.a, o.b, o.c, o.d, o.n, o.i0, o.i1)
	}
	return fmt.Errorf("cuda: unknown op kind %d", o.kind)
}

// graphCache holds the executable graphs of the steps seen so far, by
// batch length and op count; each bucket keeps the most recent few.
type graphCache struct {
	m map[graphKey][]graphEntry
}

type graphKey struct{ n, ops int }

type graphEntry struct {
	ops  []op
	exec cudadrv.GraphExec
}

// graphsPerKey bounds the graphs kept per (rows, ops) bucket.
const graphsPerKey = 4

func (c *graphCache) init() { c.m = map[graphKey][]graphEntry{} }

func keyOf(ops []op) graphKey { return graphKey{ops[0].n, len(ops)} }

// find returns the graph captured for a step identical to ops.
func (c *graphCache) find(ops []op) (cudadrv.GraphExec, bool) {
	for _, e := range c.m[keyOf(ops)] {
		if equalOps(e.ops, ops) {
			return e.exec, true
		}
	}
	return 0, false
}

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
func (c *graphCache) add(ops []op, exec cudadrv.GraphExec) {
	key := keyOf(ops)
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

// Graphs returns the number of captured graphs (for tests).
func (b *Backend) Graphs() int {
	n := 0
	for _, list := range b.graphs.m {
		n += len(list)
	}
	return n
}

// readStage returns page-locked memory for reads of bytes, or nil when a
// read that large should go straight to Go memory (inside Do).
func (b *Backend) readStage(bytes int, force bool) (*cudadrv.HostBuffer, error) {
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
	h, err := cudadrv.MemAllocHost(max(bytes, 1<<20))
	if err != nil {
		return nil, err
	}
	st.read = h
	return h, nil
}

// Read submits the recorded work and copies the first n rows of src to
// dst, with one synchronization.
func (b *Backend) Read(dst []float32, src model.Buf, n int) error {
	s := bufOf(src)
	if n < 0 || n > s.rows || len(dst) < n*s.cols {
		return fmt.Errorf("cuda: Read of %d rows of %d into %d values", n, s.cols, len(dst))
	}
	bytes := 4 * n * s.cols
	if bytes == 0 {
		return b.Sync()
	}
	var stage *cudadrv.HostBuffer
	return b.flush(func(st cudadrv.Stream) error {
		var err error
		if stage, err = b.readStage(bytes, false); err != nil || stage == nil {
			return err
		}
		return cudadrv.MemcpyDtoHAsync(stage.Ptr(), s.p, bytes, st)
	}, func() {
		if stage != nil {
			copy(dst[:n*s.cols], unsafe.Slice((*float32)(stage.Ptr()), n*s.cols))
			return
		}
		b.fail(b.ctx.Do(func() error { return cudadrv.CopyFromDevice(dst[:n*s.cols], s.p) }))
	})
}

// ReadTopK records the top-k selection of the first n rows of src (see
// model.Backend.ReadTopK), submits the step and copies only the n·k candidates
// to the host.
func (b *Backend) ReadTopK(ids []int32, vals []float32, src model.Buf, n, k int) error {
	s := bufOf(src)
	if n < 1 || n > s.rows || k < 1 || k > model.MaxTopK || k > ptx.TopKMax || len(ids) < n*k || len(vals) < n*k {
		return fmt.Errorf("cuda: ReadTopK of %d rows, k=%d into %d ids and %d values", n, k, len(ids), len(vals))
	}
	if b.err != nil {
		return b.err
	}
	out, ok := b.scratchBuf(scrTopKOut, 8*n*k)
	if !ok {
		return b.err
	}
	tmp := ptx.TopKScratch(n, s.cols, k)
	var scr cudadrv.DevicePtr
	if tmp > 0 {
		if scr, ok = b.scratchBuf(scrTopK, tmp); !ok {
			return b.err
		}
	}
	b.record(op{kind: opTopK, n: n, a: out, b: out.Offset(4 * n * k), c: s.p, d: scr, i0: s.cols, i1: k})
	bytes := 8 * n * k
	var stage *cudadrv.HostBuffer
	return b.flush(func(st cudadrv.Stream) error {
		var err error
		if stage, err = b.readStage(bytes, true); err != nil {
			return err
		}
		return cudadrv.MemcpyDtoHAsync(stage.Ptr(), out, bytes, st)
	}, func() {
		all := unsafe.Slice((*float32)(stage.Ptr()), 2*n*k)
		copy(vals[:n*k], all[:n*k])
		copy(ids[:n*k], unsafe.Slice((*int32)(unsafe.Pointer(&all[n*k])), n*k))
	})
}

// Sync submits the recorded work and waits for it.
func (b *Backend) Sync() error { return b.flush(nil, nil) }

// Write submits the recorded work, then copies src into the first
// len(src)/Cols() rows of dst (for tests and tools: filling inputs, or
// poisoning outputs).
func (b *Backend) Write(dst model.Buf, src []float32) error {
	d := bufOf(dst)
	if len(src) > d.rows*d.cols {
		return fmt.Errorf("cuda: Write of %d values into %dx%d", len(src), d.rows, d.cols)
	}
	if err := b.Sync(); err != nil {
		return err
	}
	b.do(func() error { return cudadrv.CopyToDevice(d.p, src) })
	return b.err
}
