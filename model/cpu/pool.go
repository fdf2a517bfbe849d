package cpu

import (
	"sync"
)

// pool runs parallel loops on a fixed set of worker goroutines, so that a
// forward pass does not start goroutines per operation.
type pool struct {
	workers  int
	tasks    chan task
	once     sync.Once
	wg       sync.WaitGroup // one run at a time: backend ops are serial
	mu       sync.Mutex
	panicked any // first panic of a worker during the current run
}

type task struct {
	fn     func(chunk, lo, hi int)
	chunk  int
	lo, hi int
	wg     *sync.WaitGroup
}

// call runs the task and hands a panic to the goroutine that called run,
// so that it surfaces where the operation was started (and can be
// recovered there) instead of killing the process from a worker.
func (t task) call(p *pool) {
	defer func() {
		if r := recover(); r != nil {
			p.mu.Lock()
			if p.panicked == nil {
				p.panicked = r
			}
			p.mu.Unlock()
		}
		t.wg.Done()
	}()
	t.fn(t.chunk, t.lo, t.hi)
}

func newPool(workers int) *pool {
	p := &pool{workers: max(workers, 1)}
	if p.workers > 1 {
		p.tasks = make(chan task, p.workers)
		for range p.workers - 1 {
			go func() {
				for t := range p.tasks {
					t.call(p)
				}
			}()
		}
	}
	return p
}

// run calls fn over [0, total) split into at most p.workers chunks of at
// least grain items each; the calling goroutine takes chunk 0 itself. chunk
// is in [0, p.workers), so it can index per-worker scratch.
func (p *pool) run(total, grain int, fn func(chunk, lo, hi int)) {
	chunks := min(p.workers, (total+grain-1)/max(grain, 1))
	if chunks <= 1 {
		if total > 0 {
			fn(0, 0, total)
		}
		return
	}
	wg := &p.wg
	wg.Add(chunks - 1)
	step := (total + chunks - 1) / chunks
	for c := 1; c < chunks; c++ {
		lo, hi := c*step, min((c+1)*step, total)
		p.tasks <- task{fn, c, lo, hi, wg}
	}
	defer func() {
		wg.Wait()
		p.mu.Lock()
		r := p.panicked
		p.panicked = nil
		p.mu.Unlock()
		if r != nil {
			panic(r)
		}
	}()
	fn(0, 0, min(step, total))
}

func (p *pool) close() {
	p.once.Do(func() {
		if p.tasks != nil {
			close(p.tasks)
		}
	})
}
