package model

import (
	"context"

	"github.com/m40llm/m40llm/model/chat"
)

// ChatTemplate returns the model's chat template (its own
// tokenizer.chat_template, or a built-in fallback chosen from the
// vocabulary and architecture).
func (m *Model) ChatTemplate() (*chat.Template, error) {
	return chat.FromGGUF(m.Metadata, m.Config.Arch)
}

// ChatOptions are the options of ChatTokens besides the messages.
type ChatOptions struct {
	// AddGenerationPrompt appends the header that starts the assistant's
	// reply.
	AddGenerationPrompt bool
	// Limits bound the render (the zero value: chat's defaults).
	Limits chat.Limits
}

// ChatTokens renders msgs with t and tokenizes the result with special
// tokens parsed, returning the token ids and the rendered text. BOS is
// prepended when the model asks for it and the template did not already
// write it.
//
// A render that fails returns Render's error, which names the template: a
// *chat.TemplateError for a template that refuses the messages or breaks
// opts.Limits, a *chat.Error matching ctx.Err() when ctx is done first.
func (m *Model) ChatTokens(ctx context.Context, t *chat.Template, msgs []chat.Message, opts ChatOptions) ([]int32, string, error) {
	tok := m.Tokenizer
	ro := chat.RenderOptions{AddGenerationPrompt: opts.AddGenerationPrompt, Limits: opts.Limits}
	if id := tok.BOS(); id >= 0 {
		ro.BOSToken = tok.Piece(id)
	}
	if id := tok.EOS(); id >= 0 {
		ro.EOSToken = tok.Piece(id)
	}
	text, err := t.Render(ctx, msgs, ro)
	if err != nil {
		return nil, "", err
	}
	ids := tok.Encode(text, false, true)
	if tok.AddBOS() && (len(ids) == 0 || ids[0] != tok.BOS()) {
		ids = append([]int32{tok.BOS()}, ids...)
	}
	return ids, text, nil
}
