package model

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"weak"

	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/tokenizer"
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
	// AllowSpecialInContent tokenizes the text of control tokens in the
	// messages' contents as those tokens, as the template's own text is:
	// "<|im_end|><|im_start|>system" in a user message then ends the turn
	// and starts a system message. Off (the default), contents are plain
	// text.
	AllowSpecialInContent bool
	// Limits bound the render (the zero value: chat's defaults).
	Limits chat.Limits
	// Tools is chat.RenderOptions.Tools: the JSON list of the tools the
	// model may call, or nil. Its strings are tokenized as the contents'
	// are.
	Tools json.RawMessage
}

// ChatTokens renders msgs with t and tokenizes the result, returning the
// token ids and the rendered text. The text the template writes itself
// is tokenized with control tokens parsed ("<|im_start|>", the bos_token
// it writes); the contents of the messages are not, unless
// opts.AllowSpecialInContent. BOS is prepended when the model asks for it
// and the template did not already write it.
//
// For messages whose contents hold no control token's text the tokens are
// those of the whole rendered text with control tokens parsed. Otherwise
// the contents are rendered with each such text replaced by a marker, the
// rendered text is split at the template's control tokens, and the markers
// are put back before each piece is tokenized as plain text; a template
// that cuts a content through a marker (slicing it by position) leaves
// the marker's characters in the prompt.
//
// A render that fails returns Render's error, which names the template: a
// *chat.TemplateError for a template that refuses the messages or breaks
// opts.Limits, a *chat.Error matching ctx.Err() when ctx is done first.
func (m *Model) ChatTokens(ctx context.Context, t *chat.Template, msgs []chat.Message, opts ChatOptions) ([]int32, string, error) {
	tok := m.Tokenizer
	ro := chat.RenderOptions{AddGenerationPrompt: opts.AddGenerationPrompt, Limits: opts.Limits, Tools: opts.Tools}
	if id := tok.BOS(); id >= 0 {
		ro.BOSToken = tok.Piece(id)
	}
	if id := tok.EOS(); id >= 0 {
		ro.EOSToken = tok.Piece(id)
	}
	var ids []int32
	var text string
	var err error
	if cs := controls(tok); !opts.AllowSpecialInContent && anyIn(cs, msgs, opts.Tools) {
		ids, text, err = plainContents(ctx, tok, t, msgs, ro, cs)
	} else {
		text, err = t.Render(ctx, msgs, ro)
		ids = tok.Encode(text, false, true)
	}
	if err != nil {
		return nil, "", err
	}
	if tok.AddBOS() && (len(ids) == 0 || ids[0] != tok.BOS()) {
		ids = append([]int32{tok.BOS()}, ids...)
	}
	return ids, text, nil
}

// control is a token that Encode matches in text only when asked to parse
// special tokens: a control or an unknown token.
type control struct {
	id   int32
	text string
}

// controlCache maps a tokenizer (weakly, so that it can still be
// collected, and its entry with it) to its controls: finding them walks
// the whole vocabulary, a third of a millisecond for 100,000 tokens.
var controlCache sync.Map // weak.Pointer[tokenizer.Tokenizer] -> []control

// controls returns the control tokens of tok, longest text first as the
// tokenizer tries them (equal lengths in id order). The slice is shared:
// callers must not change it.
func controls(tok *tokenizer.Tokenizer) []control {
	key := weak.Make(tok)
	if cs, ok := controlCache.Load(key); ok {
		return cs.([]control)
	}
	cs := findControls(tok)
	if _, loaded := controlCache.LoadOrStore(key, cs); !loaded {
		runtime.AddCleanup(tok, func(k weak.Pointer[tokenizer.Tokenizer]) { controlCache.Delete(k) }, key)
	}
	return cs
}

func findControls(tok *tokenizer.Tokenizer) []control {
	var all []control
	for id := range int32(tok.VocabSize()) {
		if typ := tok.Type(id); typ == tokenizer.TypeControl || typ == tokenizer.TypeUnknown {
			if p := tok.Piece(id); p != "" {
				all = append(all, control{id, p})
			}
		}
	}
	slices.SortStableFunc(all, func(a, b control) int { return len(b.text) - len(a.text) })
	return all
}

// anyIn reports whether a string of msgs (contents, names, tool calls)
// or of tools holds the text of one of controls.
func anyIn(controls []control, msgs []chat.Message, tools json.RawMessage) bool {
	for _, s := range userStrings(msgs, tools) {
		for _, c := range controls {
			if strings.Contains(s, c.text) {
				return true
			}
		}
	}
	return false
}

// userStrings returns the strings of msgs and tools that the template
// sees and the client wrote: contents, names, tool call ids, names and
// the keys and values of their arguments, and those of tools.
func userStrings(msgs []chat.Message, tools json.RawMessage) []string {
	var out []string
	for _, msg := range msgs {
		out = append(out, msg.Content, msg.Name, msg.ToolCallID)
		for _, c := range msg.ToolCalls {
			out = append(out, c.ID, c.Name)
			out = jsonStrings(out, c.Arguments)
		}
	}
	return jsonStrings(out, tools)
}

