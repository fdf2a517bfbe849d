package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/m40llm/m40llm/model/tokenizer"
)

// Served is what the conversion functions need to know about the model a
// server serves.
type Served struct {
	// Model is the loaded model (its tokenizer, context size and
	// vocabulary are used).
	Model *model.Model
	// Name is the model id clients name in requests and see in responses.
	Name string
	// Template renders chat requests; nil when the model has none, and
	// then TemplateErr says why.
	Template    *chat.Template
	TemplateErr error
	// AllowSpecialInContent parses control-token text in chat messages
	// as control tokens (model.ChatOptions.AllowSpecialInContent); off,
	// a client cannot write "<|im_end|>" to end its turn.
	AllowSpecialInContent bool
	// Embeddings is set when the model serves /v1/embeddings, /api/embed
	// and /api/embeddings (Options.Embeddings, or a model whose file
	// declares mean, cls or last pooling), with Pooling.
	Embeddings bool
	Pooling    model.Pooling
}

// GenerateRequest is a request converted to model inputs: the prompt's
// token ids and the generation options, plus how to answer.
type GenerateRequest struct {
	Prompt  []int32
	Options model.GenerateOptions
	// N is the number of choices (1..MaxChoices): N requests of the same
	// prompt, each sampled on its own (see Requests).
	N            int
	Stream       bool
	IncludeUsage bool
	// tools is how a chat request uses tools; nil without.
	tools *toolUse
	// PromptParam names the request field the prompt came from
	// ("prompt", "messages"), for errors about it.
	PromptParam string
	// GrammarParam names the field that set Options.Grammar
	// ("response_format", "grammar", "json_schema", "tool_choice"), for
	// errors about it.
	GrammarParam string
}

// MaxChoices bounds the n of a request: the choices it asks for, each a
// sequence of its own in a KV-cache slot.
const MaxChoices = 8

// Requests returns the model requests of gr's choices, in choice order:
// the same prompt and options, except that choice i samples from the seed
// sample.ChoiceSeed(seed, i), so that the choices are independent and
// each is the one a request for that seed alone would get. A grammar is
// shared (each request follows it with a matcher of its own).
func (gr *GenerateRequest) Requests() []*model.Request {
	n := max(gr.N, 1)
	reqs := make([]*model.Request, n)
	for i := range n {
		opts := gr.Options
		opts.Sampling.Seed = sample.ChoiceSeed(gr.Options.Sampling.Seed, i)
		reqs[i] = &model.Request{Prompt: gr.Prompt, Options: opts}
	}
	return reqs
}

// requestError is apiError with the errors about the prompt (too long for
// the context, a token outside the vocabulary) pinned on its field, and a
// grammar that the vocabulary cannot follow (model.ErrGrammarDeadEnd, a
// 400) on the field that set it.
func (gr *GenerateRequest) requestError(err error) *Error {
	ae := apiError(err)
	switch {
	case errors.Is(err, model.ErrContextFull) || errors.Is(err, model.ErrInvalidToken):
		ae.Param = gr.PromptParam
	case errors.Is(err, model.ErrGrammarDeadEnd) && ae.Status == http.StatusBadRequest:
		ae.Param = gr.GrammarParam
		ae.Message = "the output cannot follow the constraint: " + ae.Message
	}
	return ae
}

// decodeJSON decodes one JSON value from r into v and rejects trailing
// data. Syntax errors and wrong field types become 400 *Errors naming the
// field, and so does a field v does not declare, at any depth (as OpenAI:
// "Unrecognized request argument supplied", code unknown_parameter; param
// is the field's name without its path); a body over the
// http.MaxBytesReader limit becomes 413, and one that does not arrive
// within Options.BodyTimeout 408.
func decodeJSON(r io.Reader, v any) error { return decodeBody(r, v, false) }

// decodeLenient is decodeJSON that ignores fields v does not declare, as
// ollama's API does (its clients send fields of newer versions).
func decodeLenient(r io.Reader, v any) error { return decodeBody(r, v, true) }

