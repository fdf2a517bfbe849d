package cudadrv

import "time"

// Event is a CUevent, a marker in a stream used for timing and ordering.
// Call its methods inside Context.Do.
type Event uintptr

// NewEvent creates an event that records timing.
func NewEvent() (Event, error) {
	d, err := get("cuEventCreate")
	if err != nil {
		return 0, err
	}
	var e Event
	err = check("cuEventCreate", d.cuEventCreate(&e, 0))
	return e, err
}

// Record marks the current position of stream s.
func (e Event) Record(s Stream) error {
	d, err := get("cuEventRecord")
	if err != nil {
		return err
	}
	return check("cuEventRecord", d.cuEventRecord(e, s))
}

// Synchronize waits until the work before the recorded position is done.
func (e Event) Synchronize() error {
	d, err := get("cuEventSynchronize")
	if err != nil {
		return err
	}
	return check("cuEventSynchronize", d.cuEventSynchronize(e))
}

// Destroy destroys the event.
func (e Event) Destroy() error {
	d, err := get("cuEventDestroy_v2")
	if err != nil {
		return err
	}
	return check("cuEventDestroy_v2", d.cuEventDestroy(e))
}

// Elapsed returns the device time between two completed events (resolution
// about 0.5 µs).
func Elapsed(start, end Event) (time.Duration, error) {
	d, err := get("cuEventElapsedTime")
	if err != nil {
		return 0, err
	}
	var ms float32
	if err := check("cuEventElapsedTime", d.cuEventElapsedTime(&ms, start, end)); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), nil
}
