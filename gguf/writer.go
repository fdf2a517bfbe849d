package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// TensorSpec declares a tensor for a Writer.
type TensorSpec struct {
	Name string
	Type Type
	// Dims in ggml ne order (Dims[0] innermost).
	Dims []int64
}

// Writer writes a GGUF version 3 file: NewWriter writes the header,
// metadata and tensor infos at once, then the tensor data is streamed in
// declaration order through Write or WriteTensor, and Close checks that
// all of it arrived. Padding between tensors is inserted by the Writer, so
// a caller never holds more than the chunk it is writing.
type Writer struct {
	bw      *bufio.Writer
	specs   []TensorSpec
	sizes   []int64
	align   int64
	cur     int   // tensor being written
	written int64 // bytes of tensor cur written so far
	err     error
}

// ErrWriterState is returned when tensor data does not match the
// declared tensors (too much, too little, or a name out of order).
var ErrWriterState = errors.New("gguf: tensor data does not match the declared tensors")

// NewWriter writes the header of a GGUF v3 file holding md and the declared
// tensors to w. The data alignment is md's general.alignment (u32) or 32.
func NewWriter(w io.Writer, md *Metadata, tensors []TensorSpec) (*Writer, error) {
	gw := &Writer{bw: bufio.NewWriterSize(w, 1<<20), specs: tensors, align: DefaultAlignment}
	if v, ok := md.Lookup(KeyAlignment); ok {
		a, isU32 := v.v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("gguf: %s must be a power-of-two u32, got %s %v", KeyAlignment, v.typ, v.v)
		}
		gw.align = int64(a)
	}
	e := encoder{w: gw.bw}
	e.raw([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(md.Len()))
	for _, kv := range md.KVs() {
		e.str(kv.Key)
		e.u32(uint32(kv.Value.typ))
		if err := e.value(kv.Value); err != nil {
			return nil, fmt.Errorf("gguf: metadata key %q: %w", kv.Key, err)
		}
	}
	seen := make(map[string]bool, len(tensors))
	var off int64
	gw.sizes = make([]int64, len(tensors))
	for i, t := range tensors {
		if seen[t.Name] {
			return nil, fmt.Errorf("gguf: duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		if len(t.Dims) == 0 || len(t.Dims) > MaxDims {
			return nil, fmt.Errorf("gguf: tensor %q has %d dimensions (want 1 to %d)", t.Name, len(t.Dims), MaxDims)
		}
		elems := int64(1)
		for _, d := range t.Dims {
			if d <= 0 || d > math.MaxInt64/elems {
				return nil, fmt.Errorf("gguf: tensor %q has invalid dimensions %v", t.Name, t.Dims)
			}
			elems *= d
		}
		size, ok := t.Type.RowSize(elems)
		if !ok {
			return nil, fmt.Errorf("gguf: tensor %q: %d elements of %s is not a whole number of blocks", t.Name, elems, t.Type)
		}
		gw.sizes[i] = size
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(uint64(d))
		}
		e.u32(uint32(t.Type))
		e.u64(uint64(off))
		off = alignUp(off+size, gw.align)
	}
	if len(tensors) > 0 {
		e.pad(gw.align) // llama.cpp pads only when a data section follows
	}
	if e.err != nil {
		return nil, e.err
	}
	gw.err = gw.skipEmpty()
	return gw, gw.err
}

// skipEmpty advances past tensors that are complete.
func (w *Writer) skipEmpty() error {
	for w.cur < len(w.specs) && w.written == w.sizes[w.cur] {
		w.cur++
		w.written = 0
		if w.cur < len(w.specs) {
			if err := w.padTo(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *Writer) padTo() error {
	prevEnd := w.sizes[w.cur-1]
	pad := alignUp(prevEnd, w.align) - prevEnd
	_, err := w.bw.Write(make([]byte, pad))
	return err
}

// Write appends tensor data. Bytes flow into the declared tensors in order;
// a write may span tensor boundaries.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		if w.cur >= len(w.specs) {
			w.err = fmt.Errorf("%w: %d bytes past the last tensor", ErrWriterState, len(p))
			return n, w.err
		}
		k := min(int64(len(p)), w.sizes[w.cur]-w.written)
		if _, err := w.bw.Write(p[:k]); err != nil {
			w.err = err
			return n, err
		}
		n += int(k)
		p = p[k:]
		w.written += k
		if w.err = w.skipEmpty(); w.err != nil {
			return n, w.err
		}
	}
	return n, nil
}