func decodeBody(r io.Reader, v any, lenient bool) error {
	dec := json.NewDecoder(r)
	if !lenient {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	if err == nil {
		_, err = dec.Token()
		if err == io.EOF {
			return nil
		}
		if err == nil {
			err = errors.New("trailing data after the JSON value")
		}
	}
	var (
		ae  *Error
		mbe *http.MaxBytesError
		bte *bodyTimeoutError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.As(err, &bte):
		return bodyTimeout(bte.timeout)
	case errors.As(err, &te):
		field := te.Field
		for _, embedded := range []string{"SamplingFields.", "ConstraintFields.", "ToolFields."} {
			field = strings.TrimPrefix(field, embedded) // an embedded struct, not a JSON name
		}
		if field == "" {
			return badRequest("", CodeInvalidJSON, "the body must be a JSON object, not %s", jsonKind(te.Value))
		}
		return badRequest(field, CodeInvalidValue, "%s must be %s, not %s", field, goKind(te), jsonKind(te.Value))
	case errors.As(err, &se):
		return badRequest("", CodeInvalidJSON, "malformed JSON body at byte %d: %v", se.Offset, err)
	case errors.Is(err, io.EOF):
		return badRequest("", CodeInvalidJSON, "the request body is empty; want a JSON object")
	}
	// encoding/json reports an undeclared field only by this message.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, uerr := strconv.Unquote(name); uerr == nil {
			name = n
		}
		return badRequest(name, CodeUnknownParameter, "Unrecognized request argument supplied: %s", name)
	}
	return badRequest("", CodeInvalidJSON, "malformed JSON body: %v", err)
}

// jsonKind names the JSON value kind of an UnmarshalTypeError's Value.
func jsonKind(v string) string {
	switch {
	case v == "string":
		return "a string"
	case strings.HasPrefix(v, "number"):
		return "a number"
	case v == "bool":
		return "a boolean"
	case v == "array":
		return "a list"
	case v == "object":
		return "an object"
	}
	return v
}

func goKind(te *json.UnmarshalTypeError) string {
	if te.Type == nil {
		return "another type"
	}
	switch te.Type.Kind().String() {
	case "int", "int32", "int64", "uint64":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice":
		return "a list"
	case "struct", "map":
		return "an object"
	}
	return te.Type.String()
}

// FromCompletionRequest converts a /v1/completions request. The prompt is
// tokenized as `m40llm generate` does (BOS added when the model asks for
// it, control-token text parsed); seed is used when the request has none.
// response_format, grammar or json_schema (at most one) set
// GenerateOptions.Grammar; their errors are 400 *Errors naming the field
// (see ConstraintFields).
func FromCompletionRequest(req *CompletionRequest, s *Served, seed uint64) (*GenerateRequest, error) {
	if err := checkModel(req.Model, s); err != nil {
		return nil, err
	}
	if !req.Prompt.Set {
		return nil, badRequest("prompt", CodeInvalidValue, "prompt is required")
	}
	ids := req.Prompt.Tokens
	if !req.Prompt.IsIDs {
		ids = s.Model.Tokenizer.Encode(req.Prompt.Text, true, true)
	}
	if len(ids) == 0 {
		return nil, badRequest("prompt", CodeInvalidValue, "the prompt is empty after tokenization")
	}
	if err := checkFields(req.completionExtras.rules()); err != nil {
		return nil, err
	}
	g, gparam, err := req.constraint()
	if err != nil {
		return nil, err
	}
	gr, err := finishRequest(ids, "prompt", &req.SamplingFields, req.MaxTokens, "max_tokens", seed)
	if err != nil {
		return nil, err
	}
	if err := checkBestOf(req.BestOf, gr.N); err != nil {
		return nil, err
	}
	gr.Options.Grammar, gr.GrammarParam = g, gparam
	if n := req.Logprobs; n != nil {
		if *n < 0 || *n > maxCompletionLogprobs {
			return nil, badRequest("logprobs", CodeInvalidValue, "logprobs must be in [0, %d], got %d", maxCompletionLogprobs, *n)
		}
		gr.Options.LogProbs, gr.Options.TopLogProbs = true, *n
	}
	return gr, nil
}

