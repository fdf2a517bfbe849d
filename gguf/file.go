// Package gguf reads and writes GGUF files, the model container of ggml and
// llama.cpp, and converts ggml tensor types to float32.
//
// # Layout
//
// A GGUF file is a header (magic "GGUF", version, tensor count, metadata
// count), the metadata key/value pairs, one info record per tensor (name,
// dimensions, type, offset), padding to the alignment, and the tensor data.
// Versions 1 to 3 are read; version 1 stores counts, string lengths and
// dimensions as 32-bit integers, versions 2 and 3 as 64-bit. Only
// little-endian files are supported.
//
// Tensor dimensions are in ggml's ne order: Dims[0] is the innermost,
// contiguous dimension. A weight with Dims [n_embd, n_vocab] therefore holds
// n_vocab rows of n_embd elements.
//
// # Security
//
// GGUF files come from strangers. The reader never panics on malformed input
// and never allocates more than a small multiple of the file's size,
// whatever counts or lengths the file claims: every count is checked against
// the bytes that remain before anything is allocated. Malformed input yields
// a *FormatError that names the problem and its byte offset.
//
// # Memory
//
// Open maps the file read-only; TensorData then returns slices of the
// mapping without copying, valid until Close. NewFile works on any
// io.ReaderAt and reads tensor data on demand.
package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// MaxDims is the largest number of dimensions a tensor may have (GGML_MAX_DIMS).
const MaxDims = 4

// KeyAlignment is the metadata key that sets the data alignment.
const KeyAlignment = "general.alignment"

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name string
	Type Type
	// Dims is in ggml ne order: Dims[0] is the innermost (contiguous) axis.
	Dims []int64
	// Offset is the byte offset of the data from the start of the data
	// section (File.DataOffset).
	Offset int64
	// Size is the number of data bytes.
	Size int64
	// InfoOffset is where this tensor's info record starts in the file.
	InfoOffset int64
}

// Elements returns the number of elements (the product of Dims).
func (t *TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Rows returns the number of rows of Dims[0] elements.
func (t *TensorInfo) Rows() int64 {
	if len(t.Dims) == 0 || t.Dims[0] == 0 {
		return 0
	}
	return t.Elements() / t.Dims[0]
}

// RowAligned reports whether each row (Dims[0] elements) is a whole number
// of blocks, so that rows can be addressed independently. Files written by
// early GGUF converters quantized some tensors as one flat run of blocks
// whose boundaries straddle rows; Open accepts them as long as the element
// count is a whole number of blocks, so they can still be dequantized as a
// whole.
func (t *TensorInfo) RowAligned() bool {
	bs := int64(t.Type.BlockSize())
	return bs > 0 && len(t.Dims) > 0 && t.Dims[0]%bs == 0
}

// File is an opened GGUF file.
type File struct {
	Version  uint32
	Metadata Metadata
	Tensors  []TensorInfo
	// Alignment of the tensor data, from general.alignment or the default.
	Alignment int64
	// DataOffset is the absolute offset of the tensor data section.
	DataOffset int64
	// Size is the file size in bytes.
	Size int64

	r      io.ReaderAt
	mapped []byte // the whole file when memory-mapped
	closer func() error
	byName map[string]int
}

// Open maps the named file and parses it. The caller must Close it.
func Open(name string) (*File, error) {
	fd, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		fd.Close()
		return nil, fmt.Errorf("gguf: %s is not a regular file", name)
	}
	size := st.Size()
	data, unmap, err := mmapFile(fd, size)
	if err != nil {
		// Fall back to reading through the descriptor.
		f, perr := NewFile(fd, size)
		if perr != nil {
			fd.Close()
			return nil, perr
		}
		f.closer = fd.Close
		return f, nil
	}
	fd.Close() // the mapping stays valid without the descriptor
	f, err := newFile(bytes.NewReader(data), size, data)
	if err != nil {
		unmap()
		return nil, err
	}
	f.closer = unmap
	return f, nil
}

// NewFile parses a GGUF file of the given size from r. Tensor data is read
// from r on demand.
func NewFile(r io.ReaderAt, size int64) (*File, error) {
	return newFile(r, size, nil)
}

// Close releases the mapping or descriptor. Slices returned by TensorData
// must not be used afterwards.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	c := f.closer
	f.closer, f.mapped = nil, nil
	return c()
}

