package model

import (
	"context"
	"fmt"

	"github.com/m40llm/m40llm/model/chat"
)

// ChatTemplate returns the model's chat template (its own
// tokenizer.chat_template, or a built-in fallback chosen from the
// vocabulary and architecture).
func (m *Model) ChatTemplate() (*chat.Template, error) {
	return chat.FromGGUF(m.Metadata, m.Config.Arch)
}

// ChatTokens renders msgs with t (adding the assistant header when
// addGenerationPrompt) and tokenizes the result with special tokens parsed.
// BOS is prepended when the model asks for it and the template did not
// already write it.
func (m *Model) ChatTokens(t *chat.Template, msgs []chat.Message, addGenerationPrompt bool) ([]int32, string, error) {
	tok := m.Tokenizer
	opts := chat.RenderOptions{AddGenerationPrompt: addGenerationPrompt}
	if id := tok.BOS(); id >= 0 {
		opts.BOSToken = tok.Piece(id)
	}
	if id := tok.EOS(); id >= 0 {
		opts.EOSToken = tok.Piece(id)
	}
	text, err := t.Render(context.Background(), msgs, opts)
	if err != nil {
		return nil, "", fmt.Errorf("rendering the chat template (%s): %w", t.Name(), err)
	}
	ids := tok.Encode(text, false, true)
	if tok.AddBOS() && (len(ids) == 0 || ids[0] != tok.BOS()) {
		ids = append([]int32{tok.BOS()}, ids...)
	}
	return ids, text, nil
}