// checkBestOf accepts best_of absent, null or equal to n (best_of
// greater than n would generate best_of sequences and return the n most
// likely, which this server does not do); otherwise it is a 400 naming
// best_of.
func checkBestOf(raw json.RawMessage, n int) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var b int
	if err := json.Unmarshal(raw, &b); err != nil {
		return badRequest("best_of", CodeInvalidValue, "best_of must be an integer")
	}
	if b != n {
		return badRequest("best_of", CodeUnsupported,
			"best_of = %d with n = %d: best_of must equal n; choosing the best of more sequences than returned is not supported", b, n)
	}
	return nil
}

// maxCompletionLogprobs bounds the logprobs of /v1/completions (OpenAI's
// limit; chat allows sample.MaxTopLogProbs).
const maxCompletionLogprobs = 5

// FromChatRequest converts a /v1/chat/completions request: the messages
// go through the model's chat template with the assistant header added,
// rendered until ctx (the request's) is done, their contents tokenized
// as plain text unless s.AllowSpecialInContent. A template that refuses
// the messages or breaks a render limit is a 400 *Error naming
// "messages"; a ctx done first gives an error matching ctx.Err(). The
// constraint fields are taken as FromCompletionRequest takes them. Tools
// go to the template (see ToolFields and toolSetup for tool_choice and
// its errors); assistant tool_calls in the history must have a function
// name and arguments that are a JSON object's text (400 naming the
// field otherwise).
func FromChatRequest(ctx context.Context, req *ChatCompletionRequest, s *Served, seed uint64) (*GenerateRequest, error) {
	if err := checkModel(req.Model, s); err != nil {
		return nil, err
	}
	if len(req.Messages) == 0 {
		return nil, badRequest("messages", CodeInvalidValue, "messages must hold at least one message")
	}
	if err := checkFields(req.chatExtras.rules()); err != nil {
		return nil, err
	}
	g, gparam, err := req.constraint()
	if err != nil {
		return nil, err
	}
	var logprobs bool
	if req.Logprobs != nil {
		logprobs = *req.Logprobs
	}
	if n := req.TopLogprobs; n != nil {
		switch {
		case *n < 0 || *n > sample.MaxTopLogProbs:
			return nil, badRequest("top_logprobs", CodeInvalidValue, "top_logprobs must be in [0, %d], got %d", sample.MaxTopLogProbs, *n)
		case !logprobs:
			return nil, badRequest("top_logprobs", CodeInvalidValue, "top_logprobs needs logprobs: true")
		}
	}
	tools, err := req.toolSetup(s.Template, g != nil)
	if err != nil {
		return nil, err
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i, msg := range req.Messages {
		if err := checkMessage(i, &req.Messages[i]); err != nil {
			return nil, err
		}
		role := msg.Role
		switch role {
		case "system", "user", "assistant", "tool":
		case "developer":
			role = "system"
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), CodeInvalidValue,
				"role %q: want system, developer, user, assistant or tool", msg.Role)
		}
		calls, err := historyCalls(i, msg.ToolCalls)
		if err != nil {
			return nil, err
		}
		if len(calls) > 0 && role != "assistant" {
			return nil, badRequest(fmt.Sprintf("messages[%d].tool_calls", i), CodeInvalidValue, "only assistant messages have tool_calls")
		}
		if len(calls) > 0 && (s.Template == nil || s.Template.ToolFormat() == chat.ToolsUnsupported) {
			name := "none"
			if s.Template != nil {
				name = s.Template.Name()
			}
			return nil, badRequest(fmt.Sprintf("messages[%d].tool_calls", i), CodeUnsupported,
				"the model's chat template (%s) does not render tool calls; serve it with --chat-template-file of a template that does", name)
		}
		msgs[i] = chat.Message{Role: role, Content: string(msg.Content), Name: msg.Name, ToolCallID: msg.ToolCallID, ToolCalls: calls}
	}
	if s.Template == nil {
		return nil, &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: CodeInternal,
			Message: fmt.Sprintf("the model has no usable chat template: %v", s.TemplateErr), Err: s.TemplateErr}
	}
	copts := model.ChatOptions{AddGenerationPrompt: true, AllowSpecialInContent: s.AllowSpecialInContent}
	if tools != nil {
		copts.Tools = tools.render
	}
	ids, _, err := s.Model.ChatTokens(ctx, s.Template, msgs, copts)
	if err != nil {
		return nil, apiError(err)
	}
	maxTokens, param := req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		maxTokens, param = req.MaxCompletionTokens, "max_completion_tokens"
	}
	gr, err := finishRequest(ids, "messages", &req.SamplingFields, maxTokens, param, seed)
	if err != nil {
		return nil, err
	}
	gr.Options.LogProbs = logprobs
	gr.Options.Grammar, gr.GrammarParam = g, gparam
	gr.tools = tools
	if tools != nil && tools.grammar != nil {
		gr.Options.Grammar, gr.GrammarParam = tools.grammar, "tool_choice"
	}
	if logprobs && req.TopLogprobs != nil {
		gr.Options.TopLogProbs = *req.TopLogprobs
	}
	return gr, nil
}

