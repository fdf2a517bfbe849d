package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/m40llm/m40llm/model/grammar"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/m40llm/m40llm/model/tokenizer"
)

// FinishReason says why generation ended, in OpenAI's terms.
type FinishReason string

// Finish reasons.
const (
	// FinishStop: an end-of-generation token or a stop string.
	FinishStop FinishReason = "stop"
	// FinishLength: MaxTokens generated, or the context is full.
	FinishLength FinishReason = "length"
)

// GenerateOptions configures Session.Generate.
type GenerateOptions struct {
	// MaxTokens bounds the generated tokens; ≤ 0 means until an
	// end-of-generation token or a full context.
	MaxTokens int
	// Sampling configures the sampler (start from sample.DefaultParams, or
	// Greedy()).
	Sampling sample.Params
	// Stop strings end generation; the text from the stop string on is not
	// emitted.
	Stop []string
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
	// LogProbs records, for every generated token, its log-probability and
	// those of the TopLogProbs most likely tokens at its position
	// (Result.LogProbs, Sink.Token). They are the log-softmax over the whole
	// vocabulary of the model's raw logits, before the logit bias, the
	// penalties and every filter (what llama.cpp's server reports without
	// post_sampling_probs), computed in float64. A generation that records
	// them reads the full logits of its row every step (no top-k
	// candidates), on every backend.
	LogProbs bool
	// TopLogProbs is the number of alternatives recorded with each token,
	// 0 to sample.MaxTopLogProbs; it needs LogProbs.
	TopLogProbs int
	// Grammar, when set, constrains the generated text to its sentences:
	// each step sets the logits of the tokens it does not allow to -Inf
	// before sampling (after the log-probabilities are taken), and
	// end-of-generation tokens are allowed only once the text is complete;
	// such a token then ends generation even with IgnoreEOS. A generation
	// with a grammar reads the full logits every step. Each generation
	// follows the grammar with a matcher of its own, so one Grammar may
	// serve many requests.
	Grammar *grammar.Grammar
}

// TokenLogProbs is the log-probability of a generated token and the most
// likely tokens at its position (see GenerateOptions.LogProbs).
type TokenLogProbs struct {
	ID      int32   // the generated token
	LogProb float64 // its log-probability; -Inf when its logit was -Inf
	// Top are the GenerateOptions.TopLogProbs most likely tokens, most
	// likely first (ties toward the lower id); ID may be among them or not.
	Top []sample.TokenProb
}

// Greedy returns sampling parameters that always pick the most likely
// token, with no penalties.
func Greedy() sample.Params {
	return sample.Params{Temperature: 0, TopP: 1, RepeatPenalty: 1}
}

// Result reports what a generation did.
type Result struct {
	PromptTokens int     // tokens of the prompt
	CachedTokens int     // prompt tokens reused from the session's cache
	Tokens       []int32 // generated tokens (end-of-generation tokens excluded)
	// LogProbs holds one entry per token of Tokens when the request asked
	// for them (GenerateOptions.LogProbs), else nil.
	LogProbs []TokenLogProbs
	Finish   FinishReason
	// Embedding is an embedding request's vector (Request.Embed): Dim
	// values of unit Euclidean norm; nil for a generation.
	Embedding []float32
	// QueueTime is how long the request waited for a session (Engine).
	QueueTime time.Duration
	// PromptTime is from admission to the first generated token (time to
	// first token, less QueueTime); GenTime from there to the end.
	PromptTime, GenTime time.Duration
}

// PromptTokensPerSecond returns prompt processing speed.
func (r *Result) PromptTokensPerSecond() float64 {
	return rate(r.PromptTokens-r.CachedTokens, r.PromptTime)
}

// TokensPerSecond returns generation speed, counted from the first
// generated token (which the prompt pass produces) to the last.
func (r *Result) TokensPerSecond() float64 {
	return rate(len(r.Tokens)-1, r.GenTime)
}

