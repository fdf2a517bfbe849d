package cudadrv

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/m40llm/m40llm/internal/dl"
)

// Context owns a device's primary CUDA context and the one OS thread on
// which it is current. All work that needs the context runs through Do.
//
// Close the Context when done; it releases the primary context, which frees
// all of its memory, modules, streams and graphs once no other Context for
// the same device holds it.
type Context struct {
	dev  Device
	tid  int // OS thread id of the owning goroutine
	reqs chan request
	done chan struct{}

	mu     sync.RWMutex // held for reading by Do, for writing by Close
	closed bool
}

type request struct {
	fn   func() error
	resp chan response
}

type response struct {
	err   error
	panic any
	ok    bool // fn returned normally
}

// NewContext retains dev's primary context on a new goroutine locked to its
// OS thread and makes it current there.
func NewContext(dev Device) (*Context, error) {
	if _, err := get("cuDevicePrimaryCtxRetain"); err != nil {
		return nil, err
	}
	c := &Context{dev: dev, reqs: make(chan request), done: make(chan struct{})}
	ready := make(chan error, 1)
	go c.serve(ready)
	if err := <-ready; err != nil {
		<-c.done
		return nil, err
	}
	return c, nil
}

// serve runs on the locked thread until Close.
func (c *Context) serve(ready chan<- error) {
	// Never unlocked: the thread exits with this goroutine, taking its
	// current-context state with it.
	runtime.LockOSThread()
	defer close(c.done)
	d := drv.Load()
	var h uintptr
	if err := check("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&h, c.dev)); err != nil {
		ready <- fmt.Errorf("device %d: %w", c.dev, err)
		return
	}
	if err := check("cuCtxSetCurrent", d.cuCtxSetCurrent(h)); err != nil {
		d.cuDevicePrimaryCtxRelease(c.dev)
		ready <- fmt.Errorf("device %d: %w", c.dev, err)
		return
	}
	c.tid = dl.Gettid()
	ready <- nil

	for req := range c.reqs {
		req.resp <- call(req.fn)
	}
	d.cuCtxSynchronize()
	d.cuCtxSetCurrent(0)
	d.cuDevicePrimaryCtxRelease(c.dev)
}

// call runs fn and captures a panic so that it can be re-raised in the
// goroutine that called Do rather than killing the owning thread.
func call(fn func() error) (r response) {
	defer func() {
		if !r.ok {
			r.panic = recover()
		}
	}()
	r.err = fn()
	r.ok = true
	return r
}

// Do runs fn on the context's thread, with the context current, and returns
// its error. Calls from many goroutines are served one at a time, in arrival
// order. Do is re-entrant: called from inside fn it runs the inner function
// directly. A panic in fn is re-raised in the caller. After Close, Do returns
// ErrContextClosed.
func (c *Context) Do(fn func() error) error {
	if dl.Gettid() == c.tid {
		// Only the owning goroutine runs on the locked thread.
		return fn()
	}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrContextClosed
	}
	resp := make(chan response, 1)
	c.reqs <- request{fn: fn, resp: resp}
	c.mu.RUnlock()
	r := <-resp
	if !r.ok {
		panic(r.panic)
	}
	return r.err
}

// Device returns the context's device.
func (c *Context) Device() Device { return c.dev }

// Synchronize waits for all work in the context to finish.
func (c *Context) Synchronize() error {
	return c.Do(func() error {
		return check("cuCtxSynchronize", drv.Load().cuCtxSynchronize())
	})
}

// Close waits for pending Do calls, synchronizes, releases the primary
// context and ends the owning thread. It must not be called from inside Do.
// Further calls return nil.
func (c *Context) Close() error {
	if dl.Gettid() == c.tid {
		return fmt.Errorf("cudadrv: Context.Close called inside Do")
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.reqs)
	c.mu.Unlock()
	<-c.done
	return nil
}