func checkModel(name string, s *Served) error {
	if name != "" && name != s.Name {
		return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "model", Code: CodeModelNotFound,
			Message: fmt.Sprintf("the model %q does not exist; this server serves %q", name, s.Name)}
	}
	return nil
}

// finishRequest checks the fields common to both request kinds and builds
// the GenerateRequest.
func finishRequest(ids []int32, promptParam string, f *SamplingFields, maxTokens *int, maxParam string, seed uint64) (*GenerateRequest, error) {
	n := 1
	if f.N != nil {
		n = *f.N
		if n < 1 || n > MaxChoices {
			return nil, badRequest("n", CodeInvalidValue, "n must be in [1, %d], got %d", MaxChoices, n)
		}
	}
	opts := model.GenerateOptions{Stop: f.Stop, IgnoreEOS: f.IgnoreEOS}
	if maxTokens != nil {
		if *maxTokens < 1 {
			return nil, badRequest(maxParam, CodeInvalidValue, "%s must be at least 1, got %d", maxParam, *maxTokens)
		}
		opts.MaxTokens = *maxTokens
	}
	p, err := SamplingParams(f, seed)
	if err != nil {
		return nil, err
	}
	opts.Sampling = p
	return &GenerateRequest{
		Prompt:       ids,
		Options:      opts,
		N:            n,
		Stream:       f.Stream,
		IncludeUsage: f.Stream && f.StreamOptions != nil && f.StreamOptions.IncludeUsage,
		PromptParam:  promptParam,
	}, nil
}

// SamplingParams builds sampler parameters from a request: llama.cpp's
// defaults (sample.DefaultParams) overridden by the fields present, the
// seed from the request or else seed. Unusable values are 400 *Errors
// naming the field; logit_bias ids outside the vocabulary are refused
// when the request is submitted (model.NewGeneration), also as a 400
// naming logit_bias.
func SamplingParams(f *SamplingFields, seed uint64) (sample.Params, error) {
	p := sample.DefaultParams()
	set32 := func(dst *float32, v *float64) {
		if v != nil {
			*dst = float32(*v)
		}
	}
	set32(&p.Temperature, f.Temperature)
	set32(&p.TopP, f.TopP)
	set32(&p.MinP, f.MinP)
	set32(&p.RepeatPenalty, f.RepeatPenalty)
	set32(&p.PresencePenalty, f.PresencePenalty)
	set32(&p.FrequencyPenalty, f.FrequencyPenalty)
	if f.TopK != nil {
		p.TopK = *f.TopK
	}
	if f.RepeatLastN != nil {
		p.RepeatLastN = *f.RepeatLastN
	}
	p.Seed = seed
	if f.Seed != nil {
		p.Seed = uint64(*f.Seed)
	}
	if len(f.LogitBias) > 0 {
		p.LogitBias = make(map[int32]float32, len(f.LogitBias))
		for key, b := range f.LogitBias {
			id, err := strconv.ParseInt(key, 10, 32)
			if err != nil {
				return p, badRequest("logit_bias", CodeInvalidValue, "logit_bias keys must be token ids, not %q", key)
			}
			p.LogitBias[int32(id)] = float32(b)
		}
	}
	if _, err := sample.New(p); err != nil {
		return p, apiError(err)
	}
	return p, nil
}

