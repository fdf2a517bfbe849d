package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"github.com/m40llm/m40llm/model/grammar"
)

// ToolFormat is the syntax in which a model writes tool calls, as its
// chat template shows it (the template renders earlier calls that way).
type ToolFormat int

// The tool-call formats ParseToolCalls reads.
const (
	// ToolsUnsupported: the template renders no tools.
	ToolsUnsupported ToolFormat = iota
	// ToolsHermes is Hermes' and Qwen 2.5/3's: each call is
	// <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, after
	// optional text.
	ToolsHermes
	// ToolsMistral is Mistral's: [TOOL_CALLS] then a JSON list of
	// {"name": ..., "arguments": {...}}, after optional text; as the
	// marker is a control token, which decodes to no text, a reply that
	// is such a list is read as calls too.
	ToolsMistral
	// ToolsLlama3 is Llama 3.1/3.2/3.3's JSON tool calling: the whole
	// reply is {"name": ..., "parameters": {...}} (optionally after
	// <|python_tag|>; "arguments" is accepted for "parameters"), several
	// separated by ";".
	ToolsLlama3
)

var toolFormatNames = [...]string{"unsupported", "hermes", "mistral", "llama3-json"}

func (f ToolFormat) String() string {
	if f < 0 || int(f) >= len(toolFormatNames) {
		return fmt.Sprintf("ToolFormat(%d)", int(f))
	}
	return toolFormatNames[f]
}

var usesTools = regexp.MustCompile(`\btools\b`)

// ToolFormat returns the tool-call format of the template, found from its
// source: a template that never reads the tools variable supports none;
// one that writes <tool_call> is Hermes-style, [TOOL_CALLS] Mistral, and a
// Llama 3 header template with "parameters" Llama 3's JSON. Any other is
// ToolsUnsupported, as the built-in templates are.
func (t *Template) ToolFormat() ToolFormat {
	src := t.src
	switch {
	case !usesTools.MatchString(src):
		return ToolsUnsupported
	case strings.Contains(src, "<tool_call>"):
		return ToolsHermes
	case strings.Contains(src, "[TOOL_CALLS]"):
		return ToolsMistral
	case strings.Contains(src, "<|start_header_id|>") && strings.Contains(src, `"parameters"`):
		return ToolsLlama3
	}
	return ToolsUnsupported
}

// ErrNoToolCall is the error of ParseToolCalls for a text that holds no
// tool call.
var ErrNoToolCall = errors.New("no tool call in the text")

// ErrMalformedToolCall is matched by the *ToolCallError of a call that
// starts but cannot be read.
var ErrMalformedToolCall = errors.New("malformed tool call")

// ToolCallError reports a tool call that starts at Offset of the text but
// is not well formed (the JSON does not parse, the name or the arguments
// are missing or of the wrong type).
type ToolCallError struct {
	Format ToolFormat
	Offset int // byte offset of the call's start in the text
	Msg    string
}

func (e *ToolCallError) Error() string {
	return fmt.Sprintf("%s tool call at byte %d: %s", e.Format, e.Offset, e.Msg)
}

// Is makes errors.Is(err, ErrMalformedToolCall) hold.
func (e *ToolCallError) Is(target error) bool { return target == ErrMalformedToolCall }

// Markers of the formats.
const (
	hermesOpen  = "<tool_call>"
	hermesClose = "</tool_call>"
	mistralTag  = "[TOOL_CALLS]"
	pythonTag   = "<|python_tag|>"
)

// ParseToolCalls reads the tool calls of a model's reply text written in
// format f. It returns the calls (their Arguments compact JSON objects,
// IDs empty but Mistral's) and the content: the text before the first
// call without the white space at its end ("" for Llama 3); text after
// the calls is dropped. A text without calls yields ErrNoToolCall; a call
// that starts but cannot be read yields a *ToolCallError
// (ErrMalformedToolCall), returned with the calls read before it (a reply
// cut short may end in half a call); an unsupported format yields
// ErrNoToolCall.
func ParseToolCalls(f ToolFormat, text string) ([]ToolCall, string, error) {
	switch f {
	case ToolsHermes:
		return parseHermes(text)
	case ToolsMistral:
		return parseMistral(text)
	case ToolsLlama3:
		return parseLlama3(text)
	}
	return nil, "", ErrNoToolCall
}

func parseHermes(text string) ([]ToolCall, string, error) {
	first := strings.Index(text, hermesOpen)
	if first < 0 {
		return nil, "", ErrNoToolCall
	}
	var calls []ToolCall
	pos := first
	for {
		i := strings.Index(text[pos:], hermesOpen)
		if i < 0 {
			break // text after the calls is not content
		}
		start := pos + i
		body := text[start+len(hermesOpen):]
		end := strings.Index(body, hermesClose)
		next := len(text)
		if end >= 0 {
			next = start + len(hermesOpen) + end + len(hermesClose)
			body = body[:end]
		}
		call, err := callObject(ToolsHermes, start, []byte(body), "arguments")
		if err != nil {
			return calls, contentBefore(text[:first]), err
		}
		calls = append(calls, call)
		pos = next
	}
	return calls, contentBefore(text[:first]), nil
}

