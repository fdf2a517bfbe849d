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
	last Buf // (batch, dim) rows whose logits are wanted
	out  Buf // (batch, vocab) logits
}

func newActivations(b Backend, c *Config, rows int) (*activations, error) {
	a := &activations{}
	bufs := []struct {
		dst  *Buf
		cols int
	}{
		{&a.x, c.Dim}, {&a.xb, c.Dim}, {&a.q, c.QDim()}, {&a.k, c.KVDim()}, {&a.v, c.VDim()},
		{&a.att, c.Heads * c.ValueDim}, {&a.hb, c.FFNDim}, {&a.hb2, c.FFNDim},
		{&a.last, c.Dim}, {&a.out, c.VocabSize},
	}
	for _, s := range bufs {
		buf, err := b.NewBuf(rows, s.cols)
		if err != nil {
			return nil, fmt.Errorf("allocating activations (%d x %d) on %s: %w", rows, s.cols, b.Name(), err)
		}
		*s.dst = buf
	}
	return a, nil
}

// forward runs the transformer over batch and leaves the logits of the
// batch rows listed in outRows in a.out (row j for outRows[j]). It reads
// top to bottom like llama2.c's forward(): embeddings, then per layer
// attention and SwiGLU feed-forward blocks with pre-norm residuals, then the
// final norm and the classifier.
func forward(be Backend, c *Config, w *Weights, a *activations, batch *Batch, outRows []int32) error {
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
	be.MatMul(a.out, a.last, w.Output, nil, len(outRows))
	return nil
}
