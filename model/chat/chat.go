// Package chat renders a conversation into the prompt text a model was
// trained on, using the Jinja chat template stored in the model file
// (tokenizer.chat_template) or a built-in fallback.
//
// Templates run on github.com/ardanlabs/jinja with the conventions of
// HuggingFace transformers' apply_chat_template: Jinja2's trim_blocks and
// lstrip_blocks, no trailing newline, and these variables:
//
//	messages               list of {"role", "content"} in order, with
//	                       "name", "tool_call_id" and "tool_calls" (a
//	                       list of {"id", "type": "function", "function":
//	                       {"name", "arguments"}}, the arguments a
//	                       mapping) when the Message has them
//	add_generation_prompt  RenderOptions.AddGenerationPrompt
//	bos_token, eos_token   RenderOptions.BOSToken, EOSToken
//	tools                  RenderOptions.Tools (None without)
//	documents              None
//	raise_exception(msg)   fails the render with a *TemplateError
//	strftime_now(format)   RenderOptions.Now (or the current time) formatted
//	                       like Python's strftime
//
// RenderOptions.Extra adds variables or replaces any of these.
//
// # Limits
//
// Templates come from model files, that is from strangers, so a render is
// bounded (see Limits): macro calls nest at most Limits.MaxDepth deep,
// loop iterations and macro calls number at most Limits.MaxSteps (and so
// does a range()), the output and every value a template assigns are at
// most Limits.MaxOutput bytes, and the render stops when Limits.Timeout
// has passed or its context is done. Compiling refuses sources over
// MaxSourceBytes, nesting deeper than MaxNesting, and list.append,
// list.insert and dict.update, which transformers' sandbox refuses too.
//
// The checks run between the statements of a template; a single
// expression is evaluated by the engine in one go. An expression such as
// "'x' * 10**12", "s | indent(10**12)" or 's | replace("", s)' therefore
// still allocates what it asks for, and one that large ends the process:
// bounding it needs a budget inside ardanlabs/jinja, which v1.8.0 does not
// have.
//
// This package applies Jinja2's whitespace rules itself before the engine
// sees a template, because ardanlabs/jinja v1.8.0 applies them to the wrong
// text when a tag follows another tag (ChatQA's template loses the blank
// line after its system text and the space after "User:").
//
// A rendered prompt may start with the BOS token's text when the template
// emits bos_token (Llama 2/3, Mistral, Gemma do); the tokenizer then must
// not add another BOS.
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a conversation. Role is usually "system", "user",
// "assistant" or "tool"; templates decide which roles and orders they
// accept.
type Message struct {
	Role    string
	Content string
	// Name is the author's name (OpenAI's "name"); empty: the template
	// sees no "name" key.
	Name string
	// ToolCalls are the calls an assistant message made; empty: the
	// template sees no "tool_calls" key (Llama 3.1's template tests
	// 'tool_calls' in message).
	ToolCalls []ToolCall
	// ToolCallID is the call a "tool" message answers; empty: no
	// "tool_call_id" key.
	ToolCallID string
}

// ToolCall is one function call of an assistant message.
type ToolCall struct {
	// ID identifies the call (OpenAI's "call_..."); tool messages refer
	// to it.
	ID string
	// Name is the function's name.
	Name string
	// Arguments is the JSON text of the arguments, normally an object.
	// Templates see it decoded (a mapping, as transformers passes it),
	// since they write it with tojson.
	Arguments json.RawMessage
}

// RenderOptions are the per-call inputs of Render besides the messages.
type RenderOptions struct {
	// AddGenerationPrompt appends the header that starts the assistant's
	// reply, for templates that have one.
	AddGenerationPrompt bool

	// BOSToken and EOSToken are the texts of the model's BOS and EOS
	// tokens (e.g. "<s>", "</s>"), which many templates write out.
	BOSToken, EOSToken string

	// Extra holds further template variables, such as tools, documents,
	// date_string or enable_thinking, and may replace the standard ones
	// (messages included, for messages richer than Message). Values are
	// converted as JSON would encode them; a json.RawMessage keeps the key
	// order of its objects, which tojson then reproduces.
	Extra map[string]any

	// Tools is the JSON text of the tools the model may call, a list in
	// OpenAI's shape ([{"type": "function", "function": {"name",
	// "description", "parameters"}}]), which templates see as tools with
	// the key order kept. Nil: tools is None.
	Tools json.RawMessage

	// Strings, when set, is applied to every string the template sees
	// from the messages (contents, names, ids, tool calls' keys and
	// values) and from Tools (keys and values), before it sees them.
	// model.ChatTokens uses it to mask control-token text.
	Strings func(string) string

	// Now is the time strftime_now reports. The zero value means the time
	// of the Render call.
	Now time.Time

	// Limits bound the render; the zero value means the defaults.
	Limits Limits
}

