package cpu

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkRuns runs jobs of many sizes on p and checks that every item is
// covered exactly once, that chunk is in range and that no two calls with
// the same chunk overlap.
func checkRuns(t *testing.T, p *pool, rounds int) {
	t.Helper()
	busy := make([]int32, p.workers)
	for round := range rounds {
		for _, total := range []int{0, 1, 2, 7, 100, 1001} {
			hits := make([]int32, total)
			var bad atomic.Int32
			p.run(total, 1+round%5, func(chunk, lo, hi int) {
				if chunk < 0 || chunk >= p.workers || atomic.AddInt32(&busy[chunk], 1) != 1 {
					bad.Add(1)
					return
				}
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&hits[i], 1)
				}
				atomic.AddInt32(&busy[chunk], -1)
			})
			require.Zero(t, bad.Load(), "total %d: chunk out of range or used twice at once", total)
			for i, h := range hits {
				require.EqualValues(t, 1, h, "total %d item %d", total, i)
			}
		}
	}
}

func TestPoolCoversRangeOnce(t *testing.T) {
	for _, spin := range []time.Duration{poolSpin, 0} {
		for _, workers := range []int{1, 2, 3, 8} {
			p := newPoolSpin(workers, spin) // 0: every wait parks
			checkRuns(t, p, 200)
			p.close()
		}
	}
}

// TestPoolUsesWorkers checks that a job is shared: while the caller's
// first range (any of them) blocks, the other ranges run on the workers (64 items on
// 4 goroutines: ranges of 4).
func TestPoolUsesWorkers(t *testing.T) {
	for _, spin := range []time.Duration{poolSpin, 0} {
		p := newPoolSpin(4, spin)
		release := make(chan struct{})
		var others atomic.Int32
		blocked := false // only chunk 0 reads and writes it
		p.run(64, 1, func(chunk, lo, hi int) {
			if chunk != 0 {
				if others.Add(int32(hi-lo)) == 64-4 { // all but the caller's range
					close(release)
				}
				return
			}
			if !blocked { // the caller's first range, wherever it is
				blocked = true
				select {
				case <-release:
				case <-time.After(10 * time.Second):
					t.Error("the workers did not take the other ranges")
				}
			}
		})
		assert.EqualValues(t, 64-4, others.Load(), "spin %v", spin)
		p.close()
	}
}

// TestPoolPanicReachesCaller checks that a panic on a worker goroutine is
// raised in the goroutine that called run, where it can be recovered.
func TestPoolPanicReachesCaller(t *testing.T) {
	p := newPool(2)
	defer p.close()
	recovered := func() (r any) {
		defer func() { r = recover() }()
		ran := make(chan struct{})
		p.run(100, 1, func(chunk, lo, hi int) {
			if chunk == 1 {
				close(ran)
				panic("boom in a worker")
			}
			if lo == 0 {
				select { // keep the caller busy until the worker has a range
				case <-ran:
				case <-time.After(10 * time.Second):
				}
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

// BenchmarkPoolRun measures the hand-off of an empty job to every worker
// and back: the fixed cost of each parallel op.
func BenchmarkPoolRun(b *testing.B) {
	for _, workers := range []int{2, 4} {
		b.Run(map[int]string{2: "w2", 4: "w4"}[workers], func(b *testing.B) {
			p := newPool(workers)
			defer p.close()
			for b.Loop() {
				p.run(workers, 1, func(_, _, _ int) {})
			}
		})
	}
}
