package cuda_test

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/gputest"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/stretchr/testify/require"
)

// Thresholds on NMSE = Σ(a−b)²/Σa² against the CPU backend, as llama.cpp's
// test-backend-ops uses them.
const (
	tolElementwise = 1e-7 // elementwise ops and norms
	tolMatrix      = 5e-4 // matrix products and attention
	tolModel       = 1e-4 // whole-model logits
)

// options returns backend options for tests: device 0 and the libraries
// named by M40LLM_LIBCUDA and M40LLM_LIBCUBLAS.
func options() cuda.Options {
	return cuda.Options{
		Driver: gputest.DriverOptions(),
		BLAS:   cublas.Options{Path: os.Getenv("M40LLM_LIBCUBLAS")},
	}
}

// newGPU returns a CUDA backend closed at the end of the test, or ends the
// test through gputest.Unavailable.
func newGPU(t testing.TB, opts cuda.Options) *cuda.Backend {
	t.Helper()
	b, err := cuda.New(opts)
	if err != nil {
		gputest.Unavailable(t, "no usable CUDA GPU: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// nmse returns Σ(ref−got)²/Σref², +Inf when got holds NaN or Inf.
func nmse(ref, got []float32) float64 {
	var num, den float64
	for i, r := range ref {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		d := g - float64(r)
		num += d * d
		den += float64(r) * float64(r)
	}
	if den == 0 {
		return num
	}
	return num / den
}

// pair runs the same ops on the CPU reference and on the GPU.
type pair struct {
	t   *testing.T
	cpu *cpu.Backend
	gpu *cuda.Backend
	r   *rand.Rand
}

func newPair(t *testing.T, gpu *cuda.Backend, seed uint64) *pair {
	c := cpu.New(cpu.Options{FloatActivations: true}) // the kernels' float activations
	t.Cleanup(func() { c.Close() })
	return &pair{t: t, cpu: c, gpu: gpu, r: rand.New(rand.NewPCG(seed, 99))}
}

func (p *pair) uniform(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*p.r.Float32() - 1
	}
	return v
}

// tensor encodes vals as a GGUF tensor of type typ, (rows, cols).
func tensor(t testing.TB, typ gguf.Type, rows, cols int, vals []float32) (*gguf.TensorInfo, []byte) {
	dims := []int64{int64(cols), int64(rows)}
	if rows == 1 {
		dims = dims[:1]
	}
	ti := &gguf.TensorInfo{Name: "w", Type: typ, Dims: dims}
	size, ok := typ.RowSize(int64(rows * cols))
	require.True(t, ok)
	data := make([]byte, size)
	require.NoError(t, gguf.Quantize(data, vals, typ))
	ti.Size = size
	return ti, data
}

// weight loads the same random (rows, cols) tensor on both backends.
func (p *pair) weight(typ gguf.Type, rows, cols int) (model.Weight, model.Weight) {
	return p.weightOf(typ, rows, cols, p.uniform(rows*cols))
}

func (p *pair) weightOf(typ gguf.Type, rows, cols int, vals []float32) (model.Weight, model.Weight) {
	ti, data := tensor(p.t, typ, rows, cols, vals)
	wc, err := p.cpu.LoadWeight(ti, data)
	require.NoError(p.t, err)
	wg, err := p.gpu.LoadWeight(ti, data)
	require.NoError(p.t, err)
	return wc, wg
}

// input returns a random (rows, cols) buffer on both backends.
func (p *pair) input(rows, cols int) (model.Buf, model.Buf) {
	return p.inputOf(rows, cols, p.uniform(rows*cols))
}

func (p *pair) inputOf(rows, cols int, vals []float32) (model.Buf, model.Buf) {
	c := cpu.BufFrom(rows, cols, append([]float32(nil), vals...))
	g, err := p.gpu.NewBuf(rows, cols)
	require.NoError(p.t, err)
	require.NoError(p.t, p.gpu.Write(g, vals))
	return c, g
}

// output returns a (rows, cols) buffer on both backends, poisoned with NaN
// on the GPU, so that unwritten elements fail the comparison.
func (p *pair) output(rows, cols int) (model.Buf, model.Buf) {
	nan := make([]float32, rows*cols)
	for i := range nan {
		nan[i] = float32(math.NaN())
	}
	c := cpu.BufFrom(rows, cols, make([]float32, rows*cols))
	g, err := p.gpu.NewBuf(rows, cols)
	require.NoError(p.t, err)
	require.NoError(p.t, p.gpu.Write(g, nan))
	return c, g
}

// batch sets the same batch on both backends.
func (p *pair) batch(tokens, pos, seq []int32) {
	b := &model.Batch{Tokens: tokens, Pos: pos, Slot: seq}
	require.NoError(p.t, p.cpu.SetBatch(b))
	require.NoError(p.t, p.gpu.SetBatch(b))
}

// seqBatch sets a batch of n tokens at positions from, from+1, ... of
// slot 0.
func (p *pair) seqBatch(n, from int) {
	tokens, pos, seq := make([]int32, n), make([]int32, n), make([]int32, n)
	for i := range n {
		pos[i] = int32(from + i)
	}
	p.batch(tokens, pos, seq)
}

// check compares the first n rows of c (CPU) and g (GPU) by NMSE, and,
// when poisoned, that the GPU left the rows past n alone.
func (p *pair) check(what string, c, g model.Buf, n int, tol float64, poisoned bool) {
	p.t.Helper()
	want := cpu.Data(c)
	got := make([]float32, g.Rows()*g.Cols())
	require.NoError(p.t, p.gpu.Read(got, g, g.Rows()))
	w := n * c.Cols()
	e := nmse(want[:w], got[:w])
	if !(e <= tol) {
		p.t.Errorf("%s: NMSE %.3g > %.0g (first values: cpu %v, gpu %v)", what, e, tol, want[:min(4, w)], got[:min(4, w)])
	} else {
		p.t.Logf("%s: NMSE %.2g", what, e)
	}
	if poisoned {
		for i, v := range got[w:] {
			if !math.IsNaN(float64(v)) {
				p.t.Errorf("%s: wrote element %d past row %d", what, w+i, n)
				break
			}
		}
	}
}
