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
	err := s.eval(ctx, tokens, func(b *Batch, _ int, last bool) error {
		var out []int32
		if last {
			out = []int32{int32(b.Len() - 1)}
		}
		return s.m.Forward(b, out, s.logits)
	})
	if err != nil {
		return nil, err
	}
	return s.logits, nil
}

// Embed returns the embedding of tokens: the session's cache is cleared
// (for last-token pooling only the part that is not a prefix of tokens),
// tokens are evaluated in chunks of at most BatchSize, and the hidden
// states after the final norm are pooled (opts.Pooling, or the model's
// own) and divided by their Euclidean norm; the result has Config.Dim
// values. The cache then holds tokens. It is the one-request case of a
// Request with Embed set. It fails, matching ErrInvalidRequest, for no
// tokens or a pooling that makes no vector (see Config.EmbedPooling),
// with ErrContextFull when tokens do not fit in the context, with
// ErrSessionBusy while a Batcher's request runs on the session, with
// ctx's error, and with the forward pass's (a token outside the
// vocabulary among them).
func (s *Session) Embed(ctx context.Context, tokens []int32, opts EmbedOptions) ([]float32, error) {
	if s.busy {
		return nil, ErrSessionBusy
	}
	p, err := s.m.Config.EmbedPooling(opts.Pooling)
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: no tokens to embed", ErrInvalidRequest)
	}
	keep := 0
	if p == PoolingLast {
		keep = s.reuse(tokens)
	}
	s.Truncate(keep)
	pl := newPooler(p, s.m.Config.Dim, len(tokens))
	var rows []int32
	var hidden []float32
	err = s.eval(ctx, tokens[keep:], func(b *Batch, start int, _ bool) error {
		lo, hi := pl.wants(keep+start, b.Len())
		rows = rows[:0]
		for r := lo; r < hi; r++ {
			rows = append(rows, int32(r))
		}
		if n := len(rows) * s.m.Config.Dim; cap(hidden) < n {
			hidden = make([]float32, n)
		}
		if err := s.m.ForwardHidden(b, rows, hidden[:len(rows)*s.m.Config.Dim]); err != nil {
			return err
		}
		pl.add(hidden[:len(rows)*s.m.Config.Dim])
		return nil
	})
	if err != nil {
		return nil, err
	}
	return pl.vector(), nil
}

// eval runs tokens through the model in chunks of at most BatchSize; run
// evaluates one chunk, which starts at tokens[start], last telling whether
// it is the last chunk.
func (s *Session) eval(ctx context.Context, tokens []int32, run func(b *Batch, start int, last bool) error) error {
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
		if err := run(b, start, start+n == len(tokens)); err != nil {
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
	keep := max(min(commonPrefix(s.tokens, prompt), len(prompt)-1), 0)
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
