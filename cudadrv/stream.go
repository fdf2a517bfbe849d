package cudadrv

// Stream is a CUstream. The zero Stream is the legacy default stream, which
// cannot be captured into a graph. Call its methods inside Context.Do.
type Stream uintptr

// CU_STREAM_NON_BLOCKING: no implicit synchronization with stream 0.
const streamNonBlocking = 1

// NewStream creates a non-blocking stream.
func NewStream() (Stream, error) {
	d, err := get("cuStreamCreate")
	if err != nil {
		return 0, err
	}
	var s Stream
	err = check("cuStreamCreate", d.cuStreamCreate(&s, streamNonBlocking))
	return s, err
}

// Synchronize waits until all work queued on s is done; errors from
// asynchronous launches surface here.
func (s Stream) Synchronize() error {
	d, err := get("cuStreamSynchronize")
	if err != nil {
		return err
	}
	return check("cuStreamSynchronize", d.cuStreamSynchronize(s))
}

// Destroy destroys s once its queued work is done. Destroying stream 0 is
// a no-op.
func (s Stream) Destroy() error {
	if s == 0 {
		return nil
	}
	d, err := get("cuStreamDestroy_v2")
	if err != nil {
		return err
	}
	return check("cuStreamDestroy_v2", d.cuStreamDestroy(s))
}

// captureModeThreadLocal is CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: only this
// thread's unsafe calls are prohibited during capture, which is what a
// Context's single thread needs.
const captureModeThreadLocal = 1

// BeginCapture starts recording the work queued on s (a stream from
// NewStream) instead of running it. End with EndCapture. Between the two,
// do not allocate or synchronize; kernel launches, async copies and memsets
// are recorded.
func (s Stream) BeginCapture() error {
	d, err := get("cuStreamBeginCapture_v2")
	if err != nil {
		return err
	}
	return check("cuStreamBeginCapture_v2", d.cuStreamBeginCapture(s, captureModeThreadLocal))
}

// EndCapture ends the capture begun with BeginCapture and returns the
// recorded graph.
func (s Stream) EndCapture() (Graph, error) {
	d, err := get("cuStreamEndCapture")
	if err != nil {
		return 0, err
	}
	var g Graph
	err = check("cuStreamEndCapture", d.cuStreamEndCapture(s, &g))
	return g, err
}