// WriteTensor writes the whole data of the next tensor, which must be name.
func (w *Writer) WriteTensor(name string, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.cur >= len(w.specs) || w.specs[w.cur].Name != name || w.written != 0 {
		return fmt.Errorf("%w: WriteTensor(%q) out of order", ErrWriterState, name)
	}
	if int64(len(data)) != w.sizes[w.cur] {
		return fmt.Errorf("%w: tensor %q needs %d bytes, got %d", ErrWriterState, name, w.sizes[w.cur], len(data))
	}
	_, err := w.Write(data)
	return err
}

// Close flushes the output and checks that every declared tensor was
// written in full. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.cur < len(w.specs) {
		return fmt.Errorf("%w: tensor %q incomplete (%d of %d bytes)", ErrWriterState, w.specs[w.cur].Name, w.written, w.sizes[w.cur])
	}
	return w.bw.Flush()
}

// Copy writes f (metadata in its order, tensors in their order) as a GGUF
// v3 file to dst.
func Copy(dst io.Writer, f *File) error {
	specs := make([]TensorSpec, len(f.Tensors))
	for i, t := range f.Tensors {
		specs[i] = TensorSpec{Name: t.Name, Type: t.Type, Dims: t.Dims}
	}
	w, err := NewWriter(dst, &f.Metadata, specs)
	if err != nil {
		return err
	}
	for i := range f.Tensors {
		if _, err := io.Copy(w, f.TensorReader(&f.Tensors[i])); err != nil {
			return fmt.Errorf("gguf: copying tensor %q: %w", f.Tensors[i].Name, err)
		}
	}
	return w.Close()
}

type encoder struct {
	w   io.Writer
	n   int64
	err error
	b   [8]byte
}

func (e *encoder) raw(p []byte) {
	if e.err != nil {
		return
	}
	var k int
	k, e.err = e.w.Write(p)
	e.n += int64(k)
}

func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.b[:4], v)
	e.raw(e.b[:4])
}

func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.b[:8], v)
	e.raw(e.b[:8])
}

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	e.raw([]byte(s))
}

func (e *encoder) pad(align int64) {
	e.raw(make([]byte, alignUp(e.n, align)-e.n))
}

func (e *encoder) value(v Value) error {
	switch x := v.v.(type) {
	case string:
		e.str(x)
	case Array:
		return e.array(x)
	default:
		if !v.typ.valid() || valueSizes[v.typ] == 0 {
			return fmt.Errorf("invalid value of type %s", v.typ)
		}
		e.scalar(x)
	}
	return nil
}

func (e *encoder) scalar(x any) {
	switch x := x.(type) {
	case uint8:
		e.raw([]byte{x})
	case int8:
		e.raw([]byte{byte(x)})
	case bool:
		if x {
			e.raw([]byte{1})
		} else {
			e.raw([]byte{0})
		}
	case uint16:
		binary.LittleEndian.PutUint16(e.b[:2], x)
		e.raw(e.b[:2])
	case int16:
		binary.LittleEndian.PutUint16(e.b[:2], uint16(x))
		e.raw(e.b[:2])
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	}
}

func (e *encoder) array(a Array) error {
	if got, ok := arrayDataType(a.Data); ok && got != a.Type || !ok && a.Data != nil {
		return fmt.Errorf("array declared as %s holds %T", a.Type, a.Data)
	}
	e.u32(uint32(a.Type))
	n := a.Len()
	e.u64(uint64(n))
	switch d := a.Data.(type) {
	case []string:
		for _, s := range d {
			e.str(s)
		}
	case []Array:
		for _, sub := range d {
			if err := e.array(sub); err != nil {
				return err
			}
		}
	default:
		for i := 0; i < n; i++ {
			e.scalar(a.Index(i).v)
		}
	}
	return nil
}
