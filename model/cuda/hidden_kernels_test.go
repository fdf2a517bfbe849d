package cuda

import (
	"maps"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHiddenStepKernels pins the kernels of a decode step that only wants
// its row's hidden state (Model.ForwardHidden, as an embedding asks for
// it): the decode step of TestDecodeKernels without the classifier's
// matvec and the top-k, on the fake device (CI) and on the GPU; the row
// read back is the output norm's, so it has the model's width.
func TestHiddenStepKernels(t *testing.T) {
	want := maps.Clone(fusedDecode)
	want["matvec_f16×1"]-- // no classifier
	delete(want, "topk_pass")
	path := synthModel(t, "tinyllama", layers)
	for _, dev := range testDevices {
		t.Run(dev.name, func(t *testing.T) {
			m, log := prefilled(t, dev.new(t, Options{}), path)
			before := len(log.steps)
			hidden := make([]float32, m.Config.Dim)
			require.NoError(t, m.ForwardHidden(decodeBatch, []int32{0}, hidden))
			require.Len(t, log.steps, before+1, "a hidden-state step is submitted once")
			step := log.steps[before]
			assert.Equal(t, want, kernels(step), "kernels of the step")
			t.Logf("%d launches: %v", len(step), kernels(step))
		})
	}
}
