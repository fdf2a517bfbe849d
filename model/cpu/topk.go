package cpu

import (
	"fmt"

	"github.com/m40llm/m40llm/model"
)

// ReadTopK selects the k largest values of each of the first n rows of src
// with model.TopK, the reference every other backend's ReadTopK is tested
// against. It fails on a bad k or short ids or vals.
func (b *Backend) ReadTopK(ids []int32, vals []float32, src model.Buf, n, k int) error {
	s := src.(*buf)
	if k < 1 || k > model.MaxTopK || len(ids) < n*k || len(vals) < n*k || n > s.rows {
		return fmt.Errorf("cpu: ReadTopK of %d rows, k=%d into %d ids and %d values", n, k, len(ids), len(vals))
	}
	for i := range n {
		model.TopK(ids[i*k:(i+1)*k], vals[i*k:(i+1)*k], s.row(i))
	}
	return nil
}
