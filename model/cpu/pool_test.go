package cpu

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPoolCoversRangeOnce(t *testing.T) {
	p := newPool(3)
	defer p.close()
	for _, total := range []int{0, 1, 2, 7, 100, 1001} {
		hits := make([]int32, total)
		var chunks [3]int32
		p.run(total, 5, func(chunk, lo, hi int) {
			atomic.AddInt32(&chunks[chunk], 1)
			for i := lo; i < hi; i++ {
				atomic.AddInt32(&hits[i], 1)
			}
		})
		for i, h := range hits {
			require.EqualValues(t, 1, h, "total %d item %d", total, i)
		}
		for c, n := range chunks {
			assert.LessOrEqual(t, n, int32(1), "chunk %d used once", c)
		}
	}
}

// TestPoolPanicReachesCaller checks that a panic on a worker goroutine is
// raised in the goroutine that called run, where it can be recovered.
func TestPoolPanicReachesCaller(t *testing.T) {
	p := newPool(2)
	defer p.close()
	recovered := func() (r any) {
		defer func() { r = recover() }()
		p.run(100, 1, func(chunk, lo, hi int) {
			if chunk == 1 {
				panic("boom in a worker")
			}
		})
		return nil
	}()
	assert.Equal(t, "boom in a worker", recovered)
	// The pool still works afterwards.
	var n atomic.Int32
	p.run(10, 1, func(_, lo, hi int) { n.Add(int32(hi - lo)) })
	assert.EqualValues(t, 10, n.Load())
}
