package model

import (
	"context"
	"fmt"
)

// Session is one sequence held in one KV-cache slot of a Model: the tokens
// whose keys and values are cached, in order. A Session is used by one
// goroutine at a time; while a request of a Batcher (or Engine) runs on
// it, only that Batcher uses it.
type Session struct {
	m      *Model
	slot   int32
	tokens []int32
	logits []float32 // logits after the last evaluated token
	batch  Batch
	busy   bool // a Batcher's request runs on it
}

// NewSession returns an empty session on KV-cache slot (0 ≤ slot < Slots).
func (m *Model) NewSession(slot int) (*Session, error) {
	if slot < 0 || slot >= m.slots {
		return nil, fmt.Errorf("model: slot %d out of range (have %d)", slot, m.slots)
	}
	return &Session{m: m, slot: int32(slot), logits: make([]float32, m.Config.VocabSize)}, nil
}

// Slot returns the session's KV-cache slot.
func (s *Session) Slot() int { return int(s.slot) }

// Model returns the session's model.
func (s *Session) Model() *Model { return s.m }

// Tokens returns the tokens in the cache. The slice must not be modified.
func (s *Session) Tokens() []int32 { return s.tokens }

// Len returns the number of cached positions.
func (s *Session) Len() int { return len(s.tokens) }

// Reset forgets every cached token.
func (s *Session) Reset() { s.tokens = s.tokens[:0] }

// Truncate keeps the first n cached tokens; later positions are overwritten
// by the next Eval.
func (s *Session) Truncate(n int) {
	if n < len(s.tokens) {
		s.tokens = s.tokens[:max(n, 0)]
	}
}

// Logits returns the logits after the last evaluated token. The slice is
// reused by the next Eval.
func (s *Session) Logits() []float32 { return s.logits }

// Eval appends tokens to the sequence, running them through the model in
// chunks of at most BatchSize, and returns the logits after the last one
// (valid until the next Eval). It fails with ErrContextFull when the
// sequence would outgrow the context (the cache then holds what fit), with
// ErrSessionBusy while a Batcher's request runs on the session, and with
// the forward pass's error.
func (s *Session) Eval(ctx context.Context, tokens []int32) ([]float32, error) {
	if s.busy {
		return nil, ErrSessionBusy
	}
	err := s.eval(ctx, tokens, func(b *Batch, out []int32) error {
		return s.m.Forward(b, out, s.logits)
	})
	if err != nil {
		return nil, err
	}
	return s.logits, nil
}

// eval runs tokens through the model in chunks of at most BatchSize; run
// evaluates one chunk, with out naming its last row on the last chunk and
// empty before.
func (s *Session) eval(ctx context.Context, tokens []int32, run func(b *Batch, out []int32) error) error {
	if len(tokens) == 0 {
		return fmt.Errorf("model: Eval of no tokens")
	}
	if len(s.tokens)+len(tokens) > s.m.ctxSize {
		return fmt.Errorf("%w: %d cached + %d new tokens > %d positions", ErrContextFull, len(s.tokens), len(tokens), s.m.ctxSize)
	}
	for start := 0; start < len(tokens); start += s.m.batchSize {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := tokens[start:min(start+s.m.batchSize, len(tokens))]
		n := len(chunk)
		b := &s.batch
		b.Tokens = append(b.Tokens[:0], chunk...)
		b.Pos, b.Slot = b.Pos[:0], b.Slot[:0]
		for i := range n {
			b.Pos = append(b.Pos, int32(len(s.tokens)+i))
			b.Slot = append(b.Slot, s.slot)
		}
		var out []int32
		if start+n == len(tokens) {
			out = []int32{int32(n - 1)}
		}
		if err := run(b, out); err != nil {
			return err
		}
		s.tokens = append(s.tokens, chunk...)
	}
	return nil
}

// reuse keeps the cached tokens that match the start of prompt, but at
// least one prompt token is left to evaluate, so that there are logits to
// sample the first generated token from. It returns how many it kept.
func (s *Session) reuse(prompt []int32) int {
	keep := min(commonPrefix(s.tokens, prompt), len(prompt)-1)
	s.Truncate(keep)
	return keep
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