// Template is a compiled chat template. It is safe for concurrent use.
type Template struct {
	name string
	src  string
	tmpl *jinja.Template
}

// Name says where the template came from: "tokenizer.chat_template" for a
// model's own template, the built-in's name (see Builtin), "custom" for
// Parse, or the file's base name for ParseFile.
func (t *Template) Name() string { return t.name }

// Source returns the Jinja source the template was compiled from.
func (t *Template) Source() string { return t.src }

// Error reports a template that does not compile or fails while rendering
// for a reason other than its own raise_exception.
type Error struct {
	Template string // Name of the template
	Op       string // "parse" or "render"
	Err      error
}

func (e *Error) Error() string {
	return fmt.Sprintf("chat template %q: %s: %v", e.Template, e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// TemplateError is the error of a template that refuses to render the
// conversation: either it raised one itself through raise_exception,
// typically because it does not support the conversation (a system
// message, roles that do not alternate), or it broke one of the render's
// Limits or ErrSelfReference. Message is the template's own text or says
// which limit; callers can report it to the client as a bad request.
type TemplateError struct {
	Template string // Name of the template
	Message  string // the argument of raise_exception, or what broke a limit
	// Err is nil for raise_exception; otherwise the *LimitError, or
	// ErrSelfReference.
	Err error
}

func (e *TemplateError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("chat template %q: %v", e.Template, e.Err)
	}
	return fmt.Sprintf("chat template %q: %s", e.Template, e.Message)
}

func (e *TemplateError) Unwrap() error { return e.Err }

// Parse compiles a Jinja chat template, such as the value of
// tokenizer.chat_template. Its Name is "custom". A source that does not
// compile yields an *Error: wrapping a *SyntaxError for tags that cannot
// be delimited and the constructs this package refuses, a *LimitError for
// a source over MaxSourceBytes or nesting deeper than MaxNesting.
func Parse(src string) (*Template, error) { return parse("custom", src) }

// ParseFile compiles the chat template in the file at path, named by the
// file's base name. It fails as Parse does, with an *Error wrapping a
// *LimitError for a file over MaxSourceBytes, or with the error of
// reading the file.
func ParseFile(path string) (*Template, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSourceBytes+1))
	if err != nil {
		return nil, err
	}
	return parse(filepath.Base(path), string(b))
}

func parse(name, src string) (_ *Template, err error) {
	defer recoverEngine(name, "parse", &err)
	if err := checkSource(src); err != nil {
		return nil, &Error{Template: name, Op: "parse", Err: err}
	}
	norm, err := normalize(src, true)
	if err != nil {
		return nil, &Error{Template: name, Op: "parse", Err: err}
	}
	tmpl, err := jinja.Compile(norm)
	if err != nil {
		return nil, &Error{Template: name, Op: "parse", Err: err}
	}
	return &Template{name: name, src: src, tmpl: tmpl}, nil
}

