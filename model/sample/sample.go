// Package sample chooses the next token from a vector of logits.
//
// A Sampler applies llama.cpp's default chain (common/sampling.cpp with the
// default sampler list of common/common.h, leaving out DRY, top-n-sigma,
// typical-p and XTC, which are off by default there):
//
//	logit bias → penalties → top-k → top-p → min-p → temperature → draw
//
// With Temperature <= 0 the chain ends in an argmax instead of a draw.
//
// LogNormalizer and TopLogProbs give the log-softmax of raw logits, for
// reporting log-probabilities next to the sampled tokens.
//
// # Determinism
//
// Each Sampler owns a PCG generator (math/rand/v2) seeded from Params.Seed
// and takes one float64 from it for every Sample that ends in a draw (none
// for greedy decoding, a +Inf logit or NoToken), so the same seed and the
// same sequence of Accept and Sample calls give the same tokens. The
// candidates are visited in descending logit order with ties broken toward
// the lower token ID (the order llama.cpp's greedy sampler uses), except when
// top-k, top-p and min-p are all off, where the draw walks the vocabulary in
// ID order to avoid a sort.
//
// # Cost
//
// Greedy decoding without penalties is one argmax pass. Top-k keeps a heap
// of K (+ the number of penalised tokens) entries while scanning the logits
// once and sorts only those. Without top-k, top-p computes the softmax
// normaliser in one pass and histograms the probability mass by distance
// from the maximum logit, so that only the tokens above the top-p cut (or the
// min-p threshold) are collected and sorted. No method allocates once the
// Sampler's buffers have grown to the vocabulary size, except Accept with
// RepeatLastN == -1, whose history grows with the context.
//
// # Invalid logits
//
// NaN logits are never chosen. Tokens with a -Inf logit are never chosen
// either; when no token is left, Sample returns NoToken. When one or more
// logits are +Inf, the lowest such ID is returned without a draw.
package sample

import (
	"maps"
	"math"
	"math/rand/v2"
	"slices"
)

// NoToken is returned by Sample and SampleCandidates when no token can be
// chosen: there are no logits, or every logit is NaN or -Inf.
const NoToken int32 = -1

// pcgStream is the second PCG seed word (the stream); Params.Seed is the
// first.
const pcgStream = 0x9e3779b97f4a7c15

// Sampler turns logits into token IDs. It keeps the history that the
// penalties look at and its own random generator. A Sampler is not safe for
// concurrent use; give each sequence its own.
type Sampler struct {
	p        Params
	greedy   bool
	penalize bool

	bias []bias // Params.LogitBias by ID

	src *rand.PCG
	rng *rand.Rand

	// window holds the accepted tokens the penalties look at: a ring of up
	// to RepeatLastN entries (next write at head once full), or every token
	// when RepeatLastN == -1.
	window []int32
	head   int

	// count[id] is the number of occurrences of id in the window while a
	// Sample call runs and zero otherwise; distinct lists the IDs with a
	// non-zero count.
	count    []int32
	distinct []int32

	cands   []cand    // candidate scratch
	biased  []float32 // copy of the logits with the bias added
	work    []float32 // penalised copy of the logits (full-vocabulary path)
	weights []float64 // draw weights
	mass    [massBuckets]float64
}

// New returns a Sampler for p, or a *ParamError when a field is unusable.
func New(p Params) (*Sampler, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	src := rand.NewPCG(p.Seed, pcgStream)
	p.LogitBias = maps.Clone(p.LogitBias)
	return &Sampler{
		p:        p,
		bias:     sortedBias(p.LogitBias),
		greedy:   p.Temperature <= 0,
		penalize: p.penalties(),
		src:      src,
		rng:      rand.New(src),
	}, nil
}

// Params returns the parameters the Sampler was created with.
func (s *Sampler) Params() Params { return s.p }

// Accept records id as part of the context, so that the penalties see it.
// Call it for every prompt token and for every generated token that is kept;
// Sample does not record the token it returns. When the penalties are off
// Accept does nothing.
func (s *Sampler) Accept(id int32) {
	if !s.penalize {
		return
	}
	n := s.p.RepeatLastN
	if n < 0 || len(s.window) < n {
		s.window = append(s.window, id)
		return
	}
	s.window[s.head] = id
	s.head++
	if s.head == n {
		s.head = 0
	}
}

// Reset forgets the accepted tokens and reseeds the generator, so that the
// Sampler behaves as if it had just been created.
func (s *Sampler) Reset() {
	s.window = s.window[:0]
	s.head = 0
	s.src.Seed(s.p.Seed, pcgStream)
}