// UsageOf returns the usage object of a result.
func UsageOf(r *model.Result) *Usage {
	return &Usage{
		PromptTokens:        r.PromptTokens,
		CompletionTokens:    len(r.Tokens),
		TotalTokens:         r.PromptTokens + len(r.Tokens),
		PromptTokensDetails: &PromptTokensDetails{CachedTokens: r.CachedTokens},
	}
}

// Object names of the responses.
const (
	objectCompletion = "text_completion"
	objectChat       = "chat.completion"
	objectChatChunk  = "chat.completion.chunk"
)

// ToCompletion builds the non-streamed /v1/completions response.
func ToCompletion(id string, created int64, modelName, text string, r *model.Result) *CompletionResponse {
	finish := string(r.Finish)
	return &CompletionResponse{
		ID: id, Object: objectCompletion, Created: created, Model: modelName,
		Choices: []CompletionChoice{{Text: text, FinishReason: &finish}},
		Usage:   UsageOf(r),
	}
}

// ToCompletionChunk builds one streamed /v1/completions chunk: text is the
// new text (never the text so far); finish is set on the last chunk.
func ToCompletionChunk(id string, created int64, modelName, text string, finish model.FinishReason) *CompletionResponse {
	c := &CompletionResponse{
		ID: id, Object: objectCompletion, Created: created, Model: modelName,
		Choices: []CompletionChoice{{Text: text}},
	}
	if finish != "" {
		f := string(finish)
		c.Choices[0].FinishReason = &f
	}
	return c
}

// ToCompletionUsageChunk builds the last streamed chunk of a request with
// stream_options.include_usage: no choices, the usage.
func ToCompletionUsageChunk(id string, created int64, modelName string, r *model.Result) *CompletionResponse {
	return &CompletionResponse{
		ID: id, Object: objectCompletion, Created: created, Model: modelName,
		Choices: []CompletionChoice{}, Usage: UsageOf(r),
	}
}

// ToChatCompletion builds the non-streamed /v1/chat/completions response.
func ToChatCompletion(id string, created int64, modelName, text string, r *model.Result) *ChatCompletionResponse {
	return &ChatCompletionResponse{
		ID: id, Object: objectChat, Created: created, Model: modelName,
		Choices: []ChatChoice{{
			Message:      ChatResponseMessage{Role: "assistant", Content: &text},
			FinishReason: string(r.Finish),
		}},
		Usage: UsageOf(r),
	}
}

// finishToolCalls is the finish_reason of a reply that ends in tool calls.
const finishToolCalls = "tool_calls"

// withToolCalls makes the message of c the reply with calls: content
// (null when empty) and the calls; finish_reason "tool_calls" when the
// reply ended by itself (a reply cut by max_tokens keeps "length").
func withToolCalls(c *ChatChoice, content string, calls []ToolCall) {
	c.Message.Content = nil
	if content != "" {
		c.Message.Content = &content
	}
	c.Message.ToolCalls = calls
	if c.FinishReason == string(model.FinishStop) {
		c.FinishReason = finishToolCalls
	}
}

// ToChatChunk builds one streamed chat chunk. The first chunk of a stream
// carries the role (first), later ones the new text; the last one has an
// empty delta and the finish reason.
func ToChatChunk(id string, created int64, modelName string, first bool, text string, finish model.FinishReason) *ChatCompletionChunk {
	c := &ChatCompletionChunk{
		ID: id, Object: objectChatChunk, Created: created, Model: modelName,
		Choices: []ChatChunkChoice{{}},
	}
	ch := &c.Choices[0]
	if first {
		ch.Delta.Role = "assistant"
		ch.Delta.Content = &text
	} else if text != "" {
		ch.Delta.Content = &text
	}
	if finish != "" {
		f := string(finish)
		ch.FinishReason = &f
	}
	return c
}

// ToChatUsageChunk builds the usage chunk that ends a chat stream with
// stream_options.include_usage.
func ToChatUsageChunk(id string, created int64, modelName string, r *model.Result) *ChatCompletionChunk {
	return &ChatCompletionChunk{
		ID: id, Object: objectChatChunk, Created: created, Model: modelName,
		Choices: []ChatChunkChoice{}, Usage: UsageOf(r),
	}
}

