package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// poolSpin is how long an idle worker, or a caller waiting for its
// workers, polls before it parks. A decode step's products follow each
// other within microseconds (norms, adds and the activation quantizer run
// between them), so polling that long skips the futex wake-up of every
// worker for every product; between steps the workers park. Pollers yield
// their P every few microseconds (runtime.Gosched), so that other
// goroutines of the process are not held up while every P polls.
var poolSpin = 100 * time.Microsecond

// pool runs parallel loops on a fixed set of worker goroutines, so that a
// forward pass does not start goroutines per operation.
//
// A job is handed over through shared fields and a generation counter:
// run writes the job, then increments gen; idle workers poll gen for
// poolSpin, then park on their wake channel (run wakes the parked ones it
// needs). The items of a job are claimed in ranges from one atomic
// counter, so a slow or descheduled worker delays the job by one range,
// not by a whole share. Which worker computes an item never changes the
// item's result: every kernel's output depends only on its own item.
type pool struct {
	workers int
	spin    time.Duration // 0: park at once (more workers than GOMAXPROCS)

	// The current job: written by run before gen moves, read by the
	// holders of a ticket.
	fn          func(chunk, lo, hi int)
	total, step int

	_       [64]byte
	gen     atomic.Uint64 // job generation; moves once per job and on close
	_       [56]byte
	next    atomic.Int64 // first item not claimed yet
	_       [56]byte
	tickets atomic.Int32 // workers that may still join the job
	pending atomic.Int32 // ticket holders that have not finished
	closed  atomic.Bool

	sleeping []atomic.Bool   // per worker: parked on wake[w]
	wake     []chan struct{} // per worker, one token at most
	waiting  atomic.Bool     // the caller is parked on done
	done     chan struct{}   // one token at most
	once     sync.Once
	mu       sync.Mutex
	panicked any // first panic of the current job
}

// newPool starts a pool of workers goroutines (counting the caller of
// run) whose idle ones poll for poolSpin, or park at once when there are
// more of them than GOMAXPROCS.
func newPool(workers int) *pool {
	spin := poolSpin
	if workers > runtime.GOMAXPROCS(0) {
		spin = 0
	}
	return newPoolSpin(workers, spin)
}

// newPoolSpin is newPool with idle workers polling for spin.
func newPoolSpin(workers int, spin time.Duration) *pool {
	p := &pool{workers: max(workers, 1), spin: spin}
	if p.workers > 1 {
		p.sleeping = make([]atomic.Bool, p.workers)
		p.wake = make([]chan struct{}, p.workers)
		p.done = make(chan struct{}, 1)
		for w := 1; w < p.workers; w++ {
			p.wake[w] = make(chan struct{}, 1)
			go p.worker(w)
		}
	}
	return p
}

// worker runs jobs as chunk w until the pool closes.
func (p *pool) worker(w int) {
	var seen uint64
	for {
		seen = p.wait(w, seen)
		if p.closed.Load() {
			return
		}
		if p.tickets.Add(-1) < 0 {
			continue // the job has all the workers it asked for
		}
		p.work(w)
		if p.pending.Add(-1) == 0 && p.waiting.CompareAndSwap(true, false) {
			p.done <- struct{}{}
		}
	}
}

// wait returns the generation once it differs from seen: polling for
// p.spin, then parked. The sleeping flag is set before the last look at
// gen and run moves gen before it looks at the flags, so one of the two
// always sees the other.
func (p *pool) wait(w int, seen uint64) uint64 {
	if p.spin > 0 {
		start := time.Now()
		for i := 1; ; i++ {
			if g := p.gen.Load(); g != seen {
				return g
			}
			spinPause()
			if i%256 == 0 {
				if time.Since(start) > p.spin {
					break
				}
				runtime.Gosched() // let other goroutines have this P
			}
		}
	}
	s := &p.sleeping[w]
	for {
		s.Store(true)
		if g := p.gen.Load(); g != seen {
			if !s.CompareAndSwap(true, false) {
				<-p.wake[w] // run took the flag: take its token
			}
			return g
		}
		<-p.wake[w]
		if g := p.gen.Load(); g != seen {
			return g
		}
	}
}

