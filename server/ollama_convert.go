package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
)

// OllamaRequest is an ollama generate or chat request converted to model
// inputs, or a load request (an empty prompt or no messages), which
// generates nothing.
type OllamaRequest struct {
	// Gen is the generation; nil for a load request.
	Gen *GenerateRequest
	// Model is the name the answer carries: the request's, or the served
	// model's ollama name when the request named none.
	Model string
}

// ollamaOptions are the "options" of a request as the model takes them.
type ollamaOptions struct {
	opts   model.GenerateOptions
	numCtx int // 0: the slot's whole context
}

// ollamaName is the served model's name as ollama writes names: with a
// tag, ":latest" when the alias has none.
func ollamaName(served string) string {
	if i := strings.LastIndexByte(served, '/'); strings.Contains(served[i+1:], ":") {
		return served
	}
	return served + ":latest"
}

// checkOllamaModel accepts name when it is empty (the served model) or
// names the served model, with or without ":latest" and in any case, as
// ollama compares names; any other is a 404 in ollama's words.
func checkOllamaModel(name string, s *Served) (string, error) {
	if name == "" {
		return ollamaName(s.Name), nil
	}
	if !strings.EqualFold(strings.TrimSuffix(name, ":latest"), strings.TrimSuffix(s.Name, ":latest")) {
		return "", &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "model", Code: CodeModelNotFound,
			Message: fmt.Sprintf("model '%s' not found", name)}
	}
	return name, nil
}

// unsupported is a 400 for a request field this server cannot honour.
func unsupported(param, format string, args ...any) *Error {
	return badRequest(param, CodeUnsupported, format, args...)
}

// isNull reports whether a raw JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// check refuses the fields of OllamaCommonFields that ask for what the
// server does not do, and checks keep_alive (format is checked by
// ollamaConstraint). It returns keep_alive, or -1 when absent.
func (c *OllamaCommonFields) check() (keepAlive time.Duration, err error) {
	if len(c.Images) > 0 {
		return 0, unsupported("images", "images are not supported: the server runs no vision models")
	}
	if t := bytes.TrimSpace(c.Think); !isNull(t) && !bytes.Equal(t, []byte("false")) {
		return 0, unsupported("think", "think %s is not supported: the server has no thinking models", t)
	}
	if c.Truncate != nil && *c.Truncate {
		return 0, unsupported("truncate", "truncate is not supported: a prompt longer than the context is refused, never truncated")
	}
	if c.Shift != nil && *c.Shift {
		return 0, unsupported("shift", "shift is not supported: generation ends with done_reason \"length\" when the context is full")
	}
	if c.Logprobs || c.TopLogprobs != 0 {
		return 0, unsupported("logprobs", "logprobs are not supported on the ollama endpoints yet")
	}
	if c.DebugRenderOnly {
		return 0, unsupported("_debug_render_only", "_debug_render_only is not supported")
	}
	return parseKeepAlive(c.KeepAlive)
}

// parseKeepAlive reads keep_alive as ollama does: a number of seconds or
// a duration string, negative meaning forever (returned as MaxInt64); -1
// when absent.
func parseKeepAlive(raw json.RawMessage) (time.Duration, error) {
	if isNull(raw) {
		return -1, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, badRequest("keep_alive", CodeInvalidValue, "keep_alive: %v", err)
	}
	var d time.Duration
	switch t := v.(type) {
	case float64:
		if t < 0 {
			return math.MaxInt64, nil
		}
		if t*float64(time.Second) >= math.MaxInt64 {
			return math.MaxInt64, nil
		}
		d = time.Duration(t * float64(time.Second))
	case string:
		var err error
		if d, err = time.ParseDuration(t); err != nil {
			return 0, badRequest("keep_alive", CodeInvalidValue, "keep_alive %q: want a duration such as \"5m\" or a number of seconds", t)
		}
		if d < 0 {
			return math.MaxInt64, nil
		}
	default:
		return 0, badRequest("keep_alive", CodeInvalidValue, "keep_alive must be a duration string or a number of seconds, not %s", raw)
	}
	return d, nil
}

// ollamaHarmless are the options that are accepted and ignored: they
// place the model in memory or shape its prompt batches (the server's
// settings, fixed at load) or tune context shifting (which the server
// never does), and never change the text.
var ollamaHarmless = map[string]string{
	"num_keep":   "int",
	"num_batch":  "int",
	"num_gpu":    "int",
	"main_gpu":   "int",
	"num_thread": "int",
	"use_mmap":   "bool",
	// Only used with mirostat, which must be 0.
	"mirostat_tau": "float",
	"mirostat_eta": "float",
}

