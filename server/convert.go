package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
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
}

// GenerateRequest is a request converted to model inputs: the prompt's
// token ids and the generation options, plus how to answer.
type GenerateRequest struct {
	Prompt       []int32
	Options      model.GenerateOptions
	Stream       bool
	IncludeUsage bool
	// PromptParam names the request field the prompt came from
	// ("prompt", "messages"), for errors about it.
	PromptParam string
}

// requestError is apiError with the errors about the prompt (too long for
// the context, a token outside the vocabulary) pinned on its field.
func (gr *GenerateRequest) requestError(err error) *Error {
	ae := apiError(err)
	if errors.Is(err, model.ErrContextFull) || errors.Is(err, model.ErrInvalidToken) {
		ae.Param = gr.PromptParam
	}
	return ae
}

// decodeJSON decodes one JSON value from r into v and rejects trailing
// data. Syntax errors and wrong field types become 400 *Errors naming the
// field; a body over the http.MaxBytesReader limit becomes 413, and one
// that does not arrive within Options.BodyTimeout 408.
func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
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
		field := strings.TrimPrefix(te.Field, "SamplingFields.") // an embedded struct, not a JSON name
		if field == "" {
			return badRequest("", CodeInvalidJSON, "the body must be a JSON object, not %s", jsonKind(te.Value))
		}
		return badRequest(field, CodeInvalidValue, "%s must be %s, not %s", field, goKind(te), jsonKind(te.Value))
	case errors.As(err, &se):
		return badRequest("", CodeInvalidJSON, "malformed JSON body at byte %d: %v", se.Offset, err)
	case errors.Is(err, io.EOF):
		return badRequest("", CodeInvalidJSON, "the request body is empty; want a JSON object")
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
	return finishRequest(ids, "prompt", &req.SamplingFields, req.MaxTokens, "max_tokens", seed)
}

// FromChatRequest converts a /v1/chat/completions request: the messages
// go through the model's chat template with the assistant header added,
// rendered until ctx (the request's) is done, their contents tokenized
// as plain text unless s.AllowSpecialInContent. A template that refuses
// the messages or breaks a render limit is a 400 *Error naming
// "messages"; a ctx done first gives an error matching ctx.Err().
func FromChatRequest(ctx context.Context, req *ChatCompletionRequest, s *Served, seed uint64) (*GenerateRequest, error) {
	if err := checkModel(req.Model, s); err != nil {
		return nil, err
	}
	if len(req.Messages) == 0 {
		return nil, badRequest("messages", CodeInvalidValue, "messages must hold at least one message")
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i, msg := range req.Messages {
		role := msg.Role
		switch role {
		case "system", "user", "assistant", "tool":
		case "developer":
			role = "system"
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), CodeInvalidValue,
				"role %q: want system, developer, user, assistant or tool", msg.Role)
		}
		msgs[i] = chat.Message{Role: role, Content: string(msg.Content)}
	}
	if s.Template == nil {
		return nil, &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: CodeInternal,
			Message: fmt.Sprintf("the model has no usable chat template: %v", s.TemplateErr), Err: s.TemplateErr}
	}
	ids, _, err := s.Model.ChatTokens(ctx, s.Template, msgs,
		model.ChatOptions{AddGenerationPrompt: true, AllowSpecialInContent: s.AllowSpecialInContent})
	if err != nil {
		return nil, apiError(err)
	}
	maxTokens, param := req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		maxTokens, param = req.MaxCompletionTokens, "max_completion_tokens"
	}
	return finishRequest(ids, "messages", &req.SamplingFields, maxTokens, param, seed)
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
	if f.N != nil && *f.N != 1 {
		return nil, badRequest("n", CodeUnsupported, "n = %d: only one choice per request is supported", *f.N)
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
		Stream:       f.Stream,
		IncludeUsage: f.Stream && f.StreamOptions != nil && f.StreamOptions.IncludeUsage,
		PromptParam:  promptParam,
	}, nil
}

// SamplingParams builds sampler parameters from a request: llama.cpp's
// defaults (sample.DefaultParams) overridden by the fields present, the
// seed from the request or else seed. Unusable values are 400 *Errors
// naming the field.
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
			Message:      ChatResponseMessage{Role: "assistant", Content: text},
			FinishReason: string(r.Finish),
		}},
		Usage: UsageOf(r),
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