// Mapped reports whether tensor data is served from a memory mapping.
func (f *File) Mapped() bool { return f.mapped != nil }

// Tensor returns the info of the named tensor.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the bytes of t. For a mapped file the slice aliases the
// mapping (read-only, valid until Close); otherwise it is a fresh copy.
func (f *File) TensorData(t *TensorInfo) ([]byte, error) {
	start := f.DataOffset + t.Offset
	if f.mapped != nil {
		return f.mapped[start : start+t.Size : start+t.Size], nil
	}
	buf := make([]byte, t.Size)
	if _, err := f.r.ReadAt(buf, start); err != nil {
		return nil, fmt.Errorf("gguf: reading tensor %q: %w", t.Name, err)
	}
	return buf, nil
}

// TensorReader returns a reader over the bytes of t.
func (f *File) TensorReader(t *TensorInfo) *io.SectionReader {
	return io.NewSectionReader(f.r, f.DataOffset+t.Offset, t.Size)
}

// Float32s returns the tensor's elements converted to float32.
func (f *File) Float32s(t *TensorInfo) ([]float32, error) {
	data, err := f.TensorData(t)
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.Elements())
	if err := Dequantize(out, data, t.Type); err != nil {
		return nil, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
	}
	return out, nil
}

// ParameterCount returns the total number of tensor elements.
func (f *File) ParameterCount() int64 {
	var n int64
	for i := range f.Tensors {
		n += f.Tensors[i].Elements()
	}
	return n
}

// MatrixType returns the type that holds the most elements of the
// matrices (tensors of two or more dimensions): the file type llama.cpp's
// loader guesses when general.file_type is absent. It returns TypeF32
// for a file without matrices.
func (f *File) MatrixType() Type {
	elems := map[Type]int64{}
	top := TypeF32
	for i := range f.Tensors {
		if ti := &f.Tensors[i]; len(ti.Dims) >= 2 {
			elems[ti.Type] += ti.Elements()
			if elems[ti.Type] > elems[top] {
				top = ti.Type
			}
		}
	}
	return top
}

// Architecture returns general.architecture, or "" when absent.
func (f *File) Architecture() string {
	s, _ := f.Metadata.String("general.architecture")
	return s
}

func newFile(r io.ReaderAt, size int64, mapped []byte) (*File, error) {
	d := &decoder{r: r, size: size}
	if mapped != nil {
		d.win = mapped // decode straight from the mapping, no copies
	}
	f := &File{Size: size, r: r, mapped: mapped}
	if err := d.header(f); err != nil {
		return nil, err
	}
	return f, nil
}

// decoder reads the header sequentially through a window over an
// io.ReaderAt, so that parsing a mapped file or an *os.File costs few calls.
type decoder struct {
	r       io.ReaderAt
	size    int64
	off     int64 // next byte to decode
	win     []byte
	winOff  int64
	version uint32
}

const windowSize = 64 << 10

// MaxMetadataPairs bounds the metadata pairs of a file. Model files hold a
// few dozen (the big tokenizer tables are single array values); the bound
// keeps the memory of a parse to a small multiple of the file: each pair
// costs about 100 bytes on top of its key and value, so a file of tiny
// pairs (13 bytes each at least) takes at most about 8× its size.
const MaxMetadataPairs = 1 << 16