// OllamaSupportedOptions lists the option names that requests may send,
// honoured or harmless, for error messages and documentation.
const OllamaSupportedOptions = "temperature, top_k, top_p, min_p, typical_p (1 only), repeat_penalty, repeat_last_n, " +
	"presence_penalty, frequency_penalty, seed, num_predict, num_ctx, stop, mirostat (0 only), tfs_z (1 only); " +
	"ignored: num_keep, num_batch, num_gpu, main_gpu, num_thread, use_mmap, mirostat_tau, mirostat_eta"

// parseOllamaOptions converts a request's "options": the sampling options
// go through SamplingParams (the server's defaults, sample.DefaultParams,
// for those absent; seed when the request has none or a negative one),
// num_predict bounds the generated tokens (0, -1 and -2: until the end of
// generation or a full context), num_ctx bounds the request's context
// to at most ctxSize. A value of the wrong type, out of range, or for an
// option the server cannot honour is a 400 *Error naming the option.
func parseOllamaOptions(raw map[string]json.RawMessage, seed uint64, ctxSize int) (*ollamaOptions, error) {
	var f SamplingFields
	out := &ollamaOptions{}
	for key, val := range raw {
		if isNull(val) {
			continue // as ollama does
		}
		param := "options." + key
		var err error
		switch key {
		case "temperature":
			f.Temperature, err = floatOption(param, val)
		case "top_p":
			f.TopP, err = floatOption(param, val)
		case "min_p":
			f.MinP, err = floatOption(param, val)
		case "repeat_penalty":
			f.RepeatPenalty, err = floatOption(param, val)
		case "presence_penalty":
			f.PresencePenalty, err = floatOption(param, val)
		case "frequency_penalty":
			f.FrequencyPenalty, err = floatOption(param, val)
		case "top_k":
			f.TopK, err = intOption(param, val)
		case "repeat_last_n":
			f.RepeatLastN, err = intOption(param, val)
		case "seed":
			var s int64
			if s, err = int64Option(param, val, math.MinInt64, math.MaxInt64); err == nil && s >= 0 {
				f.Seed = &s
			}
		case "stop":
			var stop Stop
			if err = stop.UnmarshalJSON(val); err == nil {
				out.opts.Stop = stop
			} else {
				err = badRequest(param, CodeInvalidValue, "option \"stop\" must be a list of at most %d strings", maxStops)
			}
		case "num_predict":
			var n *int
			if n, err = intOption(param, val); err == nil {
				switch {
				case *n < -2:
					err = badRequest(param, CodeInvalidValue, "option \"num_predict\" must be positive, or -1 (no limit) or -2 (fill the context); got %d", *n)
				case *n > 0:
					out.opts.MaxTokens = *n
				}
			}
		case "num_ctx":
			var n *int
			if n, err = intOption(param, val); err == nil {
				switch {
				case *n < 0:
					err = badRequest(param, CodeInvalidValue, "option \"num_ctx\" must not be negative; got %d", *n)
				case *n > ctxSize:
					err = unsupported(param, "option \"num_ctx\" %d is larger than the server's context of %d positions per slot (serve --ctx-size)", *n, ctxSize)
				default:
					out.numCtx = *n
				}
			}
		case "typical_p", "tfs_z":
			var v *float64
			if v, err = floatOption(param, val); err == nil && *v != 1 {
				err = unsupported(param, "option %q is not supported: only 1 (off) is accepted; got %v", key, *v)
			}
		case "mirostat":
			var v *int
			if v, err = intOption(param, val); err == nil && *v != 0 {
				err = unsupported(param, "option \"mirostat\" is not supported: only 0 (off) is accepted; got %d", *v)
			}
		default:
			kind, ok := ollamaHarmless[key]
			if !ok {
				return nil, unsupported(param, "option %q is not supported; the options are %s", key, OllamaSupportedOptions)
			}
			switch kind {
			case "int":
				_, err = intOption(param, val)
			case "float":
				_, err = floatOption(param, val)
			case "bool":
				var b bool
				if json.Unmarshal(val, &b) != nil {
					err = badRequest(param, CodeInvalidValue, "option %q must be a boolean, not %s", key, val)
				}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	p, err := SamplingParams(&f, seed)
	if err != nil {
		return nil, err
	}
	out.opts.Sampling = p
	return out, nil
}

// floatOption decodes a number.
func floatOption(param string, raw json.RawMessage) (*float64, error) {
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, badRequest(param, CodeInvalidValue, "option %q must be a number, not %s", strings.TrimPrefix(param, "options."), raw)
	}
	return &v, nil
}

// intOption decodes an integer of at most 32 bits.
func intOption(param string, raw json.RawMessage) (*int, error) {
	v, err := int64Option(param, raw, math.MinInt32, math.MaxInt32)
	if err != nil {
		return nil, err
	}
	n := int(v)
	return &n, nil
}

// int64Option decodes an integer in [lo, hi]; a number with a fraction
// is refused (ollama would truncate it), one written with an exponent or
// ".0" is accepted when whole.
func int64Option(param string, raw json.RawMessage, lo, hi int64) (int64, error) {
	name := strings.TrimPrefix(param, "options.")
	var num json.Number // which would take a quoted number too
	if err := json.Unmarshal(raw, &num); err != nil || bytes.HasPrefix(bytes.TrimSpace(raw), []byte(`"`)) {
		return 0, badRequest(param, CodeInvalidValue, "option %q must be an integer, not %s", name, raw)
	}
	if i, err := strconv.ParseInt(num.String(), 10, 64); err == nil && i >= lo && i <= hi {
		return i, nil
	}
	fv, err := num.Float64()
	if err != nil || fv != math.Trunc(fv) || fv < float64(lo) || fv >= float64(hi)+1 {
		return 0, badRequest(param, CodeInvalidValue, "option %q must be an integer in [%d, %d], not %s", name, lo, hi, raw)
	}
	return int64(fv), nil
}

// withNumCtx bounds the generation of a prompt of n tokens to num_ctx:
// a prompt that does not fit is a 400 (ollama would truncate it).
func (o *ollamaOptions) withNumCtx(n int, promptParam string) error {
	if o.numCtx == 0 {
		return nil
	}
	room := o.numCtx - n
	if room <= 0 {
		return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: promptParam, Code: CodeContextLengthExceeded,
			Message: fmt.Sprintf("the prompt has %d tokens, which leaves no room in num_ctx %d; the server does not truncate prompts", n, o.numCtx)}
	}
	if o.opts.MaxTokens <= 0 || o.opts.MaxTokens > room {
		o.opts.MaxTokens = room
	}
	return nil
}

// errUnload refuses a request to unload the model (ollama's "stop").
func errUnload() *Error {
	return unsupported("keep_alive", "the model cannot be unloaded: the server keeps its one model loaded while it runs")
}

// stream reports a request's stream field: true when absent.
func stream(s *bool) bool { return s == nil || *s }

// FromOllamaGenerate converts a /api/generate request. Without raw the
// prompt (with system as a system message before it) goes through the
// model's chat template, as /v1/chat/completions renders one user
// message; with raw it is tokenized as /v1/completions does. context's
// ids come first (then without another BOS). An empty prompt is a load
// request. format "json" constrains the output to a JSON object, a
// format that is a JSON schema to values the schema accepts (see
// ollamaConstraint). Fields the server cannot honour (suffix, template,
// images, ...), a format it cannot apply and bad options are 400 *Errors,
// an unknown model 404; a template that refuses the prompt fails as
// FromChatRequest does.
func FromOllamaGenerate(ctx context.Context, req *OllamaGenerateRequest, s *Served, seed uint64) (*OllamaRequest, error) {
	name, err := checkOllamaModel(req.Model, s)
	if err != nil {
		return nil, err
	}
	keepAlive, err := req.check()
	if err != nil {
		return nil, err
	}
	switch {
	case req.Suffix != "":
		return nil, unsupported("suffix", "suffix (fill in the middle) is not supported")
	case req.Template != "":
		return nil, unsupported("template", "template overrides are not supported: the model's own chat template is used; raw: true sends the prompt as it is")
	case req.Raw && (req.System != "" || len(req.Context) > 0):
		return nil, badRequest("raw", CodeInvalidValue, "raw mode does not support template, system, or context")
	}
	o, err := parseOllamaOptions(req.Options, seed, s.Model.CtxSize())
	if err != nil {
		return nil, err
	}
	if o.opts.Grammar, err = ollamaConstraint(req.Format); err != nil {
		return nil, err
	}
	out := &OllamaRequest{Model: name}
	if req.Prompt == "" {
		if keepAlive == 0 {
			return nil, errUnload()
		}
		return out, nil
	}
	tok := s.Model.Tokenizer
	ids := make([]int32, 0, len(req.Context))
	for i, id := range req.Context {
		if id < 0 || id >= int64(tok.VocabSize()) {
			return nil, badRequest(fmt.Sprintf("context[%d]", i), CodeInvalidValue, "token id %d is outside the vocabulary (%d tokens)", id, tok.VocabSize())
		}
		ids = append(ids, int32(id))
	}
	var more []int32
	if req.Raw {
		more = tok.Encode(req.Prompt, len(ids) == 0, true)
	} else {
		var msgs []chat.Message
		if req.System != "" {
			msgs = append(msgs, chat.Message{Role: "system", Content: req.System})
		}
		msgs = append(msgs, chat.Message{Role: "user", Content: req.Prompt})
		if more, err = chatTokens(ctx, s, msgs, "prompt"); err != nil {
			return nil, err
		}
		if len(ids) > 0 && len(more) > 0 && more[0] == tok.BOS() {
			more = more[1:]
		}
	}
	ids = append(ids, more...)
	if len(ids) == 0 {
		return nil, badRequest("prompt", CodeInvalidValue, "the prompt is empty after tokenization")
	}
	if err := o.withNumCtx(len(ids), "prompt"); err != nil {
		return nil, err
	}
	out.Gen = &GenerateRequest{Prompt: ids, Options: o.opts, Stream: stream(req.Stream), PromptParam: "prompt"}
	return out, nil
}

// FromOllamaChat converts a /api/chat request: the messages go through
// the model's chat template with the assistant header added, as
// FromChatRequest renders them. No messages is a load request. It fails
// as FromOllamaGenerate does; tools, images, tool calls and thinking in
// messages are 400 *Errors.
func FromOllamaChat(ctx context.Context, req *OllamaChatRequest, s *Served, seed uint64) (*OllamaRequest, error) {
	name, err := checkOllamaModel(req.Model, s)
	if err != nil {
		return nil, err
	}
	keepAlive, err := req.check()
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(req.Tools); !isNull(t) && !bytes.Equal(t, []byte("[]")) {
		return nil, unsupported("tools", "tools are not supported yet")
	}
	o, err := parseOllamaOptions(req.Options, seed, s.Model.CtxSize())
	if err != nil {
		return nil, err
	}
	if o.opts.Grammar, err = ollamaConstraint(req.Format); err != nil {
		return nil, err
	}
	out := &OllamaRequest{Model: name}
	if len(req.Messages) == 0 {
		if keepAlive == 0 {
			return nil, errUnload()
		}
		return out, nil
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i, msg := range req.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		role := strings.ToLower(msg.Role)
		switch {
		case role != "system" && role != "user" && role != "assistant" && role != "tool":
			return nil, badRequest(param+".role", CodeInvalidValue, "role %q: want system, user, assistant or tool", msg.Role)
		case len(msg.Images) > 0:
			return nil, unsupported(param+".images", "images are not supported: the server runs no vision models")
		case !isNull(msg.ToolCalls) && !bytes.Equal(bytes.TrimSpace(msg.ToolCalls), []byte("[]")):
			return nil, unsupported(param+".tool_calls", "tool calls are not supported yet")
		case msg.Thinking != "":
			return nil, unsupported(param+".thinking", "thinking is not supported: the server has no thinking models")
		}
		msgs[i] = chat.Message{Role: role, Content: msg.Content}
	}
	ids, err := chatTokens(ctx, s, msgs, "messages")
	if err != nil {
		return nil, err
	}
	if err := o.withNumCtx(len(ids), "messages"); err != nil {
		return nil, err
	}
	out.Gen = &GenerateRequest{Prompt: ids, Options: o.opts, Stream: stream(req.Stream), PromptParam: "messages"}
	return out, nil
}

// chatTokens renders msgs with the served model's template, as
// FromChatRequest does.
func chatTokens(ctx context.Context, s *Served, msgs []chat.Message, param string) ([]int32, error) {
	if s.Template == nil {
		return nil, &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: CodeInternal, Param: param,
			Message: fmt.Sprintf("the model has no usable chat template: %v", s.TemplateErr), Err: s.TemplateErr}
	}
	ids, _, err := s.Model.ChatTokens(ctx, s.Template, msgs,
		model.ChatOptions{AddGenerationPrompt: true, AllowSpecialInContent: s.AllowSpecialInContent})
	if err != nil {
		return nil, apiError(err)
	}
	return ids, nil
}

// ollamaMetrics builds the metrics of a finished generation that started
// at start.
func ollamaMetrics(res *model.Result, start time.Time) OllamaMetrics {
	return OllamaMetrics{
		TotalDuration:      time.Since(start),
		LoadDuration:       res.QueueTime,
		PromptEvalCount:    res.PromptTokens,
		PromptEvalDuration: res.PromptTime,
		EvalCount:          len(res.Tokens),
		EvalDuration:       res.GenTime,
	}
}