func rate(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Generate continues the sequence with prompt and samples new tokens,
// calling emit with each piece of text as soon as it is final (complete
// UTF-8, and not possibly the start of a stop string). Cached tokens that
// match the start of prompt are reused. It stops at an end-of-generation
// token, a stop string, MaxTokens or a full context, or when ctx is done
// (checked between tokens; it then returns ctx's error with the partial
// result). An error from emit stops generation and is returned. It is the
// one-request case of a Batcher, and fails as Batcher.Start and Step do;
// the result is never nil.
func (s *Session) Generate(ctx context.Context, prompt []int32, opts GenerateOptions, emit func(text string) error) (*Result, error) {
	b := NewBatcher(s.m, BatcherOptions{})
	sink := &generateSink{emit: emit}
	if err := b.Start(ctx, &Request{Prompt: prompt, Options: opts, Session: s}, sink); err != nil {
		return &Result{PromptTokens: len(prompt)}, err
	}
	for b.Active() > 0 {
		b.Step() // a failed step ends the request: sink.err has it
	}
	return sink.res, sink.err
}

// generateSink passes Generate's text to its emit function.
type generateSink struct {
	emit func(string) error
	res  *Result
	err  error
}

func (g *generateSink) Token(_ int32, text string, _ *TokenLogProbs) error {
	if text == "" || g.emit == nil {
		return nil
	}
	return g.emit(text)
}

func (g *generateSink) Done(res *Result, err error) { g.res, g.err = res, err }

// Generation is the per-sequence state of text generation: the sampler
// with its history, the stream decoder and the stop strings. A Batcher
// drives one per request.
type Generation struct {
	opts GenerateOptions
	tok  *tokenizer.Tokenizer
	smp  *sample.Sampler
	dec  *tokenizer.StreamDecoder
	stop *stopMatcher
	// Tokens are the generated tokens (end-of-generation tokens excluded).
	Tokens []int32
	// LogProbs are the log-probabilities of Tokens, one each, when
	// GenerateOptions.LogProbs is set.
	LogProbs []TokenLogProbs
	// Finish is set once Step reports done.
	Finish FinishReason
	// err is set when a step found no token to choose.
	err error
	// The last step's log-probabilities (GenerateOptions.LogProbs), and
	// whether it appended a token.
	chosen   float64
	top      []sample.TokenProb
	appended bool
	// The grammar's matcher and vocabulary, with mask scratch.
	gm     *grammar.Matcher
	gv     *grammar.Vocab
	mask   []uint64
	masked []float32
}

// ErrNonFiniteLogits is matched by the error of a generation whose logits
// held no finite value to sample from (every one NaN or -Inf: NaN weights,
// say): the model, not the request, is broken.
var ErrNonFiniteLogits = errors.New("the model produced no finite logits")

// Err returns why generation ended without a token (ErrNonFiniteLogits),
// or nil.
func (g *Generation) Err() error { return g.err }

// NewGeneration starts generating after prompt (whose tokens the
// penalties see) with opts. It fails with a *sample.ParamError for
// unusable sampling parameters, a logit bias on a token outside the
// vocabulary included (Field "LogitBias", Value the id), and with an
// error matching ErrInvalidRequest for TopLogProbs outside [0,
// sample.MaxTopLogProbs] or set without LogProbs.
func (m *Model) NewGeneration(prompt []int32, opts GenerateOptions) (*Generation, error) {
	switch {
	case opts.TopLogProbs < 0 || opts.TopLogProbs > sample.MaxTopLogProbs:
		return nil, fmt.Errorf("%w: TopLogProbs %d is outside [0, %d]", ErrInvalidRequest, opts.TopLogProbs, sample.MaxTopLogProbs)
	case opts.TopLogProbs > 0 && !opts.LogProbs:
		return nil, fmt.Errorf("%w: TopLogProbs needs LogProbs", ErrInvalidRequest)
	}
	for id := range opts.Sampling.LogitBias {
		if int(id) >= m.Config.VocabSize {
			return nil, &sample.ParamError{Field: "LogitBias", Value: float64(id),
				Reason: fmt.Sprintf("token id outside the vocabulary of %d tokens", m.Config.VocabSize)}
		}
	}
	smp, err := sample.New(opts.Sampling)
	if err != nil {
		return nil, err
	}
	for _, id := range prompt {
		smp.Accept(id)
	}
	g := &Generation{
		opts: opts, tok: m.Tokenizer, smp: smp,
		dec:  m.Tokenizer.NewContinuationDecoder(),
		stop: newStopMatcher(opts.Stop),
	}
	if opts.Grammar != nil {
		g.gm = opts.Grammar.NewMatcher()
		g.gv = GrammarVocab(m.Tokenizer)
	}
	return g, nil
}

// Step samples the next token from logits and returns it with the text
// that became final. done reports that generation has ended (Finish says
// why, or Err when no token could be chosen): the token then must not be
// evaluated. room tells whether the
// sequence has space for one more evaluated token; without it the
// generation ends after this token.
func (g *Generation) Step(logits []float32, room bool) (id int32, text string, done bool) {
	var norm float64
	if g.opts.LogProbs {
		norm = sample.LogNormalizer(logits)
		g.top = sample.TopLogProbs(g.top[:0], logits, g.opts.TopLogProbs, norm)
	}
	src := logits
	if g.gm != nil {
		var ok bool
		if src, ok = g.constrain(logits); !ok {
			g.err = fmt.Errorf("%w after %d generated tokens", ErrGrammarDeadEnd, len(g.Tokens))
			return sample.NoToken, g.stop.flush(g.dec.Flush()), true
		}
	}
	id = g.smp.Sample(src)
	if g.opts.LogProbs && id >= 0 && int(id) < len(logits) {
		g.chosen = float64(logits[id]) - norm
	}
	return g.accept(id, room)
}

// CandidateCount returns how many of the highest logits StepCandidates
// needs to choose exactly the token Step would (see
// sample.Sampler.CandidateCount), or 0 when the sampler needs the whole
// logits vector, as it does for a generation that records
// log-probabilities (GenerateOptions.LogProbs).
func (g *Generation) CandidateCount() int {
	if g.opts.LogProbs || g.gm != nil {
		return 0
	}
	return g.smp.CandidateCount()
}

// StepCandidates is Step over the CandidateCount() highest logits, as
// Model.ForwardTopK returns them: token ids[i] has logit vals[i]. Called
// anyway for a generation that records log-probabilities, it computes
// them over the candidates as if they were the whole vocabulary.
func (g *Generation) StepCandidates(ids []int32, vals []float32, room bool) (id int32, text string, done bool) {
	var norm float64
	if g.opts.LogProbs {
		norm, g.top = sample.CandidateLogProbs(g.top[:0], ids, vals, g.opts.TopLogProbs)
	}
	if g.gm != nil {
		// Only reached when a caller ignores CandidateCount: keep the
		// candidates the grammar allows.
		g.mask = g.gm.Mask(g.gv, g.mask)
		fv := make([]float32, len(vals))
		for i, id := range ids {
			fv[i] = vals[i]
			if !grammar.Allowed(g.mask, id) && !(g.gm.Accepting() && g.tok.IsEOG(id)) {
				fv[i] = float32(math.Inf(-1))
			}
		}
		vals = fv
	}
	id = g.smp.SampleCandidates(ids, vals)
	if g.opts.LogProbs {
		if i := slices.Index(ids, id); i >= 0 {
			g.chosen = float64(vals[i]) - norm
		}
	}
	return g.accept(id, room)
}

// Last returns the log-probabilities of the token the last Step or
// StepCandidates appended to Tokens, or nil when the generation does not
// record them or that step appended no token (an end-of-generation token,
// no token at all).
func (g *Generation) Last() *TokenLogProbs {
	if !g.opts.LogProbs || !g.appended {
		return nil
	}
	return &g.LogProbs[len(g.LogProbs)-1]
}

// accept records the sampled token and decides whether generation ends.
// sample.NoToken ends it with ErrNonFiniteLogits: it is never fed back.
func (g *Generation) accept(id int32, room bool) (int32, string, bool) {
	g.appended = false
	if id == sample.NoToken {
		g.err = fmt.Errorf("%w after %d generated tokens", ErrNonFiniteLogits, len(g.Tokens))
		return id, g.stop.flush(g.dec.Flush()), true
	}
	g.smp.Accept(id)
	if g.tok.IsEOG(id) && (!g.opts.IgnoreEOS || g.gm != nil && g.gm.Accepting()) {
		g.Finish = FinishStop
		return id, g.stop.flush(g.dec.Flush()), true
	}
	if g.gm != nil {
		if err := g.gm.AcceptToken(g.gv, id); err != nil {
			g.err = fmt.Errorf("%w: token %d after %d generated tokens: %v", ErrGrammarDeadEnd, id, len(g.Tokens), err)
			return id, g.stop.flush(g.dec.Flush()), true
		}
	}
	g.Tokens = append(g.Tokens, id)
	g.appended = true
	if g.opts.LogProbs {
		g.LogProbs = append(g.LogProbs, TokenLogProbs{ID: id, LogProb: g.chosen, Top: slices.Clone(g.top)})
	}
	text, hit := g.stop.add(g.dec.Add(id))
	if hit {
		g.Finish = FinishStop
		return id, text, true
	}
	if g.opts.MaxTokens > 0 && len(g.Tokens) >= g.opts.MaxTokens || !room {
		g.Finish = FinishLength
		return id, text + g.stop.flush(g.dec.Flush()), true
	}
	return id, text, false
}

// stopMatcher holds back generated text that could be the start of a stop
// string, and cuts the text at the first stop string.
type stopMatcher struct {
	stops   []string
	pending string
	done    bool
}

func newStopMatcher(stops []string) *stopMatcher {
	m := &stopMatcher{}
	for _, s := range stops {
		if s != "" {
			m.stops = append(m.stops, s)
		}
	}
	return m
}

// add appends text and returns what can be emitted, and whether a stop
// string was found (everything from it on is dropped).
func (m *stopMatcher) add(text string) (string, bool) {
	if m.done {
		return "", true
	}
	if len(m.stops) == 0 {
		return text, false
	}
	m.pending += text
	cut := -1
	for _, s := range m.stops {
		if i := strings.Index(m.pending, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		out := m.pending[:cut]
		m.pending, m.done = "", true
		return out, true
	}
	// Hold back the longest suffix that is a prefix of a stop string.
	hold := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(m.pending)); k > hold; k-- {
			if strings.HasSuffix(m.pending, s[:k]) {
				hold = k
				break
			}
		}
	}
	out := m.pending[:len(m.pending)-hold]
	m.pending = m.pending[len(m.pending)-hold:]
	return out, false
}

// flush returns the held-back text plus text, at the end of generation.
func (m *stopMatcher) flush(text string) string {
	out, hit := m.add(text)
	if hit {
		return out
	}
	out += m.pending
	m.pending = ""
	return out
}