// next returns the n bytes at the current offset and advances past them.
// The slice is valid until the next call.
func (d *decoder) next(n int64, what string) ([]byte, error) {
	if n < 0 || n > d.size-d.off {
		return nil, &FormatError{Off: d.off, Msg: fmt.Sprintf("file ends inside %s (%d bytes needed, %d left)", what, n, max(d.size-d.off, 0)), Err: ErrTruncated}
	}
	if d.off >= d.winOff && d.off+n <= d.winOff+int64(len(d.win)) {
		b := d.win[d.off-d.winOff : d.off-d.winOff+n]
		d.off += n
		return b, nil
	}
	if n > windowSize {
		b := make([]byte, n)
		if _, err := d.r.ReadAt(b, d.off); err != nil {
			return nil, fmt.Errorf("gguf: reading %s at byte offset %d: %w", what, d.off, err)
		}
		d.off += n
		return b, nil
	}
	wn := min(int64(windowSize), d.size-d.off)
	if int64(cap(d.win)) < wn {
		// Never more than the file: a parse of a small input (a fuzzer's)
		// does not pay for a whole window.
		d.win = make([]byte, min(int64(windowSize), d.size))
	}
	d.win = d.win[:wn]
	if _, err := d.r.ReadAt(d.win, d.off); err != nil && !(err == io.EOF && d.off+wn == d.size) {
		return nil, fmt.Errorf("gguf: reading %s at byte offset %d: %w", what, d.off, err)
	}
	d.winOff = d.off
	d.off += n
	return d.win[:n], nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.next(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.next(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// count reads a length or count field: 32-bit in v1, 64-bit after.
func (d *decoder) count(what string) (uint64, int64, error) {
	at := d.off
	if d.version == 1 {
		v, err := d.u32(what)
		return uint64(v), at, err
	}
	v, err := d.u64(what)
	return v, at, err
}

func (d *decoder) countSize() int64 {
	if d.version == 1 {
		return 4
	}
	return 8
}

// checkCount rejects a count whose minimal encoding (count × minSize bytes)
// cannot fit in what is left of the file. This bounds every allocation by
// the file size.
func (d *decoder) checkCount(n uint64, minSize int64, at int64, what string) error {
	left := d.size - d.off
	if minSize > 0 && n > uint64(left/minSize) {
		return &FormatError{Off: at, Msg: fmt.Sprintf("%s %d exceeds what the remaining %d bytes can hold", what, n, left), Err: ErrTruncated}
	}
	return nil
}

func (d *decoder) str(what string) (string, error) {
	n, at, err := d.count(what + " length")
	if err != nil {
		return "", err
	}
	if err := d.checkCount(n, 1, at, what+" length"); err != nil {
		return "", err
	}
	b, err := d.next(int64(n), what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (d *decoder) header(f *File) error {
	magic, err := d.next(4, "magic")
	if err != nil {
		return &FormatError{Off: 0, Msg: "file too short to be GGUF", Err: ErrNotGGUF}
	}
	if string(magic) != Magic {
		return &FormatError{Off: 0, Msg: "bad magic (not a GGUF file)", Val: fmt.Sprintf("%q", magic), Err: ErrNotGGUF}
	}
	vat := d.off
	v, err := d.u32("version")
	if err != nil {
		return err
	}
	switch {
	case v >= 1 && v <= 3:
	case v&0xffff == 0 && v>>16 != 0:
		return formatErr(vat, "big-endian GGUF files are not supported", v)
	default:
		return formatErr(vat, "unsupported GGUF version", v)
	}
	d.version, f.Version = v, v

	nTensors, tat, err := d.count("tensor count")
	if err != nil {
		return err
	}
	nKV, kat, err := d.count("metadata count")
	if err != nil {
		return err
	}
	// Minimal encodings: a KV is key length + type (+ at least one byte of
	// value); a tensor info is name length + n_dims + one dim + type + offset.
	if err := d.checkCount(nKV, d.countSize()+4+1, kat, "metadata count"); err != nil {
		return err
	}
	if nKV > MaxMetadataPairs {
		return formatErr(kat, fmt.Sprintf("metadata count is more than the %d pairs a model file may hold", MaxMetadataPairs), nKV)
	}
	f.Metadata.reserve(int(nKV))
	for i := uint64(0); i < nKV; i++ {
		if err := d.kv(&f.Metadata); err != nil {
			return err
		}
	}
	if err := d.checkCount(nTensors, d.countSize()+4+4+4+8, tat, "tensor count"); err != nil {
		return err
	}

	f.Alignment = DefaultAlignment
	if v, ok := f.Metadata.Lookup(KeyAlignment); ok {
		a, isU32 := v.v.(uint32)
		if !isU32 {
			return formatErr(vat, fmt.Sprintf("%s has type %s, want u32", KeyAlignment, v.typ), nil)
		}
		if a == 0 || a&(a-1) != 0 {
			return formatErr(vat, KeyAlignment+" is not a power of two", a)
		}
		f.Alignment = int64(a)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.byName = make(map[string]int, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		ti, err := d.tensorInfo()
		if err != nil {
			return err
		}
		if _, dup := f.byName[ti.Name]; dup {
			return formatErr(ti.InfoOffset, "duplicate tensor name", ti.Name)
		}
		f.byName[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	f.DataOffset = alignUp(d.off, f.Alignment)
	return f.checkTensorData()
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

func (f *File) checkTensorData() error {
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.DataOffset > f.Size {
		return &FormatError{Off: f.Size, Msg: "file ends before the tensor data section", Err: ErrTruncated}
	}
	dataSize := f.Size - f.DataOffset
	order := make([]int, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		order[i] = i
		if t.Offset%f.Alignment != 0 {
			return formatErr(t.InfoOffset, fmt.Sprintf("tensor %q data offset %d is not a multiple of the alignment %d", t.Name, t.Offset, f.Alignment), nil)
		}
		if t.Offset > dataSize || t.Size > dataSize-t.Offset {
			return &FormatError{Off: t.InfoOffset, Msg: fmt.Sprintf("tensor %q data [%d, %d) runs past the end of the file (data section is %d bytes)", t.Name, t.Offset, t.Offset+t.Size, dataSize), Err: ErrTruncated}
		}
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		prev, cur := &f.Tensors[order[k-1]], &f.Tensors[order[k]]
		if cur.Offset < prev.Offset+prev.Size {
			return formatErr(cur.InfoOffset, fmt.Sprintf("tensor %q data overlaps tensor %q", cur.Name, prev.Name), nil)
		}
	}
	return nil
}

func (d *decoder) tensorInfo() (TensorInfo, error) {
	ti := TensorInfo{InfoOffset: d.off}
	name, err := d.str("tensor name")
	if err != nil {
		return ti, err
	}
	ti.Name = name
	nat := d.off
	nDims, err := d.u32("tensor dimension count")
	if err != nil {
		return ti, err
	}
	if nDims == 0 || nDims > MaxDims {
		return ti, formatErr(nat, fmt.Sprintf("tensor %q has %d dimensions (want 1 to %d)", name, nDims, MaxDims), nil)
	}
	ti.Dims = make([]int64, nDims)
	elems := int64(1)
	for j := range ti.Dims {
		dat := d.off
		var dim uint64
		if d.version == 1 {
			v, err := d.u32("tensor dimension")
			if err != nil {
				return ti, err
			}
			dim = uint64(v)
		} else if dim, err = d.u64("tensor dimension"); err != nil {
			return ti, err
		}
		if dim == 0 || dim > math.MaxInt64/uint64(elems) {
			return ti, formatErr(dat, fmt.Sprintf("tensor %q dimension %d is zero or overflows the element count", name, j), dim)
		}
		ti.Dims[j] = int64(dim)
		elems *= int64(dim)
	}
	tat := d.off
	typ, err := d.u32("tensor type")
	if err != nil {
		return ti, err
	}
	ti.Type = Type(typ)
	if !ti.Type.Known() {
		return ti, formatErr(tat, fmt.Sprintf("tensor %q has unknown type id", name), typ)
	}
	size, ok := ti.Type.RowSize(elems)
	if !ok {
		return ti, formatErr(tat, fmt.Sprintf("tensor %q has %d elements, not a multiple of the %s block size %d", name, elems, ti.Type, ti.Type.BlockSize()), nil)
	}
	ti.Size = size
	oat := d.off
	off, err := d.u64("tensor data offset")
	if err != nil {
		return ti, err
	}
	if off > math.MaxInt64 {
		return ti, formatErr(oat, fmt.Sprintf("tensor %q data offset is out of range", name), off)
	}
	ti.Offset = int64(off)
	return ti, nil
}

func (d *decoder) kv(m *Metadata) error {
	at := d.off
	key, err := d.str("metadata key")
	if err != nil {
		return err
	}
	if m.Has(key) {
		return formatErr(at, "duplicate metadata key", key)
	}
	tat := d.off
	t, err := d.u32("metadata value type")
	if err != nil {
		return err
	}
	v, err := d.value(ValueType(t), tat, key, 0)
	if err != nil {
		return err
	}
	m.Set(key, v)
	return nil
}

// maxNesting bounds nested arrays so that recursion depth is bounded.
const maxNesting = 8

func (d *decoder) value(t ValueType, tat int64, key string, depth int) (Value, error) {
	if !t.valid() {
		return Value{}, formatErr(tat, fmt.Sprintf("metadata key %q has unknown value type", key), uint32(t))
	}
	switch t {
	case ValueString:
		s, err := d.str("string value of " + key)
		return Value{t, s}, err
	case ValueArray:
		a, err := d.array(key, depth)
		return Value{t, a}, err
	}
	b, err := d.next(int64(valueSizes[t]), "value of "+key)
	if err != nil {
		return Value{}, err
	}
	return Value{t, scalar(t, b)}, nil
}

func scalar(t ValueType, b []byte) any {
	le := binary.LittleEndian
	switch t {
	case ValueUint8:
		return b[0]
	case ValueInt8:
		return int8(b[0])
	case ValueUint16:
		return le.Uint16(b)
	case ValueInt16:
		return int16(le.Uint16(b))
	case ValueUint32:
		return le.Uint32(b)
	case ValueInt32:
		return int32(le.Uint32(b))
	case ValueFloat32:
		return math.Float32frombits(le.Uint32(b))
	case ValueBool:
		return b[0] != 0
	case ValueUint64:
		return le.Uint64(b)
	case ValueInt64:
		return int64(le.Uint64(b))
	case ValueFloat64:
		return math.Float64frombits(le.Uint64(b))
	}
	panic("gguf: scalar of non-scalar type")
}

func (d *decoder) array(key string, depth int) (Array, error) {
	eat := d.off
	if depth >= maxNesting {
		return Array{}, formatErr(eat, fmt.Sprintf("metadata key %q nests arrays deeper than %d", key, maxNesting), nil)
	}
	et, err := d.u32("array element type of " + key)
	if err != nil {
		return Array{}, err
	}
	elem := ValueType(et)
	if !elem.valid() {
		return Array{}, formatErr(eat, fmt.Sprintf("metadata key %q has unknown array element type", key), et)
	}
	n, nat, err := d.count("array length of " + key)
	if err != nil {
		return Array{}, err
	}
	minSize := int64(valueSizes[elem])
	switch elem {
	case ValueString:
		minSize = d.countSize()
	case ValueArray:
		minSize = 4 + d.countSize()
	}
	if err := d.checkCount(n, minSize, nat, "array length of "+key); err != nil {
		return Array{}, err
	}
	a := Array{Type: elem}
	switch elem {
	case ValueString:
		s := make([]string, n)
		for i := range s {
			if s[i], err = d.str("string element of " + key); err != nil {
				return a, err
			}
		}
		a.Data = s
	case ValueArray:
		s := make([]Array, n)
		for i := range s {
			if s[i], err = d.array(key, depth+1); err != nil {
				return a, err
			}
		}
		a.Data = s
	default:
		b, err := d.next(int64(n)*minSize, "array data of "+key)
		if err != nil {
			return a, err
		}
		a.Data = decodeScalars(elem, b, int(n))
	}
	return a, nil
}

func decodeScalars(t ValueType, b []byte, n int) any {
	le := binary.LittleEndian
	switch t {
	case ValueUint8:
		return append([]uint8(nil), b...)
	case ValueInt8:
		s := make([]int8, n)
		for i := range s {
			s[i] = int8(b[i])
		}
		return s
	case ValueBool:
		s := make([]bool, n)
		for i := range s {
			s[i] = b[i] != 0
		}
		return s
	case ValueUint16:
		s := make([]uint16, n)
		for i := range s {
			s[i] = le.Uint16(b[2*i:])
		}
		return s
	case ValueInt16:
		s := make([]int16, n)
		for i := range s {
			s[i] = int16(le.Uint16(b[2*i:]))
		}
		return s
	case ValueUint32:
		s := make([]uint32, n)
		for i := range s {
			s[i] = le.Uint32(b[4*i:])
		}
		return s
	case ValueInt32:
		s := make([]int32, n)
		for i := range s {
			s[i] = int32(le.Uint32(b[4*i:]))
		}
		return s
	case ValueFloat32:
		s := make([]float32, n)
		for i := range s {
			s[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return s
	case ValueUint64:
		s := make([]uint64, n)
		for i := range s {
			s[i] = le.Uint64(b[8*i:])
		}
		return s
	case ValueInt64:
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(le.Uint64(b[8*i:]))
		}
		return s
	case ValueFloat64:
		s := make([]float64, n)
		for i := range s {
			s[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return s
	}
	panic("gguf: decodeScalars of non-scalar type")
}
