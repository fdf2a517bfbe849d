package model

import (
	"fmt"
	"math"
)

// activations are the per-forward-pass buffers, sized for the largest
// batch (rows) the model accepts.
type activations struct {
	x    Buf // (batch, dim) residual stream
	xb   Buf // (batch, dim) normed input / projection output
	q    Buf // (batch, Heads·HeadDim)
	k    Buf // (batch, KVHeads·HeadDim)
	v    Buf // (batch, KVHeads·ValueDim)
	att  Buf // (batch, Heads·ValueDim) attention output
	hb   Buf // (batch, ffn) gate, then silu(gate)·up
	hb2  Buf // (batch, ffn) up
	last Buf // (batch, dim) output rows after the final norm (hidden states)
	out  Buf // (batch, vocab) logits
}

// activationWidths are the widths of the activations fields, in order:
// the one definition that newActivations and Plan share.
func activationWidths(c *Config) []int {
	return []int{c.Dim, c.Dim, c.QDim(), c.KVDim(), c.VDim(), c.Heads * c.ValueDim, c.FFNDim, c.FFNDim, c.Dim, c.VocabSize}
}

func newActivations(b Backend, c *Config, rows int) (*activations, error) {
	a := &activations{}
	dsts := []*Buf{&a.x, &a.xb, &a.q, &a.k, &a.v, &a.att, &a.hb, &a.hb2, &a.last, &a.out}
	for i, cols := range activationWidths(c) {
		buf, err := b.NewBuf(rows, cols)
		if err != nil {
			return nil, fmt.Errorf("allocating activations (%d x %d) on %s: %w", rows, cols, b.Name(), err)
		}
		*dsts[i] = buf
	}
	return a, nil
}

// forward runs the transformer over batch and leaves the hidden state
// after the final norm of the batch rows listed in outRows in a.last (row
// j for outRows[j]), and the logits of the first logitRows of them in
// a.out: the rest only want hidden states (embeddings) and skip the
// classifier. It reads top to bottom like llama2.c's forward():
// embeddings, then per layer attention and SwiGLU feed-forward blocks with
// pre-norm residuals, then the final norm and the classifier.
func forward(be Backend, c *Config, w *Weights, a *activations, batch *Batch, outRows []int32, logitRows int) error {
	if err := be.SetBatch(batch); err != nil {
		return err
	}
	n := batch.Len()
	eps := c.NormEps
	rope := &RopeParams{Style: c.RopeStyle, Dim: c.RopeDim, Base: c.RopeBase, FreqScale: c.RopeFreqScale, Factors: w.RopeFreqs}
	attn := &AttnParams{Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim, ValueDim: c.ValueDim,
		Scale: float32(1 / math.Sqrt(float64(c.HeadDim)))}

	be.Embed(a.x, w.TokenEmbd, n)
	for l := range w.Layers {
		ly := &w.Layers[l]

		// Attention block: x += Wo · attn(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
		be.RMSNorm(a.xb, a.x, ly.AttnNorm, n, eps)
		be.MatMul(a.q, a.xb, ly.Wq, ly.Bq, n)
		be.MatMul(a.k, a.xb, ly.Wk, ly.Bk, n)
		be.MatMul(a.v, a.xb, ly.Wv, ly.Bv, n)
		if ly.QNorm != nil {
			be.HeadRMSNorm(a.q, ly.QNorm, n, c.HeadDim, eps)
			be.HeadRMSNorm(a.k, ly.KNorm, n, c.HeadDim, eps)
		}
		be.Rope(a.q, n, c.HeadDim, rope)
		be.Rope(a.k, n, c.HeadDim, rope)
		be.Attention(a.att, a.q, a.k, a.v, l, n, attn)
		be.MatMul(a.xb, a.att, ly.Wo, nil, n)
		be.Add(a.x, a.xb, n)

		// Feed-forward block: x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x))
		be.RMSNorm(a.xb, a.x, ly.FFNNorm, n, eps)
		be.MatMul(a.hb, a.xb, ly.WGate, nil, n)
		be.MatMul(a.hb2, a.xb, ly.WUp, nil, n)
		be.SwiGLU(a.hb, a.hb, a.hb2, n)
		be.MatMul(a.xb, a.hb, ly.WDown, nil, n)
		be.Add(a.x, a.xb, n)
	}
	if len(outRows) == 0 {
		return nil
	}
	be.GatherRows(a.last, a.x, outRows)
	be.RMSNorm(a.last, a.last, w.OutputNorm, len(outRows), eps)
	if logitRows > 0 {
		be.MatMul(a.out, a.last, w.Output, nil, logitRows)
	}
	return nil
}
