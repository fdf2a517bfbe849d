package cpu

import (
	"math"

	"github.com/m40llm/m40llm/model"
)

// ropeTable caches cos/sin of every (token, pair) of the current batch:
// every layer rotates q and k by the same angles.
type ropeTable struct {
	valid    bool
	params   model.RopeParams
	cos, sin []float32 // [token][Dim/2]
}

func (t *ropeTable) build(b *Backend, p *model.RopeParams, n int) {
	if t.valid && t.params == *p && len(t.cos) >= n*p.Dim/2 {
		return
	}
	half := p.Dim / 2
	var factors []float32
	if p.Factors != nil {
		factors = p.Factors.(*weight).vec()
	}
	invFreq := make([]float64, half)
	for j := range invFreq {
		invFreq[j] = math.Pow(float64(p.Base), -2*float64(j)/float64(p.Dim))
		if factors != nil {
			invFreq[j] /= float64(factors[j])
		}
	}
	if cap(t.cos) < n*half {
		t.cos, t.sin = make([]float32, n*half), make([]float32, n*half)
	}
	t.cos, t.sin = t.cos[:n*half], t.sin[:n*half]
	for i := range n {
		pos := float64(b.batch.Pos[i]) * float64(p.FreqScale)
		for j, f := range invFreq {
			s, c := math.Sincos(pos * f)
			t.cos[i*half+j], t.sin[i*half+j] = float32(c), float32(s)
		}
	}
	t.params, t.valid = *p, true
}

// Rope rotates each head of the first n rows of x in place. Norm style
// pairs (x[2j], x[2j+1]); NeoX style pairs (x[j], x[j+Dim/2]). Dims past
// p.Dim are left alone.
func (b *Backend) Rope(x model.Buf, n, headDim int, p *model.RopeParams) {
	s := x.(*buf)
	b.rope.build(b, p, n)
	half := p.Dim / 2
	for i := range n {
		cos, sin := b.rope.cos[i*half:(i+1)*half], b.rope.sin[i*half:(i+1)*half]
		row := s.row(i)
		for h := 0; h+headDim <= len(row); h += headDim {
			head := row[h : h+headDim]
			if p.Style == model.RopeNeoX {
				for j := range half {
					x0, x1 := head[j], head[j+half]
					head[j] = x0*cos[j] - x1*sin[j]
					head[j+half] = x0*sin[j] + x1*cos[j]
				}
			} else {
				for j := range half {
					x0, x1 := head[2*j], head[2*j+1]
					head[2*j] = x0*cos[j] - x1*sin[j]
					head[2*j+1] = x0*sin[j] + x1*cos[j]
				}
			}
		}
	}
}
