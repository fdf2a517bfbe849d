package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/m40llm/m40llm/model"
)

// The scheduler is the server's side of the model's engine (model.Engine,
// which runs every request through one loop with continuous batching over
// the model's KV-cache slots): it bounds the requests in flight (the slots
// plus a queue of waiting requests, beyond which a request gets ErrBusy),
// drains on shutdown and feeds the metrics. Prefix reuse, batching,
// sampling and stop strings are the engine's.
type scheduler struct {
	m   *model.Model
	eng *model.Engine
	met *metrics

	mu       sync.Mutex // guards inflight, closed, draining
	inflight int        // submitted and not ended
	limit    int        // slots + queue
	closed   bool
	draining bool
	idle     chan struct{} // capacity 1: inflight reached 0
}

// schedulerOptions configure a scheduler.
type schedulerOptions struct {
	queue   int // requests that may wait for a slot
	chunk   int // prompt tokens per step, over all slots in prefill
	metrics *metrics
	name    string // the model's name in the metrics; "" for Start's
}

// newScheduler starts an engine over every KV-cache slot of m.
func newScheduler(m *model.Model, opts schedulerOptions) (*scheduler, error) {
	s := &scheduler{m: m, met: opts.metrics, limit: m.Slots() + opts.queue, idle: make(chan struct{}, 1)}
	eo := model.EngineOptions{
		BatcherOptions: model.BatcherOptions{PrefillChunk: opts.chunk},
		Observer:       (*observer)(s),
	}
	for i := range m.Slots() {
		ses, err := m.NewSession(i)
		if err != nil {
			return nil, err
		}
		eo.Sessions = append(eo.Sessions, ses)
	}
	s.eng = model.NewEngine(m, eo)
	if s.met != nil {
		s.met.addEngine(s.eng, opts.name, m.Slots()*m.CtxSize(), m)
	}
	return s, nil
}

// submit queues req with the request's context, or fails with ErrBusy when
// every slot is in use and the queue is full, ErrShuttingDown, or the
// engine's error for a request it refuses (see model.Engine.Submit).
func (s *scheduler) submit(ctx context.Context, req *model.Request) (*model.Job, error) {
	jobs, err := s.submitAll(ctx, []*model.Request{req})
	if err != nil {
		return nil, err
	}
	return jobs[0], nil
}

// submitAll queues every request of reqs under ctx, or none
// (model.Engine.SubmitAll): each counts as one request in flight, so it
// fails with ErrBusy when they do not all fit under the bound, and with
// the errors of submit.
func (s *scheduler) submitAll(ctx context.Context, reqs []*model.Request) ([]*model.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.draining:
		return nil, ErrShuttingDown
	case s.inflight+len(reqs) > s.limit:
		return nil, ErrBusy
	}
	jobs, err := s.eng.SubmitAll(ctx, reqs)
	if errors.Is(err, model.ErrEngineClosed) {
		err = ErrShuttingDown
	}
	if err != nil {
		return nil, err
	}
	s.inflight += len(jobs)
	return jobs, nil
}

// count returns the requests submitted and not ended.
func (s *scheduler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight
}

// ended counts a request's end (on the engine's goroutine).
func (s *scheduler) ended() {
	s.mu.Lock()
	s.inflight--
	if s.inflight == 0 {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// drain refuses new requests and waits until the ones in flight have
// ended or ctx is done; it then stops the engine, ending what is left with
// ErrShuttingDown.
func (s *scheduler) drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	var err error
	for s.count() > 0 && err == nil {
		select {
		case <-s.idle:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	s.stop()
	return err
}

// stop ends every request with ErrShuttingDown and waits for the engine
// to stop.
func (s *scheduler) stop() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.eng.Close()
}

// observer is the scheduler as the engine's model.Observer.
type observer scheduler

func (o *observer) Admitted(queued time.Duration, cached int) {
	if met := o.met; met != nil {
		met.cachedTokens.Add(float64(cached))
		met.queueWait.Observe(queued.Seconds())
	}
}

func (o *observer) Stepped(st model.StepStats) {
	if met := o.met; met != nil {
		met.batchTokens.Observe(float64(st.Tokens))
		if st.Prompt > 0 {
			met.promptTokens.Add(float64(st.Prompt))
		}
	}
}

func (o *observer) Sampled(first bool, since time.Duration) {
	if met := o.met; met != nil {
		if first {
			met.ttft.Observe(since.Seconds())
		} else {
			met.tokenLatency.Observe(since.Seconds())
		}
	}
}

func (o *observer) Ended(res *model.Result, _ error) {
	if met := o.met; met != nil {
		met.generatedTokens.Add(float64(len(res.Tokens)))
	}
	(*scheduler)(o).ended()
}