// work claims ranges of the current job until none is left and runs them
// as chunk c. A panic stops the job's claims and is kept for run.
func (p *pool) work(c int) {
	defer func() {
		if r := recover(); r != nil {
			p.next.Store(int64(p.total))
			p.mu.Lock()
			if p.panicked == nil {
				p.panicked = r
			}
			p.mu.Unlock()
		}
	}()
	total, step, fn := p.total, p.step, p.fn
	for {
		lo := int(p.next.Add(int64(step))) - step
		if lo >= total {
			return
		}
		fn(c, lo, min(lo+step, total))
	}
}

// run calls fn over [0, total) in ranges of at least grain items, spread
// over at most p.workers goroutines (the caller is one of them), and
// returns when all ranges are done. chunk is in [0, p.workers) and no two
// calls with the same chunk overlap, so it can index per-worker scratch;
// one chunk may get several ranges. A panic in fn is raised here (the
// first one, after every range has finished or been dropped). run must
// not be called concurrently or from fn.
func (p *pool) run(total, grain int, fn func(chunk, lo, hi int)) {
	grain = max(grain, 1)
	chunks := min(p.workers, (total+grain-1)/grain)
	if chunks <= 1 {
		if total > 0 {
			fn(0, 0, total)
		}
		return
	}
	// About four ranges per goroutine: small enough to even out a slow
	// worker, large enough that claims are rare.
	p.fn, p.total = fn, total
	p.step = max(grain, (total+4*chunks-1)/(4*chunks))
	p.next.Store(0)
	helpers := int32(chunks - 1)
	p.pending.Store(helpers)
	p.tickets.Store(helpers)
	p.gen.Add(1)
	woken := int32(0)
	for w := 1; w < p.workers && woken < helpers; w++ {
		if p.sleeping[w].Load() && p.sleeping[w].CompareAndSwap(true, false) {
			p.wake[w] <- struct{}{}
			woken++
		}
	}
	p.work(0)
	p.awaitHelpers()
	p.fn = nil
	p.mu.Lock()
	r := p.panicked
	p.panicked = nil
	p.mu.Unlock()
	if r != nil {
		panic(r)
	}
}

// awaitHelpers returns when every ticket holder of the job has finished:
// polling for p.spin, then parked on done. It is called once every item
// is claimed, so it first withdraws the tickets not taken yet: a worker
// that wakes late finds the job full and is not waited for.
func (p *pool) awaitHelpers() {
	for {
		t := p.tickets.Load()
		if t <= 0 {
			break
		}
		if p.tickets.CompareAndSwap(t, 0) {
			p.pending.Add(-t)
			break
		}
	}
	start := time.Now()
	for i := 1; p.spin > 0 && p.pending.Load() != 0; i++ {
		spinPause()
		if i%256 == 0 {
			if time.Since(start) > p.spin {
				break
			}
			runtime.Gosched()
		}
	}
	for p.pending.Load() != 0 {
		p.waiting.Store(true)
		if p.pending.Load() == 0 {
			if !p.waiting.CompareAndSwap(true, false) {
				<-p.done // a finisher took the flag: take its token
			}
			return
		}
		<-p.done // may be a late token of an earlier job: look again
	}
}

// close stops the workers; the pool must not be used afterwards.
func (p *pool) close() {
	p.once.Do(func() {
		if p.workers <= 1 {
			return
		}
		p.closed.Store(true)
		p.gen.Add(1)
		for w := 1; w < p.workers; w++ {
			if p.sleeping[w].Load() && p.sleeping[w].CompareAndSwap(true, false) {
				p.wake[w] <- struct{}{}
			}
		}
	})
}
