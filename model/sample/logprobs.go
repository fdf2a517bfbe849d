package sample

import (
	"math"
	"slices"
)

// MaxTopLogProbs is the most alternatives TopLogProbs returns per position
// (OpenAI's limit for top_logprobs).
const MaxTopLogProbs = 20

// TokenProb is a token with its log-probability (natural logarithm).
type TokenProb struct {
	ID      int32
	LogProb float64
}

// LogNormalizer returns log Σ exp(logits[i]) over the logits that are not
// NaN, computed in float64 with the maximum subtracted first, so that
// logits[id] - LogNormalizer(logits) is the log-softmax of id over the
// whole vector. It returns -Inf when no logit is above -Inf (no token has
// a probability), and +Inf when one is +Inf.
func LogNormalizer(logits []float32) float64 {
	_, bv := argmax(logits)
	top := float64(bv)
	if math.IsInf(top, 0) {
		return top
	}
	var z float64
	for _, v := range logits {
		if v > negInf {
			z += expNeg(float64(v) - top)
		}
	}
	return top + math.Log(z)
}

// TopLogProbs appends to dst the n tokens with the highest logits (ties
// broken toward the lower ID), most likely first, each with its logit
// minus norm (LogNormalizer(logits) gives the log-softmax), and returns
// the extended slice. NaN and -Inf logits are never listed, so fewer than
// n tokens come back when fewer are valid. n is clamped to
// [0, MaxTopLogProbs].
func TopLogProbs(dst []TokenProb, logits []float32, n int, norm float64) []TokenProb {
	n = min(max(n, 0), MaxTopLogProbs)
	if n == 0 || len(logits) == 0 {
		return dst
	}
	var buf [MaxTopLogProbs]cand
	c := sortValid(topLogits(buf[:0], logits, n))
	for _, e := range c {
		dst = append(dst, TokenProb{ID: e.id, LogProb: float64(e.logit) - norm})
	}
	return dst
}

// CandidateLogProbs is LogNormalizer and TopLogProbs over a candidate set
// treated as the whole vocabulary (token ids[i] has logit vals[i]; as
// SampleCandidates treats them): it returns the normalizer and appends the
// n most likely candidates to dst. Negative ids are skipped; it panics if
// the slices differ in length.
func CandidateLogProbs(dst []TokenProb, ids []int32, vals []float32, n int) (float64, []TokenProb) {
	if len(ids) != len(vals) {
		panic("sample: CandidateLogProbs: len(ids) != len(vals)")
	}
	c := make([]cand, 0, len(ids))
	for i, id := range ids {
		if id >= 0 && vals[i] == vals[i] {
			c = append(c, cand{id, vals[i]})
		}
	}
	c = sortValid(c)
	norm := math.Inf(-1)
	if len(c) > 0 {
		top := float64(c[0].logit)
		if math.IsInf(top, 1) {
			norm = top
		} else {
			var z float64
			for _, e := range c {
				z += expNeg(float64(e.logit) - top)
			}
			norm = top + math.Log(z)
		}
	}
	n = min(max(n, 0), MaxTopLogProbs, len(c))
	for _, e := range c[:n] {
		dst = append(dst, TokenProb{ID: e.id, LogProb: float64(e.logit) - norm})
	}
	return norm, dst
}

// sortedBias returns the entries of a logit-bias map ordered by ID.
func sortedBias(m map[int32]float32) []bias {
	if len(m) == 0 {
		return nil
	}
	b := make([]bias, 0, len(m))
	for id, v := range m {
		b = append(b, bias{id, v})
	}
	slices.SortFunc(b, func(x, y bias) int { return int(x.id) - int(y.id) })
	return b
}

// bias is one entry of Params.LogitBias.
type bias struct {
	id int32
	v  float32
}