// contentBefore is the content of a reply whose calls start after text:
// text without the white space at its end.
func contentBefore(text string) string { return strings.TrimRightFunc(text, unicode.IsSpace) }

func parseMistral(text string) ([]ToolCall, string, error) {
	i := strings.Index(text, mistralTag)
	var body []byte
	switch {
	case i >= 0:
		body = bytes.TrimSpace([]byte(text[i+len(mistralTag):]))
	case mistralUntagged(text):
		// [TOOL_CALLS] is a control token, which decodes to no text.
		i = 0
		body = bytes.TrimSpace([]byte(text))
	default:
		return nil, "", ErrNoToolCall
	}
	var items []json.RawMessage
	switch {
	case len(body) > 0 && body[0] == '[':
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&items); err != nil {
			return nil, "", &ToolCallError{Format: ToolsMistral, Offset: i, Msg: "the call list is not valid JSON: " + err.Error()}
		}
		if len(items) == 0 {
			return nil, "", &ToolCallError{Format: ToolsMistral, Offset: i, Msg: "an empty call list"}
		}
	case len(body) > 0 && body[0] == '{':
		items = []json.RawMessage{body}
	default:
		return nil, "", &ToolCallError{Format: ToolsMistral, Offset: i, Msg: "want a JSON list of calls after " + mistralTag}
	}
	calls := make([]ToolCall, 0, len(items))
	for _, it := range items {
		call, err := callObject(ToolsMistral, i, it, "arguments")
		if err != nil {
			return nil, "", err
		}
		calls = append(calls, call)
	}
	return calls, contentBefore(text[:i]), nil
}

// mistralUntagged reports whether text, without the [TOOL_CALLS] marker,
// is a JSON list whose first item is a call.
func mistralUntagged(text string) bool {
	var items []json.RawMessage
	return json.Unmarshal([]byte(text), &items) == nil && len(items) > 0 && looksLikeCall(items[0])
}

func parseLlama3(text string) ([]ToolCall, string, error) {
	rest := strings.TrimLeftFunc(text, unicode.IsSpace)
	off := len(text) - len(rest)
	tagged := strings.HasPrefix(rest, pythonTag)
	if tagged {
		rest = rest[len(pythonTag):]
		off += len(pythonTag)
	}
	if !strings.HasPrefix(strings.TrimLeftFunc(rest, unicode.IsSpace), "{") {
		if tagged {
			return nil, "", &ToolCallError{Format: ToolsLlama3, Offset: off, Msg: "want a JSON object after " + pythonTag}
		}
		return nil, "", ErrNoToolCall
	}
	dec := json.NewDecoder(strings.NewReader(rest))
	var calls []ToolCall
	for {
		var raw json.RawMessage
		at := off + int(dec.InputOffset())
		if err := dec.Decode(&raw); err != nil {
			return calls, "", &ToolCallError{Format: ToolsLlama3, Offset: at, Msg: "not valid JSON: " + err.Error()}
		}
		if len(calls) == 0 && !tagged && !looksLikeCall(raw) {
			return nil, "", ErrNoToolCall // a JSON reply, not a call
		}
		call, err := callObject(ToolsLlama3, at, raw, "parameters", "arguments")
		if err != nil {
			return calls, "", err
		}
		calls = append(calls, call)
		tail := strings.TrimLeftFunc(rest[dec.InputOffset():], unicode.IsSpace)
		if tail == "" {
			return calls, "", nil
		}
		if !strings.HasPrefix(tail, ";") {
			return calls, "", &ToolCallError{Format: ToolsLlama3, Offset: len(text) - len(tail), Msg: "text after a call; calls are separated by ;"}
		}
		tail = strings.TrimLeftFunc(tail[1:], unicode.IsSpace)
		if tail == "" {
			return calls, "", nil
		}
		off = len(text) - len(tail)
		rest = tail
		dec = json.NewDecoder(strings.NewReader(rest))
	}
}

// looksLikeCall reports whether raw is an object with a "name" key and a
// "parameters" or "arguments" key.
func looksLikeCall(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, name := m["name"]
	_, p := m["parameters"]
	_, a := m["arguments"]
	return name && (p || a)
}

// callObject reads one call {"name": ..., argsKey: {...}} from raw; the
// first of argsKeys present holds the arguments (an object, or a string
// holding one's JSON); none present means no arguments ({}).
func callObject(f ToolFormat, off int, raw []byte, argsKeys ...string) (ToolCall, error) {
	fail := func(format string, args ...any) (ToolCall, error) {
		return ToolCall{}, &ToolCallError{Format: f, Offset: off, Msg: fmt.Sprintf(format, args...)}
	}
	raw = bytes.TrimSpace(raw)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return fail("not a JSON object: %v", err)
	}
	var call ToolCall
	if err := json.Unmarshal(m["name"], &call.Name); err != nil || call.Name == "" {
		return fail("the call has no function name")
	}
	if id, ok := m["id"]; ok {
		_ = json.Unmarshal(id, &call.ID) // Mistral's id, when a string
	}
	args := json.RawMessage(`{}`)
	for _, k := range argsKeys {
		if a, ok := m[k]; ok {
			args = a
			break
		}
	}
	args = bytes.TrimSpace(args)
	if len(args) > 0 && args[0] == '"' {
		var s string
		if err := json.Unmarshal(args, &s); err != nil {
			return fail("arguments: %v", err)
		}
		args = bytes.TrimSpace([]byte(s))
	}
	if len(args) == 0 || args[0] != '{' {
		return fail("the arguments of %q are not a JSON object", call.Name)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, args); err != nil {
		return fail("the arguments of %q are not valid JSON: %v", call.Name, err)
	}
	call.Arguments = buf.Bytes()
	return call, nil
}