// unlikelyLogprob stands for a log-probability that JSON cannot carry
// (-Inf, NaN), as OpenAI writes tokens of practically no probability.
const unlikelyLogprob = -9999

func finiteLogprob(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return unlikelyLogprob
	}
	return v
}

// tokenText returns the token string and bytes of id for the logprobs of
// a response: the bytes it decodes to (tokenizer.TokenBytes), as the
// string when they are UTF-8, else spelled "bytes:\xe2\x80" as OpenAI
// writes a token that splits a character.
func tokenText(tok *tokenizer.Tokenizer, id int32) (string, []int) {
	b := tok.TokenBytes(id)
	ints := make([]int, len(b))
	for i := range len(b) {
		ints[i] = int(b[i])
	}
	if utf8.ValidString(b) {
		return b, ints
	}
	var sb strings.Builder
	sb.WriteString("bytes:")
	for i := range len(b) {
		fmt.Fprintf(&sb, `\x%02x`, b[i])
	}
	return sb.String(), ints
}

// ToChatLogprobs converts the log-probabilities of some generated tokens
// to the logprobs of a chat choice or chunk.
func ToChatLogprobs(tok *tokenizer.Tokenizer, lps []model.TokenLogProbs) *ChatLogprobs {
	out := &ChatLogprobs{Content: make([]ChatTokenLogprob, len(lps))}
	for i, lp := range lps {
		text, b := tokenText(tok, lp.ID)
		e := ChatTokenLogprob{Token: text, Logprob: finiteLogprob(lp.LogProb), Bytes: b, TopLogprobs: make([]ChatTopLogprob, len(lp.Top))}
		for k, tp := range lp.Top {
			text, b := tokenText(tok, tp.ID)
			e.TopLogprobs[k] = ChatTopLogprob{Token: text, Logprob: finiteLogprob(tp.LogProb), Bytes: b}
		}
		out.Content[i] = e
	}
	return out
}

// TextCounter counts the Unicode code points of the text of the tokens
// seen so far, for the text_offset of completion logprobs: bytes that do
// not complete a character yet are not counted until they do (or turn out
// invalid, each then counting as one).
type TextCounter struct {
	runes int
	tail  []byte
}

func (c *TextCounter) add(b string) {
	c.tail = append(c.tail, b...)
	for len(c.tail) > 0 && utf8.FullRune(c.tail) {
		_, n := utf8.DecodeRune(c.tail)
		c.tail = c.tail[n:]
		c.runes++
	}
}

// ToCompletionLogprobs converts the log-probabilities of some generated
// tokens to the logprobs of a completion choice or chunk; c counts the
// text before them (the zero TextCounter for the first token) and is
// advanced past them. Each position's top_logprobs map holds the most
// likely tokens and the generated one, so up to logprobs + 1 entries, as
// OpenAI documents; tokens of equal text share an entry (the first, most
// likely, one wins).
func ToCompletionLogprobs(tok *tokenizer.Tokenizer, lps []model.TokenLogProbs, c *TextCounter) *CompletionLogprobs {
	out := &CompletionLogprobs{
		Tokens:        make([]string, len(lps)),
		TokenLogprobs: make([]float64, len(lps)),
		TopLogprobs:   make([]map[string]float64, len(lps)),
		TextOffset:    make([]int, len(lps)),
	}
	for i, lp := range lps {
		text, _ := tokenText(tok, lp.ID)
		out.Tokens[i] = text
		out.TokenLogprobs[i] = finiteLogprob(lp.LogProb)
		out.TextOffset[i] = c.runes
		top := make(map[string]float64, len(lp.Top)+1)
		for _, tp := range lp.Top {
			t, _ := tokenText(tok, tp.ID)
			if _, dup := top[t]; !dup {
				top[t] = finiteLogprob(tp.LogProb)
			}
		}
		if _, ok := top[text]; !ok {
			top[text] = out.TokenLogprobs[i]
		}
		out.TopLogprobs[i] = top
		c.add(tok.TokenBytes(lp.ID))
	}
	return out
}