// Render formats msgs with the template, within opts.Limits and until ctx
// is done. A template that rejects the conversation or breaks a limit
// yields a *TemplateError (wrapping the *LimitError for a limit); a
// context done before the render ends yields an *Error wrapping ctx.Err(),
// so that errors.Is(err, context.Canceled) tells a caller that gave up;
// other failures are an *Error.
func (t *Template) Render(ctx context.Context, msgs []Message, opts RenderOptions) (_ string, err error) {
	defer recoverEngine(t.name, "render", &err)
	g := newGuard(ctx, opts.Limits)
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		v, err := messageValue(m, opts.Strings)
		if err != nil {
			return "", &Error{Template: t.name, Op: "render", Err: fmt.Errorf("messages[%d]: %w", i, err)}
		}
		list[i] = v
	}
	tools := jinja.None()
	if opts.Tools != nil {
		v, err := decodeJSON(opts.Tools, opts.Strings)
		if err != nil {
			return "", &Error{Template: t.name, Op: "render", Err: fmt.Errorf("tools: %w", err)}
		}
		tools = v
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	vars := map[string]jinja.Value{
		"messages":              jinja.NewList(list),
		"add_generation_prompt": jinja.NewBool(opts.AddGenerationPrompt),
		"bos_token":             jinja.NewString(opts.BOSToken),
		"eos_token":             jinja.NewString(opts.EOSToken),
		"tools":                 tools,
		"documents":             jinja.None(),
		"raise_exception":       jinja.NewCallable("raise_exception", t.raise),
		"strftime_now": jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) != 1 || !args[0].IsString() {
				return jinja.Undefined(), errors.New("strftime_now takes one format string")
			}
			return jinja.NewString(strftime(args[0].AsString(), now)), nil
		}),
	}
	for k, v := range opts.Extra {
		if strings.HasPrefix(k, hookPrefix) {
			return "", &Error{Template: t.name, Op: "render", Err: fmt.Errorf("extra variable %q: the prefix %q is reserved", k, hookPrefix)}
		}
		val, err := toValue(v)
		if err != nil {
			return "", &Error{Template: t.name, Op: "render", Err: fmt.Errorf("extra variable %q: %w", k, err)}
		}
		vars[k] = val
	}
	vars[hookToJSON] = jinja.NewCallable("tojson", g.toJSON)
	for k, v := range g.callbacks() {
		vars[k] = v
	}
	out, err := t.tmpl.RenderValues(vars)
	if g.err != nil {
		err = g.err // the first failure, even if the engine dropped it
	}
	if err != nil {
		return "", t.renderError(err)
	}
	return out, nil
}

// renderError turns the error of a render into a *TemplateError or an
// *Error.
func (t *Template) renderError(err error) error {
	var te *TemplateError
	var le *LimitError
	switch {
	case errors.As(err, &te):
		return te
	case errors.As(err, &le):
		return &TemplateError{Template: t.name, Message: "the chat template broke a render limit: " + le.Error(), Err: le}
	case errors.Is(err, ErrSelfReference):
		return &TemplateError{Template: t.name, Message: "the chat template failed: " + ErrSelfReference.Error(), Err: ErrSelfReference}
	}
	return &Error{Template: t.name, Op: "render", Err: err}
}

// recoverEngine turns a panic of the template engine into an *Error: model
// files come from strangers, and their templates must not bring the
// process down.
func recoverEngine(name, op string, err *error) {
	if r := recover(); r != nil {
		*err = &Error{Template: name, Op: op, Err: fmt.Errorf("template engine panic: %v", r)}
	}
}

func (t *Template) raise(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	msg := "raise_exception called without a message"
	if len(args) > 0 {
		if args[0].IsString() {
			msg = args[0].AsString()
		} else {
			msg = args[0].String()
		}
	}
	return jinja.Undefined(), &TemplateError{Template: t.name, Message: msg}
}

// messageValue converts m for the template, with f (when not nil) applied
// to its strings.
func messageValue(m Message, f func(string) string) (jinja.Value, error) {
	str := func(s string) jinja.Value {
		if f != nil {
			s = f(s)
		}
		return jinja.NewString(s)
	}
	v := jinja.NewDict()
	d := v.AsDict()
	d.Set("role", str(m.Role))
	d.Set("content", str(m.Content))
	if m.Name != "" {
		d.Set("name", str(m.Name))
	}
	if m.ToolCallID != "" {
		d.Set("tool_call_id", str(m.ToolCallID))
	}
	if len(m.ToolCalls) > 0 {
		calls := make([]jinja.Value, len(m.ToolCalls))
		for i, c := range m.ToolCalls {
			args, err := decodeJSON(c.Arguments, f)
			if err != nil {
				return jinja.Undefined(), fmt.Errorf("tool_calls[%d].arguments: %w", i, err)
			}
			fn := jinja.NewDict()
			fn.AsDict().Set("name", str(c.Name))
			fn.AsDict().Set("arguments", args)
			call := jinja.NewDict()
			if c.ID != "" {
				call.AsDict().Set("id", str(c.ID))
			}
			call.AsDict().Set("type", jinja.NewString("function"))
			call.AsDict().Set("function", fn)
			calls[i] = call
		}
		d.Set("tool_calls", jinja.NewList(calls))
	}
	return v, nil
}