// Undecided returns the length of the longest prefix of text, a reply
// being generated, that is not part of a tool call in format f, whatever
// text follows: a streamed reply can send that much as content and must
// hold the rest back until the reply ends or grows. For Hermes and
// Mistral that is the text before the call marker without the white space
// at its end (which the content of a reply with calls drops), less a tail
// that could start the marker (for Mistral nothing of a reply that starts
// with "[" either); for Llama 3 a reply that starts (after white space)
// with "{" or <|python_tag|> may be a call, so nothing of it is sent, and
// one that starts otherwise is all content.
func (f ToolFormat) Undecided(text string) int {
	var marker string
	switch f {
	case ToolsHermes:
		marker = hermesOpen
	case ToolsMistral:
		marker = mistralTag
		if rest := strings.TrimLeftFunc(text, unicode.IsSpace); rest == "" || rest[0] == '[' {
			return 0 // may be a list of calls without the marker
		}
	case ToolsLlama3:
		rest := strings.TrimLeftFunc(text, unicode.IsSpace)
		if rest == "" || rest[0] == '{' || strings.HasPrefix(rest, pythonTag) || strings.HasPrefix(pythonTag, rest) {
			return 0
		}
		return len(text)
	default:
		return len(text)
	}
	n := len(text)
	if i := strings.Index(text, marker); i >= 0 {
		n = i
	} else {
		for k := min(len(marker)-1, len(text)); k > 0; k-- {
			if strings.HasSuffix(text, marker[:k]) {
				n = len(text) - k
				break
			}
		}
	}
	return len(contentBefore(text[:n]))
}

// Complete returns the length of the prefix of text, a reply being
// generated, whose calls are complete whatever text follows:
// ParseToolCalls reads the same first calls from text[:n] as from the
// whole reply, so a stream can send them. For Hermes that is the text up
// to the last </tool_call>; 0 when no call has closed, and always 0 for
// Mistral and Llama 3, whose calls are complete only with the reply.
func (f ToolFormat) Complete(text string) int {
	if f != ToolsHermes || !strings.Contains(text, hermesOpen) {
		return 0
	}
	i := strings.LastIndex(text, hermesClose)
	if i < strings.Index(text, hermesOpen) {
		return 0
	}
	return i + len(hermesClose)
}

// GrammarTool is one function a constrained reply may call: its name and
// the GBNF rule whose sentences are its arguments (a JSON object).
type GrammarTool struct {
	Name string
	Rule string
}

// CallGrammar returns GBNF rules, a root rule among them, whose sentences
// are replies in format f made of calls of tools (any of them): one call,
// or with parallel one or more (Llama 3's templates render one call per
// message, so its replies hold one). The caller adds the rules that
// tools' Rules name. It fails for ToolsUnsupported and an empty tools.
func (f ToolFormat) CallGrammar(tools []GrammarTool, parallel bool) (string, error) {
	if len(tools) == 0 {
		return "", errors.New("chat: no tools for a call grammar")
	}
	var open, argsKey, close, sep string
	switch f {
	case ToolsHermes:
		open, argsKey, close, sep = hermesOpen+"\n", "arguments", "\n"+hermesClose, "\n"
	case ToolsMistral:
		open, argsKey, close, sep = "", "arguments", "", ", "
	case ToolsLlama3:
		open, argsKey, close, sep = "", "parameters", "", ""
		parallel = false
	default:
		return "", fmt.Errorf("chat: tool format %v has no call syntax", f)
	}
	var b strings.Builder
	alts := make([]string, len(tools))
	for i, t := range tools {
		name, _ := json.Marshal(t.Name)
		alts[i] = fmt.Sprintf("tool-call-%d", i)
		fmt.Fprintf(&b, "%s ::= %s %s %s\n", alts[i],
			grammar.Quote(open+`{"name": `+string(name)+`, "`+argsKey+`": `), t.Rule, grammar.Quote("}"+close))
	}
	fmt.Fprintf(&b, "tool-call ::= %s\n", strings.Join(alts, " | "))
	calls := "tool-call"
	if parallel {
		calls = "tool-call (" + grammar.Quote(sep) + " tool-call)*"
	}
	if f == ToolsMistral {
		calls = grammar.Quote(mistralTag+" [") + " " + calls + " " + grammar.Quote("]")
	}
	fmt.Fprintf(&b, "root ::= %s\n", calls)
	return b.String(), nil
}
