package cpu

import (
	"fmt"

	"github.com/m40llm/m40llm/internal/sysmem"
	"github.com/m40llm/m40llm/model"
)

var _ model.Planner = (*Backend)(nil)

// hostReserve is memory left to the rest of the process and the system
// when a plan is checked.
const hostReserve = 256 << 20

// Plan checks that the KV cache and the activations fit in the host memory
// the process may still allocate (sysmem.Available), so that a context too
// large for the machine fails here, with an error matching
// model.ErrOutOfMemory, instead of in the runtime, which cannot recover
// from it. Weights alias the file's mapping and are not counted. Where the
// available memory is unknown the plan is accepted.
func (b *Backend) Plan(p *model.Plan) error {
	kv := p.KV
	kvBytes := kv.Bytes() // at the cache's types
	var act int64
	for _, s := range p.Bufs {
		act += 4 * int64(s[0]) * int64(s[1])
	}
	avail, ok := sysmem.Available()
	if !ok || kvBytes < 0 || act < 0 {
		return nil
	}
	if need := kvBytes + act; need > avail-hostReserve {
		return fmt.Errorf("%w: the KV cache (%d slots x %d positions: %s) and the activations (%s) need %s of host memory; %s is available; use a smaller --ctx-size, fewer slots or a smaller batch",
			model.ErrOutOfMemory, kv.Slots, kv.Ctx, gib(kvBytes), gib(act), gib(need), gib(avail))
	}
	return nil
}

func gib(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }
