package server

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/grammar"
)

// Tool calling. A chat request's tools go to the chat template, which
// tells the model how to call them; tool_choice says whether it may
// (auto, the default with tools), must (required, or a named function)
// or must not (none, which also leaves the tools out of the prompt).
// auto generates freely and parses the reply in the template's format
// (chat.ParseToolCalls): a reply with calls is answered with tool_calls
// and finish_reason "tool_calls", one without as plain content. required
// and a named function constrain the reply with a grammar: the call
// syntax of the template around each function's parameters schema.

// Bounds of the tools of a request.
const (
	// maxTools bounds the functions of a request (OpenAI's limit).
	maxTools = 128
	// maxToolsBytes bounds the JSON text of the tools together.
	maxToolsBytes = 1 << 20
	// maxToolCalls bounds the calls of one assistant message.
	maxToolCalls = 128
)

// toolName is the form of a function name, as OpenAI defines it.
var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Tool is one entry of a chat request's tools: a function the model may
// call.
type Tool struct {
	// Type must be "function".
	Type     string       `json:"type"`
	Function *FunctionDef `json:"function"`
}

// FunctionDef describes a function: its name (1 to 64 letters, digits,
// _ or -), what it does, and a JSON schema of its arguments object
// (absent: it takes none). Strict is accepted: with tool_choice required
// or a named function the arguments always follow the schema.
type FunctionDef struct {
	Name        string          `json:"name"`
	Description *string         `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ToolCall is a function call of an assistant message, in a request's
// history or in a response. Arguments is the JSON text of an object.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function a ToolCall calls and its arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ToolCallDelta is a streamed part of a call: the first of a call has its
// index, id, type and name (arguments ""), later ones more arguments text.
type ToolCallDelta struct {
	Index    int               `json:"index"`
	ID       string            `json:"id,omitempty"`
	Type     string            `json:"type,omitempty"`
	Function FunctionCallDelta `json:"function"`
}

// FunctionCallDelta is the function part of a ToolCallDelta.
type FunctionCallDelta struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// ToolFields are the tool fields of a chat request.
type ToolFields struct {
	// Tools lists the functions the model may call (see Tool).
	Tools json.RawMessage `json:"tools,omitempty"`
	// ToolChoice is "none", "auto" (the default with tools), "required"
	// or {"type": "function", "function": {"name": ...}}.
	ToolChoice json.RawMessage `json:"tool_choice,omitempty"`
	// ParallelToolCalls (default true) lets a reply hold several calls;
	// false keeps one.
	ParallelToolCalls *bool `json:"parallel_tool_calls,omitempty"`
}

// toolUse is how a request uses tools, for rendering and answering.
type toolUse struct {
	// render is the tools list the template sees; nil for none.
	render json.RawMessage
	// format is the template's call syntax; parse says whether replies
	// are read for calls.
	format   chat.ToolFormat
	parse    bool
	parallel bool
	// grammar constrains the reply to calls (required, named); nil
	// otherwise.
	grammar *grammar.Grammar
}

// toolChoice is a decoded tool_choice: mode "none", "auto", "required"
// or "function" (then name).
type toolChoice struct {
	mode, name string
}

func decodeToolChoice(raw json.RawMessage) (toolChoice, error) {
	if isNull(raw) {
		return toolChoice{mode: ""}, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "none", "auto", "required":
			return toolChoice{mode: s}, nil
		}
		return toolChoice{}, badRequest("tool_choice", CodeInvalidValue, `tool_choice %q: want "none", "auto", "required" or {"type": "function", "function": {"name": ...}}`, s)
	}
	var named struct {
		Type     string `json:"type"`
		Function *struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&named); err != nil || named.Type != "function" || named.Function == nil || named.Function.Name == "" {
		return toolChoice{}, badRequest("tool_choice", CodeInvalidValue, `tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}`)
	}
	return toolChoice{mode: "function", name: named.Function.Name}, nil
}

// decodeTools decodes and checks tools: at most maxTools of at most
// maxToolsBytes together, each of type function with a well-formed name
// not used before and parameters that are a JSON object. Errors are 400s
// naming tools[i] and the field.
func decodeTools(raw json.RawMessage) ([]Tool, error) {
	if isNull(raw) {
		return nil, nil
	}
	if len(raw) > maxToolsBytes {
		return nil, badRequest("tools", CodeInvalidValue, "tools are %d bytes of JSON, more than the limit of %d", len(raw), maxToolsBytes)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, badRequest("tools", CodeInvalidValue, "tools must be a list of {\"type\": \"function\", \"function\": {...}}, not %s", jsonKindOf(raw))
	}
	if len(items) > maxTools {
		return nil, badRequest("tools", CodeInvalidValue, "%d tools, more than the limit of %d", len(items), maxTools)
	}
	tools := make([]Tool, len(items))
	seen := map[string]int{}
	for i, it := range items {
		p := fmt.Sprintf("tools[%d]", i)
		dec := json.NewDecoder(bytes.NewReader(it))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&tools[i]); err != nil {
			return nil, badRequest(p, CodeInvalidValue, "%s: %s", p, strings.TrimPrefix(err.Error(), "json: "))
		}
		t := &tools[i]
		switch {
		case t.Type != "function":
			return nil, badRequest(p+".type", CodeInvalidValue, "%s.type %q: only \"function\" tools are supported", p, t.Type)
		case t.Function == nil:
			return nil, badRequest(p+".function", CodeInvalidValue, "%s.function is required", p)
		case !toolName.MatchString(t.Function.Name):
			return nil, badRequest(p+".function.name", CodeInvalidValue,
				"%s.function.name %q: a name is 1 to 64 letters, digits, underscores or dashes", p, t.Function.Name)
		}
		if j, dup := seen[t.Function.Name]; dup {
			return nil, badRequest(p+".function.name", CodeInvalidValue, "%s.function.name %q is also the name of tools[%d]", p, t.Function.Name, j)
		}
		seen[t.Function.Name] = i
		if !isNull(t.Function.Parameters) && bytes.TrimSpace(t.Function.Parameters)[0] != '{' {
			return nil, badRequest(p+".function.parameters", CodeInvalidValue, "%s.function.parameters must be a JSON schema object, not %s", p, jsonKindOf(t.Function.Parameters))
		}
	}
	return tools, nil
}

// noParameters is the schema of a function without parameters: the
// arguments are {}.
const noParameters = `{"type": "object", "properties": {}, "additionalProperties": false}`

// toolSetup decides how req uses tools with template tmpl (nil when the
// model has none). Bad tools, a bad tool_choice, a function name that no
// tool has, required or a named function without tools, tools with a
// template that cannot render them, and parameters schemas that a
// constrained reply cannot follow are 400 *Errors naming the field.
// constrained says whether the request has another output constraint,
// which required and named choices cannot be combined with.
func (f *ToolFields) toolSetup(tmpl *chat.Template, constrained bool) (*toolUse, error) {
	tools, err := decodeTools(f.Tools)
	if err != nil {
		return nil, err
	}
	choice, err := decodeToolChoice(f.ToolChoice)
	if err != nil {
		return nil, err
	}
	parallel := f.ParallelToolCalls == nil || *f.ParallelToolCalls
	if choice.mode == "" {
		choice.mode = "auto"
	}
	if len(tools) == 0 {
		if choice.mode == "required" || choice.mode == "function" {
			return nil, badRequest("tool_choice", CodeInvalidValue, "tool_choice %s needs tools", choiceText(choice))
		}
		return nil, nil
	}
	if choice.mode == "none" {
		return nil, nil
	}
	format := chat.ToolsUnsupported
	name := "none"
	if tmpl != nil {
		format, name = tmpl.ToolFormat(), tmpl.Name()
	}
	if format == chat.ToolsUnsupported {
		return nil, badRequest("tools", CodeUnsupported,
			"the model's chat template (%s) does not support tools; serve it with --chat-template-file of a template that does, or send tool_choice \"none\"", name)
	}
	use := &toolUse{render: f.Tools, format: format, parse: true, parallel: parallel}
	if choice.mode == "auto" {
		return use, nil
	}
	if constrained {
		return nil, badRequest("tool_choice", CodeInvalidValue,
			"tool_choice %s constrains the reply to tool calls; it cannot be combined with response_format, grammar or json_schema", choiceText(choice))
	}
	var gts []chat.GrammarTool
	var rules strings.Builder
	for i, t := range tools {
		if choice.mode == "function" && t.Function.Name != choice.name {
			continue
		}
		schema := []byte(noParameters)
		if !isNull(t.Function.Parameters) {
			schema = t.Function.Parameters
		}
		rule := fmt.Sprintf("tool-args-%d", i)
		src, err := grammar.SchemaRules(schema, rule)
		if err != nil {
			return nil, &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: fmt.Sprintf("tools[%d].function.parameters", i),
				Code: CodeInvalidValue, Err: err,
				Message: fmt.Sprintf("tools[%d].function.parameters: tool_choice %s needs a schema the reply can be constrained to: %v", i, choiceText(choice), err)}
		}
		rules.WriteString(src)
		gts = append(gts, chat.GrammarTool{Name: t.Function.Name, Rule: rule})
	}
	if len(gts) == 0 {
		return nil, badRequest("tool_choice", CodeInvalidValue, "tool_choice names the function %q, which no tool defines", choice.name)
	}
	// A named function is called once, as OpenAI's named choice does.
	calls, err := format.CallGrammar(gts, parallel && choice.mode == "required")
	if err != nil {
		return nil, &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: CodeInternal, Message: err.Error(), Err: err}
	}
	g, err := gbnfGrammar("tool_choice", calls+rules.String()+grammar.JSONRules)
	if err != nil {
		return nil, err
	}
	use.grammar = g
	return use, nil
}

func choiceText(c toolChoice) string {
	if c.mode == "function" {
		return fmt.Sprintf("{\"type\": \"function\", \"function\": {\"name\": %q}}", c.name)
	}
	return fmt.Sprintf("%q", c.mode)
}

// historyCalls converts the tool_calls of message i of a request: each
// of type function (or none), with a function name and arguments that
// are the JSON text of an object. Errors are 400s naming the field.
func historyCalls(i int, raw json.RawMessage) ([]chat.ToolCall, error) {
	if isNull(raw) {
		return nil, nil
	}
	p := fmt.Sprintf("messages[%d].tool_calls", i)
	var in []json.RawMessage
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, badRequest(p, CodeInvalidValue, "%s must be a list of calls, not %s", p, jsonKindOf(raw))
	}
	if len(in) > maxToolCalls {
		return nil, badRequest(p, CodeInvalidValue, "%s: %d calls, more than the limit of %d", p, len(in), maxToolCalls)
	}
	out := make([]chat.ToolCall, len(in))
	for j, it := range in {
		pj := fmt.Sprintf("%s[%d]", p, j)
		var c ToolCall
		dec := json.NewDecoder(bytes.NewReader(it))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, badRequest(pj, CodeInvalidValue, "%s: %s", pj, strings.TrimPrefix(err.Error(), "json: "))
		}
		if c.Type != "" && c.Type != "function" {
			return nil, badRequest(pj+".type", CodeInvalidValue, "%s.type %q: want \"function\"", pj, c.Type)
		}
		if c.Function.Name == "" {
			return nil, badRequest(pj+".function.name", CodeInvalidValue, "%s.function.name is required", pj)
		}
		args := bytes.TrimSpace([]byte(c.Function.Arguments))
		if len(args) == 0 {
			args = []byte("{}")
		}
		var obj map[string]json.RawMessage
		if args[0] != '{' || json.Unmarshal(args, &obj) != nil {
			return nil, badRequest(pj+".function.arguments", CodeInvalidValue, "%s.function.arguments must be the JSON text of an object", pj)
		}
		out[j] = chat.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: args}
	}
	return out, nil
}

// replyCalls reads the tool calls of a reply: the calls (ids made here,
// only the first without parallel) and the content before them, or ok
// false when the reply holds no well-formed call (it is then all
// content). A malformed call after well-formed ones (a reply cut short
// by max_tokens ends in half a call) is dropped, the calls before it
// kept, so that a stream can send each call once it is complete.
func (u *toolUse) replyCalls(text string) (calls []ToolCall, content string, ok bool) {
	parsed, content, err := chat.ParseToolCalls(u.format, text)
	if err != nil && !(errors.Is(err, chat.ErrMalformedToolCall) && len(parsed) > 0) {
		return nil, "", false
	}
	if !u.parallel {
		parsed = parsed[:1]
	}
	calls = make([]ToolCall, len(parsed))
	for i, c := range parsed {
		calls[i] = ToolCall{ID: u.callID(), Type: "function", Function: FunctionCall{Name: c.Name, Arguments: string(c.Arguments)}}
	}
	return calls, content, true
}

// callID returns a new call id: "call_" and 24 random hex digits, or for
// Mistral's format 9 random letters and digits, the only ids its
// templates accept when the call comes back in the history.
func (u *toolUse) callID() string {
	if u.format != chat.ToolsMistral {
		return newID("call_")
	}
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [9]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b[:])
}
