package cuda

import (
	"errors"
	"fmt"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/ptx"
)

var _ model.WeightStreamer = (*Backend)(nil)

// streamed is the device buffer that holds a streamed weight for one
// product (StreamMatMul), grown to the largest one seen.
type streamed struct {
	p   cudadrv.DevicePtr
	cap int64
}

// StreamMatMul is MatMul with a matrix that stays in host memory: ti's
// bytes as the file stores them (data) are copied into a reused device
// buffer for this product only, quantized types in their own encoding
// (as LoadWeight keeps them), others converted to FP16 (model.WeightStreamer).
// The work recorded before it and the product itself are submitted and
// waited for, so that the buffer can take the next weight.
//
// It returns false, having done nothing, when the buffer for the matrix
// does not fit in device memory or ti is not a matrix of a type the
// backend runs: the caller then runs the product where the weight lives.
// It fails as Sync does (the work before it, or the product).
func (b *Backend) StreamMatMul(dst, x model.Buf, ti *gguf.TensorInfo, data []byte, n int) (bool, error) {
	if b.err != nil {
		return false, b.err
	}
	rows, cols := int(ti.Rows()), int(ti.Dims[0])
	if rows <= 1 || cols <= 0 || !ti.Type.CanDequantize() {
		return false, nil
	}
	qt, quant := b.quantized(ti)
	bytes := 2 * int64(rows) * int64(cols)
	if quant {
		bytes = quantBytes(qt, int64(rows), int64(cols))
		if want, _ := ti.Type.RowSize(int64(rows) * int64(cols)); int64(len(data)) != want {
			return false, fmt.Errorf("cuda: tensor %s: %d bytes of data, want %d", ti.Name, len(data), want)
		}
	}
	// The buffer may be named by recorded work until it is submitted.
	if err := b.Sync(); err != nil {
		return false, err
	}
	if b.stream.cap < bytes {
		err := b.dev.do(func() error {
			if err := b.mem.free(b.stream.p); err != nil {
				return err
			}
			b.stream = streamed{}
			p, err := b.mem.alloc(alignUp(bytes), catScratch)
			if err != nil {
				return err
			}
			b.stream = streamed{p: p, cap: alignUp(bytes)}
			return nil
		})
		if err != nil {
			if errors.Is(err, cudadrv.ErrOutOfMemory) {
				return false, nil
			}
			b.fail(err)
			return false, err
		}
	}
	w := &weight{rows: rows, cols: cols}
	var err error
	if quant {
		w.q = &ptx.QuantWeight{Type: qt, M: rows, K: cols}
		off := int64(0)
		for j, size := range qt.PlaneBytes(int64(rows), int64(cols)) {
			if size > 0 {
				w.q.Planes[j] = b.stream.p.Offset(int(off))
				off += alignUp(size)
			}
		}
		err = b.dev.uploadQuant(w.q.Planes, qt, data)
	} else {
		w.f16, w.p = true, b.stream.p
		err = b.dev.upload(w.p, ti, data)
	}
	if err != nil {
		b.fail(err)
		return false, err
	}
	b.MatMul(dst, x, w, nil, n)
	return true, b.Sync()
}
