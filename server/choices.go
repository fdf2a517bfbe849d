package server

import (
	"context"

	"github.com/m40llm/m40llm/model"
)

// The choices of a request (its n): each is a job of its own, read on a
// goroutine of its own (pump), with a format of its own, whose response
// objects get the choice's index (withIndex) and are joined into one
// response (joinChoices) or one usage chunk (withUsage).

// usageOfAll is the usage of a request's choices: the prompt once (it is
// the same for every choice; its cached tokens are the first choice's)
// and the generated tokens of all of them.
func usageOfAll(rs []*model.Result) *Usage {
	u := UsageOf(rs[0])
	for _, r := range rs[1:] {
		u.CompletionTokens += len(r.Tokens)
		u.TotalTokens += len(r.Tokens)
	}
	return u
}

// jobEvent is what one choice's job produced (Job.NextPieces).
type jobEvent struct {
	i      int
	pieces []model.Piece
	done   bool
	res    *model.Result
	err    error
}

// pump reads each job on a goroutine of its own and sends what it
// produces, tagged with the job's index, until the job has ended or ctx
// is done; the goroutines return then, whether or not anyone reads.
func pump(ctx context.Context, jobs []*model.Job) <-chan jobEvent {
	events := make(chan jobEvent)
	for i, j := range jobs {
		go func() {
			for {
				pieces, done, res, err := j.NextPieces(ctx)
				select {
				case events <- jobEvent{i, pieces, done, res, err}:
				case <-ctx.Done():
					return
				}
				if done || err != nil {
					return
				}
			}
		}()
	}
	return events
}

// withIndex sets the index of every choice of c, a response object of a
// format (a completion or chat chunk or response), to i and returns c.
// Other values are returned as they are.
func withIndex(c any, i int) any {
	switch c := c.(type) {
	case *CompletionResponse:
		for k := range c.Choices {
			c.Choices[k].Index = i
		}
	case *ChatCompletionChunk:
		for k := range c.Choices {
			c.Choices[k].Index = i
		}
	case *ChatCompletionResponse:
		for k := range c.Choices {
			c.Choices[k].Index = i
		}
	}
	return c
}

// withUsage sets the usage of c, a usage chunk, to u and returns c.
func withUsage(c any, u *Usage) any {
	switch c := c.(type) {
	case *CompletionResponse:
		c.Usage = u
	case *ChatCompletionChunk:
		c.Usage = u
	}
	return c
}

// joinChoices returns the first of parts, the whole responses of each
// choice in order (all of one type), with the choices of all of them,
// numbered in that order, and the usage u.
func joinChoices(parts []any, u *Usage) any {
	switch first := parts[0].(type) {
	case *CompletionResponse:
		var all []CompletionChoice
		for i, p := range parts {
			if c, ok := withIndex(p, i).(*CompletionResponse); ok {
				all = append(all, c.Choices...)
			}
		}
		first.Choices, first.Usage = all, u
	case *ChatCompletionResponse:
		var all []ChatChoice
		for i, p := range parts {
			if c, ok := withIndex(p, i).(*ChatCompletionResponse); ok {
				all = append(all, c.Choices...)
			}
		}
		first.Choices, first.Usage = all, u
	}
	return parts[0]
}
