package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/cpu"
)

// TestQDot4Rows checks the multi-row four-token kernels (AVX2 and, where
// the CPU has it, VNNI) against qdot4 per row and group, bit for bit: 1 to
// 3 groups of four tokens, 1 to 5 rows, odd and even block counts, outputs
// in rows of a wider matrix whose other entries must stay untouched.
func TestQDot4Rows(t *testing.T) {
	if !useAVX2 {
		require.False(t, qdot4Rows(gguf.TypeQ4_0, nil, 18, 1, &qrows{k: 32}, 1, nil, 1))
		return
	}
	r := rand.New(rand.NewPCG(33, 34))
	typ := gguf.TypeQ4_0
	defer func(v bool) { useVNNI = v }(useVNNI)
	for _, vnni := range []bool{false, true} {
		useVNNI = vnni && cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512VL
		for _, nb := range []int{1, 2, 5} {
			for groups := 1; groups <= 3; groups++ {
				for rows := 1; rows <= 5; rows++ {
					t.Run(fmt.Sprintf("vnni=%v/blocks=%d/groups=%d/rows=%d", useVNNI, nb, groups, rows), func(t *testing.T) {
						k := nb * qblock
						var raw []byte
						rb := 0
						for range rows {
							w := make([]float32, k)
							for i := range w {
								w[i] = float32(r.NormFloat64())
							}
							row, _ := quantizedRow(t, typ, w)
							rb = len(row)
							raw = append(raw, row...)
						}
						n := 4 * groups
						var q qrows
						q.reset(n, k)
						for i := range n {
							x := make([]float32, k)
							for j := range x {
								x[j] = float32(r.NormFloat64())
							}
							quantizeRow(q.row(i), x)
						}
						cols := rows + 3
						out := make([]float32, n*cols)
						for i := range out {
							out[i] = -7
						}
						require.True(t, qdot4Rows(typ, raw, rb, rows, &q, groups, out[1:], cols))
						for i := range n {
							for c := range cols {
								got := out[i*cols+c]
								if c < 1 || c > rows {
									require.Equal(t, float32(-7), got, "token %d column %d written", i, c)
									continue
								}
								want := qdot4(typ, raw[(c-1)*rb:c*rb], &q, i/4*4)[i%4]
								require.Equal(t, math.Float32bits(want), math.Float32bits(got), "token %d row %d", i, c-1)
							}
						}
					})
				}
			}
		}
	}
}
