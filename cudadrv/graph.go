package cudadrv

import "errors"

// Graph is a CUgraph: recorded work, from Stream.BeginCapture/EndCapture.
// Instantiate it to run it; Stream.Capture does all three in one call. Call
// its methods inside Context.Do.
type Graph uintptr

// GraphExec is an instantiated, launchable graph. Launching it replays the
// recorded kernels with the parameters they were captured with, at a
// fraction of the cost of launching them one by one.
type GraphExec uintptr

// Instantiate turns g into an executable graph.
func (g Graph) Instantiate() (GraphExec, error) {
	d, err := get("cuGraphInstantiateWithFlags")
	if err != nil {
		return 0, err
	}
	var e GraphExec
	err = check("cuGraphInstantiateWithFlags", d.cuGraphInstantiateWithFlags(&e, g, 0))
	return e, err
}

// Destroy destroys g; executable graphs made from it stay valid.
func (g Graph) Destroy() error {
	d, err := get("cuGraphDestroy")
	if err != nil {
		return err
	}
	return check("cuGraphDestroy", d.cuGraphDestroy(g))
}

// Launch enqueues the whole graph on s.
func (e GraphExec) Launch(s Stream) error {
	d, err := get("cuGraphLaunch")
	if err != nil {
		return err
	}
	return check("cuGraphLaunch", d.cuGraphLaunch(e, s))
}

// Destroy destroys the executable graph.
func (e GraphExec) Destroy() error {
	d, err := get("cuGraphExecDestroy")
	if err != nil {
		return err
	}
	return check("cuGraphExecDestroy", d.cuGraphExecDestroy(e))
}

// Capture records the work that fn enqueues on s into a graph and returns
// it instantiated. When fn, the capture or the instantiation fails, the
// capture is ended and no graph is left behind. Call it inside Context.Do.
func (s Stream) Capture(fn func() error) (GraphExec, error) {
	if err := s.BeginCapture(); err != nil {
		return 0, err
	}
	runErr := fn()
	g, endErr := s.EndCapture()
	if runErr != nil || endErr != nil {
		if g != 0 {
			g.Destroy()
		}
		return 0, errors.Join(runErr, endErr)
	}
	exec, err := g.Instantiate()
	g.Destroy()
	return exec, err
}
