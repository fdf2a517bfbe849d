package sample

import (
	"fmt"
	"math"
)

// Params configures a Sampler. The zero value is not valid (TopP and
// RepeatPenalty must be set); start from DefaultParams.
//
// The filters run in llama.cpp's default chain order: logit bias,
// penalties, top-k, top-p, min-p, temperature, then a draw from the
// remaining distribution.
type Params struct {
	// Temperature divides the logits of the surviving candidates before the
	// draw. Zero or negative selects greedy decoding: the token with the
	// highest logit after penalties (the lowest ID among equal logits). This
	// matches llama.cpp, whose temperature sampler keeps only the maximum
	// when temp <= 0. NaN and ±Inf are rejected.
	Temperature float32

	// TopK keeps the K highest logits. Zero or negative turns it off, as
	// does a K at least the vocabulary size.
	TopK int

	// TopP keeps the shortest prefix of the candidates, by descending
	// probability at temperature 1, whose probability mass is at least TopP.
	// It must be in (0, 1]; 1 turns it off.
	TopP float32

	// MinP drops candidates whose probability is below MinP times the
	// probability of the most likely candidate (at temperature 1). Zero or
	// negative turns it off; it must not exceed 1.
	MinP float32

	// RepeatPenalty penalises every token that occurs in the penalty window,
	// once regardless of how often: a positive logit is divided by it and a
	// zero or negative logit is multiplied by it (llama.cpp semantics). 1
	// turns it off; it must be finite and positive. Values below 1 reward
	// repetition.
	RepeatPenalty float32

	// RepeatLastN is the number of most recently accepted tokens that all
	// three penalties look at. -1 means every token accepted since New or
	// Reset (kept in memory, and counted again on every Sample), 0 turns the
	// penalties off; other negative values are rejected. llama.cpp's default
	// is 64.
	RepeatLastN int

	// FrequencyPenalty is subtracted from a token's logit once per occurrence
	// in the penalty window (OpenAI semantics). 0 turns it off; it must be
	// finite.
	FrequencyPenalty float32

	// PresencePenalty is subtracted once from the logit of every token that
	// occurs in the penalty window (OpenAI semantics). 0 turns it off; it
	// must be finite.
	PresencePenalty float32

	// LogitBias is added to the logits of the tokens it names before
	// anything else (OpenAI's logit_bias, llama.cpp's logit_bias sampler):
	// -100 effectively forbids a token, +100 effectively forces it. Each
	// bias must be in [-100, 100] and each ID non-negative (New rejects
	// others with a *ParamError); IDs past the logits a Sample call gets
	// are skipped, so callers that know the vocabulary check them against
	// it (model.NewGeneration does). A non-empty LogitBias makes the
	// sampler need the whole logits vector (NeedsFullLogits). New copies
	// the map.
	LogitBias map[int32]float32

	// Seed seeds the sampler's PCG generator. The same Seed with the same
	// sequence of calls yields the same tokens. Every value, 0 included, is
	// used as is; a caller that wants varying output must pick a varying
	// seed.
	Seed uint64
}

// DefaultParams returns llama.cpp's default sampling settings (common.h):
// temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, penalties off with a
// 64-token window, seed 0.
func DefaultParams() Params {
	return Params{
		Temperature:   0.8,
		TopK:          40,
		TopP:          0.95,
		MinP:          0.05,
		RepeatPenalty: 1,
		RepeatLastN:   64,
	}
}

// MaxLogitBias bounds the magnitude of a Params.LogitBias entry (OpenAI's
// limit).
const MaxLogitBias = 100

// ParamError reports a Params field with an unusable value.
type ParamError struct {
	Field  string  // the Params field name, e.g. "TopP"
	Value  float64 // the rejected value
	Reason string  // what the value must satisfy
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("sample: invalid %s %v: %s", e.Field, e.Value, e.Reason)
}

func finite(f float32) bool {
	return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0)
}

// validate returns a *ParamError for the first unusable field.
func (p Params) validate() error {
	bad := func(field string, v float64, reason string) error {
		return &ParamError{Field: field, Value: v, Reason: reason}
	}
	switch {
	case !finite(p.Temperature):
		return bad("Temperature", float64(p.Temperature), "must be finite (<= 0 selects greedy decoding)")
	case !(p.TopP > 0 && p.TopP <= 1): // also rejects NaN
		return bad("TopP", float64(p.TopP), "must be in (0, 1] (1 turns top-p off)")
	case math.IsNaN(float64(p.MinP)) || p.MinP > 1:
		return bad("MinP", float64(p.MinP), "must be at most 1 (<= 0 turns min-p off)")
	case !finite(p.RepeatPenalty) || p.RepeatPenalty <= 0:
		return bad("RepeatPenalty", float64(p.RepeatPenalty), "must be finite and positive (1 turns it off)")
	case p.RepeatLastN < -1:
		return bad("RepeatLastN", float64(p.RepeatLastN), "must be -1 (whole history), 0 (off) or positive")
	case !finite(p.FrequencyPenalty):
		return bad("FrequencyPenalty", float64(p.FrequencyPenalty), "must be finite")
	case !finite(p.PresencePenalty):
		return bad("PresencePenalty", float64(p.PresencePenalty), "must be finite")
	}
	for _, b := range sortedBias(p.LogitBias) {
		switch {
		case b.id < 0:
			return bad("LogitBias", float64(b.id), "token ids must not be negative")
		case !(b.v >= -MaxLogitBias && b.v <= MaxLogitBias): // also rejects NaN
			return bad("LogitBias", float64(b.v), fmt.Sprintf("the bias of token %d must be in [-%d, %d]", b.id, MaxLogitBias, MaxLogitBias))
		}
	}
	return nil
}

// penalties reports whether any penalty changes logits.
func (p Params) penalties() bool {
	return p.RepeatLastN != 0 && (p.RepeatPenalty != 1 || p.FrequencyPenalty != 0 || p.PresencePenalty != 0)
}

// penaltiesOnlyLower reports whether the penalties can only lower a logit,
// which is what makes a raw top-N preselection sufficient.
func (p Params) penaltiesOnlyLower() bool {
	return p.RepeatPenalty >= 1 && p.FrequencyPenalty >= 0 && p.PresencePenalty >= 0
}
