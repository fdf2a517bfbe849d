package model

import (
	"context"
	"fmt"
	"math"
)

// PerplexityResult is the outcome of Perplexity after each window.
type PerplexityResult struct {
	Chunks int     // windows evaluated so far
	Tokens int     // tokens scored so far
	PPL    float64 // exp(mean NLL) over the tokens scored so far
	// Err is llama.cpp's standard error of PPL: PPL·sqrt(var(NLL)/(n-1))
	// with var(NLL) = mean(NLL²) - mean(NLL)²; 0 until two tokens are
	// scored.
	Err float64
}

// Perplexity measures the model on tokens (the whole text, tokenized as
// llama.cpp's perplexity tool does: with BOS first when the vocabulary
// adds one) by llama.cpp's method: non-overlapping windows of n tokens
// (n ≤ CtxSize), at most chunks of them (chunks ≤ 0: all that fit), each
// evaluated from a fresh KV state in slot 0, with the window's first token
// replaced by BOS when the vocabulary adds one; of each window only the
// second half is scored: the negative log-probability of token j+1 given
// tokens 0..j for j = n/2 .. n-2. onChunk, when not nil, is called after
// each window with the running result. It fails when n is outside 2..CtxSize,
// when the text holds fewer than 2n tokens (as llama.cpp requires), when
// ctx is done, and with the errors of Forward.
func Perplexity(ctx context.Context, m *Model, tokens []int32, n, chunks int, onChunk func(PerplexityResult)) (PerplexityResult, error) {
	var res PerplexityResult
	if n < 2 || n > m.CtxSize() {
		return res, &OptionError{Option: "perplexity context", Msg: fmt.Sprintf("%d positions: want 2 to the cache's %d", n, m.CtxSize())}
	}
	if len(tokens) < 2*n {
		return res, &OptionError{Option: "perplexity context", Msg: fmt.Sprintf("the text is %d tokens; a context of %d needs at least %d", len(tokens), n, 2*n)}
	}
	total := len(tokens) / n
	if chunks > 0 {
		total = min(total, chunks)
	}
	vocab := m.Config.VocabSize
	first := n / 2
	bs := m.BatchSize()
	logits := make([]float32, bs*vocab)
	window := make([]int32, n)
	var nll, nll2 float64
	for c := range total {
		copy(window, tokens[c*n:(c+1)*n])
		if m.Tokenizer.AddBOS() {
			window[0] = m.Tokenizer.BOS()
		}
		for s := 0; s < n; s += bs {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			e := min(n, s+bs)
			b := &Batch{Tokens: window[s:e], Pos: make([]int32, e-s), Slot: make([]int32, e-s)}
			var rows []int32
			for i := range e - s {
				b.Pos[i] = int32(s + i)
				if p := s + i; p >= first && p < n-1 {
					rows = append(rows, int32(i))
				}
			}
			if err := m.Forward(b, rows, logits[:len(rows)*vocab]); err != nil {
				return res, err
			}
			for j, r := range rows {
				v := -logSoftmax(logits[j*vocab:(j+1)*vocab], window[s+int(r)+1])
				nll += v
				nll2 += v * v
			}
		}
		res.Chunks = c + 1
		res.Tokens += n - first - 1
		res.PPL, res.Err = pplStats(nll, nll2, res.Tokens)
		if onChunk != nil {
			onChunk(res)
		}
	}
	return res, nil
}

// logSoftmax returns log p(tok) under softmax(logits), in float64 as
// llama.cpp's perplexity tool computes it.
func logSoftmax(logits []float32, tok int32) float64 {
	maxL := logits[0]
	for _, v := range logits[1:] {
		maxL = max(maxL, v)
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v - maxL))
	}
	return float64(logits[tok]-maxL) - math.Log(sum)
}

// pplStats returns exp(mean) and llama.cpp's standard error of it from the
// sum and the sum of squares of count NLL values.
func pplStats(nll, nll2 float64, count int) (ppl, se float64) {
	mean := nll / float64(count)
	ppl = math.Exp(mean)
	if count < 2 {
		return ppl, 0
	}
	v := nll2/float64(count) - mean*mean
	if v <= 0 {
		return ppl, 0
	}
	return ppl, ppl * math.Sqrt(v/float64(count-1))
}
