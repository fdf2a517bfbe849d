package model

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
	Finish       FinishReason
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

func (g *generateSink) Token(_ int32, text string) error {
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
	// Finish is set once Step reports done.
	Finish FinishReason
	// err is set when a step found no token to choose.
	err error
}

// ErrNonFiniteLogits is matched by the error of a generation whose logits
// held no finite value to sample from (every one NaN or -Inf: NaN weights,
// say): the model, not the request, is broken.
var ErrNonFiniteLogits = errors.New("the model produced no finite logits")

// Err returns why generation ended without a token (ErrNonFiniteLogits),
// or nil.
func (g *Generation) Err() error { return g.err }

// NewGeneration starts generating after prompt (whose tokens the
// penalties see) with opts.
func (m *Model) NewGeneration(prompt []int32, opts GenerateOptions) (*Generation, error) {
	smp, err := sample.New(opts.Sampling)
	if err != nil {
		return nil, err
	}
	for _, id := range prompt {
		smp.Accept(id)
	}
	return &Generation{
		opts: opts, tok: m.Tokenizer, smp: smp,
		dec:  m.Tokenizer.NewContinuationDecoder(),
		stop: newStopMatcher(opts.Stop),
	}, nil
}

// Step samples the next token from logits and returns it with the text
// that became final. done reports that generation has ended (Finish says
// why, or Err when no token could be chosen): the token then must not be
// evaluated. room tells whether the
// sequence has space for one more evaluated token; without it the
// generation ends after this token.
func (g *Generation) Step(logits []float32, room bool) (id int32, text string, done bool) {
	return g.accept(g.smp.Sample(logits), room)
}

// CandidateCount returns how many of the highest logits StepCandidates
// needs to choose exactly the token Step would (see
// sample.Sampler.CandidateCount), or 0 when the sampler needs the whole
// logits vector.
func (g *Generation) CandidateCount() int { return g.smp.CandidateCount() }

// StepCandidates is Step over the CandidateCount() highest logits, as
// Model.ForwardTopK returns them: token ids[i] has logit vals[i].
func (g *Generation) StepCandidates(ids []int32, vals []float32, room bool) (id int32, text string, done bool) {
	return g.accept(g.smp.SampleCandidates(ids, vals), room)
}

// accept records the sampled token and decides whether generation ends.
// sample.NoToken ends it with ErrNonFiniteLogits: it is never fed back.
func (g *Generation) accept(id int32, room bool) (int32, string, bool) {
	if id == sample.NoToken {
		g.err = fmt.Errorf("%w after %d generated tokens", ErrNonFiniteLogits, len(g.Tokens))
		return id, g.stop.flush(g.dec.Flush()), true
	}
	g.smp.Accept(id)
	if g.tok.IsEOG(id) && !g.opts.IgnoreEOS {
		g.Finish = FinishStop
		return id, g.stop.flush(g.dec.Flush()), true
	}
	g.Tokens = append(g.Tokens, id)
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