// jsonStrings appends the strings of the JSON text raw, keys included, to
// out; a text that does not parse adds what precedes the error (Render
// refuses it anyway).
func jsonStrings(out []string, raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		if s, ok := tok.(string); ok {
			out = append(out, s)
		}
	}
}

// plainContents renders msgs with the texts of controls in their strings
// (and those of ro.Tools) replaced by markers, and tokenizes the result
// with encodeMasked.
func plainContents(ctx context.Context, tok *tokenizer.Tokenizer, t *chat.Template, msgs []chat.Message, ro chat.RenderOptions,
	controls []control) ([]int32, string, error) {
	avoid := append([]string{t.Source(), ro.BOSToken, ro.EOSToken}, userStrings(msgs, ro.Tools)...)
	mk := newMarkers(controls, msgs, avoid...)
	ro.Strings = mk.mask.Replace
	out, err := t.Render(ctx, msgs, ro)
	if err != nil {
		return nil, "", err
	}
	ids, text := encodeMasked(tok, out, mk)
	return ids, text, nil
}

// markers replace the control tokens' texts in message contents: control
// i becomes open + i + close, a text made of '~', '%' and digits that
// case changes, trimming, escaping and tojson leave alone, with open
// chosen not to occur in any content, the template source, the BOS and
// EOS texts or a control's text.
type markers struct {
	open, close string
	mask        *strings.Replacer
	controls    []control
}

func newMarkers(controls []control, msgs []chat.Message, avoid ...string) *markers {
	texts := avoid
	for _, msg := range msgs {
		texts = append(texts, msg.Content)
	}
	for _, c := range controls {
		texts = append(texts, c.text)
	}
	open := "~%"
	for slices.ContainsFunc(texts, func(s string) bool { return strings.Contains(s, open) }) {
		open += "%"
	}
	mk := &markers{open: open, close: open[1:] + "~", controls: controls}
	pairs := make([]string, 0, 2*len(controls))
	for i, c := range controls {
		pairs = append(pairs, c.text, mk.open+strconv.Itoa(i)+mk.close)
	}
	// Longest first: at a position where several match, the longest wins.
	mk.mask = strings.NewReplacer(pairs...)
	return mk
}

// restore puts the controls' texts back in place of the markers of s.
func (mk *markers) restore(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, mk.open)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i+len(mk.open):]
		j := strings.Index(s, mk.close)
		k := -1
		if j >= 0 {
			if n, err := strconv.Atoi(s[:j]); err == nil && s[:j] == strconv.Itoa(n) {
				k = n
			}
		}
		if k < 0 || k >= len(mk.controls) {
			b.WriteString(mk.open) // a marker the template cut through
			continue
		}
		b.WriteString(mk.controls[k].text)
		s = s[j+len(mk.close):]
	}
}

// encodeMasked tokenizes text, rendered from masked contents: it splits
// text at the control tokens written in it, as the tokenizer's own
// partition does (longest text first, every occurrence, white space
// stripped around tokens with the lstrip or rstrip attribute), and
// tokenizes the pieces in between, with the markers restored, without
// parsing control tokens. It returns the ids and the restored text.
func encodeMasked(tok *tokenizer.Tokenizer, text string, mk *markers) ([]int32, string) {
	type piece struct {
		id     int32 // a control token, or -1 for text[off:off+n]
		off, n int
	}
	frags := []piece{{id: -1, n: len(text)}}
	for _, c := range mk.controls {
		if !strings.Contains(text, c.text) {
			continue
		}
		lstrip, rstrip := stripOf(tok, c)
		var out []piece
		for _, f := range frags {
			if f.id >= 0 {
				out = append(out, f)
				continue
			}
			off, end := f.off, f.off+f.n
			for {
				i := strings.Index(text[off:end], c.text)
				if i < 0 {
					if off < end {
						out = append(out, piece{id: -1, off: off, n: end - off})
					}
					break
				}
				m := off + i
				left := m
				for lstrip && left > off && isCSpace(text[left-1]) {
					left--
				}
				if left > off {
					out = append(out, piece{id: -1, off: off, n: left - off})
				}
				out = append(out, piece{id: c.id})
				off = m + len(c.text)
				for rstrip && off < end && isCSpace(text[off]) {
					off++
				}
			}
		}
		frags = out
	}
	var ids []int32
	for _, f := range frags {
		if f.id >= 0 {
			ids = append(ids, f.id)
			continue
		}
		// Like Encode's raw fragments, each piece follows a control token
		// or starts the text.
		ids = append(ids, tok.Encode(mk.restore(text[f.off:f.off+f.n]), false, false)...)
	}
	return ids, mk.restore(text)
}

// stripOf reports whether the tokenizer strips white space left and right
// of control token c (llama.cpp's lstrip and rstrip attributes, which
// Phi-3 sets), by asking it: with the attribute, the space is swallowed.
func stripOf(tok *tokenizer.Tokenizer, c control) (lstrip, rstrip bool) {
	only := []int32{c.id}
	return slices.Equal(tok.Encode(" "+c.text, false, true), only), slices.Equal(tok.Encode(c.text+" ", false, true), only)
}

// isCSpace is C's isspace, as the tokenizer strips.
func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}
