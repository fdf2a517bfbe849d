package cpu

import (
	"unsafe"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
)

// weight is a (rows, cols) matrix in its stored type. F32 data and
// row-aligned data of any type with a dequantizer are used in place
// (aliasing the file mapping); a row of another type is dequantized into
// scratch when it is needed, so the model is never expanded to float32.
// Vectors (rows == 1) and tensors whose rows are not whole blocks are
// converted to float32 at load.
type weight struct {
	typ        gguf.Type
	rows, cols int
	f32        []float32 // rows*cols values when typ is F32
	raw        []byte    // stored bytes otherwise
	rowBytes   int
}

func (w *weight) Shape() (int, int) { return w.rows, w.cols }

func newWeight(ti *gguf.TensorInfo, data []byte) (*weight, error) {
	rows, cols := int(ti.Rows()), int(ti.Dims[0])
	w := &weight{typ: ti.Type, rows: rows, cols: cols}
	if !ti.Type.CanDequantize() {
		return nil, &model.UnsupportedError{What: "tensor type", Value: ti.Type.String(), By: "the cpu backend"}
	}
	aligned := ti.RowAligned()
	switch {
	case ti.Type == gguf.TypeF32 && uintptr(unsafe.Pointer(unsafe.SliceData(data)))%4 == 0:
		w.f32 = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(data))), rows*cols)
	case rows == 1 || !aligned || ti.Type == gguf.TypeF32:
		w.typ = gguf.TypeF32
		w.f32 = make([]float32, rows*cols)
		if err := gguf.Dequantize(w.f32, data, ti.Type); err != nil {
			return nil, err
		}
	default:
		w.raw = data
		w.rowBytes = len(data) / rows
	}
	return w, nil
}

// row returns row r as float32: a view for F32 weights, else dequantized
// into scratch (len ≥ cols).
func (w *weight) row(r int, scratch []float32) []float32 {
	if w.f32 != nil {
		return w.f32[r*w.cols : (r+1)*w.cols : (r+1)*w.cols]
	}
	dst := scratch[:w.cols]
	raw := w.raw[r*w.rowBytes : (r+1)*w.rowBytes]
	if !rowToF32(w.typ, dst, raw) {
		// Lengths were validated at load; Dequantize cannot fail here.
		_ = gguf.Dequantize(dst, raw, w.typ)
	}
	return dst
}

// vec returns a vector weight's values.
func (w *weight) vec() []float32 { return w.f32 }