// Sample returns the token chosen from logits, indexed by token ID, after
// adding the logit bias, applying the penalties for the accepted history
// and the filter chain. It does not modify logits and does not record the token (see Accept). It
// returns NoToken when no token has a logit above -Inf.
func (s *Sampler) Sample(logits []float32) int32 {
	if len(logits) == 0 {
		return NoToken
	}
	if len(logits) > math.MaxInt32 {
		logits = logits[:math.MaxInt32]
	}
	if len(s.bias) > 0 {
		s.biased = append(s.biased[:0], logits...)
		for _, b := range s.bias {
			if int(b.id) < len(logits) {
				s.biased[b.id] += b.v
			}
		}
		logits = s.biased
	}
	s.countWindow(len(logits))
	id := s.sample(logits)
	s.releaseCounts()
	return id
}

func (s *Sampler) sample(logits []float32) int32 {
	m := len(s.distinct)
	if s.greedy && m == 0 {
		id, _ := argmax(logits)
		return id
	}
	k := s.p.TopK
	if s.greedy {
		k = 1
	}
	if k > 0 && k < len(logits) {
		// The raw top k+m plus the m penalised tokens contain the true top k
		// after penalties (see penalizeTop).
		c := topLogits(s.cands[:0], logits, k+m)
		c = s.penalizeTop(c, logits)
		c = sortValid(c)
		if len(c) > k {
			c = c[:k]
		}
		s.cands = c[:0]
		return s.chain(c, 0)
	}
	src := logits
	if m > 0 {
		s.work = append(s.work[:0], logits...)
		for _, id := range s.distinct {
			s.work[id] = s.penalty(s.work[id], s.count[id])
		}
		src = s.work
	}
	return s.sampleAll(src)
}

// SampleCandidates is Sample over a preselected candidate set: ids[i] has
// logit logits[i]. IDs must be distinct and non-negative (negative ones are
// skipped); SampleCandidates panics if the slices differ in length. It does
// not modify either slice.
//
// The result equals what Sample would return for the full logits, and uses
// the generator identically, only when the candidates include every token
// the chain could keep. That holds when they are the CandidateCount()
// highest raw logits (ties broken toward the lower ID) and NeedsFullLogits
// is false. Otherwise the candidates are treated as the whole vocabulary:
// the bias and the penalties apply to those present and the filters run
// over them.
func (s *Sampler) SampleCandidates(ids []int32, logits []float32) int32 {
	if len(ids) != len(logits) {
		panic("sample: SampleCandidates: len(ids) != len(logits)")
	}
	limit := 0
	for _, id := range ids {
		limit = max(limit, int(id)+1)
	}
	s.countWindow(limit)
	c := s.cands[:0]
	for i, id := range ids {
		if id < 0 {
			continue
		}
		v := logits[i] + s.biasOf(id)
		if n := s.counted(id); n > 0 {
			v = s.penalty(v, n)
		}
		if v > negInf { // drops NaN and -Inf
			c = append(c, cand{id, v})
		}
	}
	s.releaseCounts()

	k := s.p.TopK
	if s.greedy {
		k = 1
	}
	if k > 0 && k < len(c) {
		c = topCands(c, k)
	}
	c = sortValid(c)
	s.cands = c[:0]
	return s.chain(c, 0)
}

// biasOf returns the logit bias of id (0 when it has none).
func (s *Sampler) biasOf(id int32) float32 {
	if i, ok := slices.BinarySearchFunc(s.bias, id, func(b bias, id int32) int { return int(b.id) - int(id) }); ok {
		return s.bias[i].v
	}
	return 0
}

// CandidateCount returns how many of the highest raw logits SampleCandidates
// needs to match Sample exactly: 1 for greedy decoding, TopK with top-k on,
// plus RepeatLastN when penalties are on. It returns 0 when no fixed count
// suffices (see NeedsFullLogits).
func (s *Sampler) CandidateCount() int {
	if len(s.bias) > 0 {
		return 0 // a bias can lift any token into the top
	}
	k := s.p.TopK
	if s.greedy {
		k = 1
	}
	if k <= 0 {
		return 0
	}
	if !s.penalize {
		return k
	}
	if s.p.RepeatLastN < 0 || !s.p.penaltiesOnlyLower() {
		return 0
	}
	return k + s.p.RepeatLastN
}

// NeedsFullLogits reports whether Sample needs the whole logits vector:
// a logit bias is set, top-k is off without greedy decoding, or penalties
// can raise a logit
// (RepeatPenalty < 1 or a negative frequency/presence penalty), or the
// penalty window is the whole history.
func (s *Sampler) NeedsFullLogits() bool { return s.CandidateCount() == 0 }
