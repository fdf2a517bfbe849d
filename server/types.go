package server

import (
	"bytes"
	"encoding/json"
)

// Wire types of the OpenAI-compatible API, as clients send and receive
// them. Optional numbers are pointers so that an absent field and a zero
// can be told apart. Every field OpenAI defines is declared: those the
// server does not implement are kept raw (see params.go) and refused with
// 400 unless their value changes nothing; a field OpenAI does not define
// is refused as unknown (decodeJSON).

// SamplingFields are the sampling parameters shared by completion and chat
// completion requests: OpenAI's, plus llama.cpp's extensions top_k, min_p,
// repeat_penalty, repeat_last_n and ignore_eos.
type SamplingFields struct {
	Temperature      *float64 `json:"temperature,omitempty"`
	TopP             *float64 `json:"top_p,omitempty"`
	TopK             *int     `json:"top_k,omitempty"`
	MinP             *float64 `json:"min_p,omitempty"`
	RepeatPenalty    *float64 `json:"repeat_penalty,omitempty"`
	RepeatLastN      *int     `json:"repeat_last_n,omitempty"`
	PresencePenalty  *float64 `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float64 `json:"frequency_penalty,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
	Stop             Stop     `json:"stop,omitempty"`
	// LogitBias maps token ids, written as strings, to a bias in
	// [-100, 100] added to their logits before sampling.
	LogitBias map[string]float64 `json:"logit_bias,omitempty"`
	// N is the number of choices, 1 to MaxChoices (default 1), each
	// sampled independently (GenerateRequest.Requests).
	N *int `json:"n,omitempty"`
	// IgnoreEOS keeps generating past end-of-generation tokens (llama.cpp).
	IgnoreEOS bool `json:"ignore_eos,omitempty"`
	// Stream asks for Server-Sent Events.
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *StreamOptions `json:"stream_options,omitempty"`
}

// StreamOptions are the options of a streamed response.
type StreamOptions struct {
	// IncludeUsage adds a last chunk with the usage and no choices.
	IncludeUsage bool `json:"include_usage"`
	// IncludeObfuscation is accepted and changes nothing: chunks are never
	// padded.
	IncludeObfuscation *bool `json:"include_obfuscation,omitempty"`
}

// CompletionRequest is the body of POST /v1/completions.
type CompletionRequest struct {
	Model  string `json:"model"`
	Prompt Prompt `json:"prompt"`
	// MaxTokens bounds the generated tokens; absent means until the end of
	// generation or a full context.
	MaxTokens *int `json:"max_tokens,omitempty"`
	// Logprobs asks for the log-probabilities of each token and of the
	// Logprobs (0 to 5) most likely tokens at its position.
	Logprobs *int `json:"logprobs,omitempty"`
	SamplingFields
	ConstraintFields
	completionExtras
}

// ChatCompletionRequest is the body of POST /v1/chat/completions.
type ChatCompletionRequest struct {
	Model    string        `json:"model"`
	Messages []ChatMessage `json:"messages"`
	// MaxCompletionTokens replaces the deprecated MaxTokens; when both are
	// given it wins.
	MaxCompletionTokens *int `json:"max_completion_tokens,omitempty"`
	MaxTokens           *int `json:"max_tokens,omitempty"`
	// Logprobs asks for the log-probabilities of each token, and
	// TopLogprobs (0 to 20; needs Logprobs) for those of the most likely
	// tokens at its position.
	Logprobs    *bool `json:"logprobs,omitempty"`
	TopLogprobs *int  `json:"top_logprobs,omitempty"`
	SamplingFields
	ConstraintFields
	ToolFields
	chatExtras
}

// ChatMessage is one message of a chat request. ToolCalls are the calls
// of an assistant message (a list of ToolCall, checked when converted)
// and ToolCallID the call a tool message answers; the other fields OpenAI
// defines for a message are refused unless null or empty (see
// checkMessage).
type ChatMessage struct {
	Role       string          `json:"role"`
	Content    MessageContent  `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`

	FunctionCall json.RawMessage `json:"function_call,omitempty"`
	Refusal      json.RawMessage `json:"refusal,omitempty"`
	Audio        json.RawMessage `json:"audio,omitempty"`
}

// MessageContent is a message's content: a string, or a list of content
// parts of which only {"type":"text","text":...} are supported; their
// texts are joined. Null decodes as "".
type MessageContent string

// UnmarshalJSON accepts a string, null or a list of text parts.
func (c *MessageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*c = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = MessageContent(s)
		return nil
	case len(b) > 0 && b[0] == '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return badRequest("messages", CodeInvalidValue, "a message's content parts must be objects with a type and a text: %v", err)
		}
		var sb []byte
		for _, p := range parts {
			if p.Type != "text" || p.Text == nil {
				return badRequest("messages", CodeUnsupported, "content parts of type %q are not supported; only text", p.Type)
			}
			sb = append(sb, *p.Text...)
		}
		*c = MessageContent(sb)
		return nil
	}
	return badRequest("messages", CodeInvalidValue, "a message's content must be a string or a list of text parts")
}

// Stop is the stop field: a string or a list of strings, up to 16.
type Stop []string

// maxStops bounds the stop strings of a request.
const maxStops = 16

// UnmarshalJSON accepts null, a string or a list of strings.
func (s *Stop) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	var list []string
	switch {
	case bytes.Equal(b, []byte("null")):
	case len(b) > 0 && b[0] == '"':
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return badRequest("stop", CodeInvalidValue, "stop: %v", err)
		}
		list = []string{one}
	default:
		if err := json.Unmarshal(b, &list); err != nil {
			return badRequest("stop", CodeInvalidValue, "stop must be a string or a list of strings")
		}
	}
	if len(list) > maxStops {
		return badRequest("stop", CodeInvalidValue, "at most %d stop strings, got %d", maxStops, len(list))
	}
	*s = list
	return nil
}

// Prompt is the prompt field of a completion request: a string, a list
// of one string, a list of token ids, or a list of one list of token ids.
// Several prompts (which OpenAI answers with n choices each) are
// rejected.
type Prompt struct {
	Text   string
	Tokens []int32 // set when the prompt is given as token ids
	IsIDs  bool
	Set    bool
}

// UnmarshalJSON decodes the accepted shapes.
func (p *Prompt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*p = Prompt{}
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	p.Set = true
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &p.Text)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		return badRequest("prompt", CodeInvalidValue, "prompt must be a string, a list of strings or a list of token ids")
	}
	if len(list) == 0 {
		return badRequest("prompt", CodeInvalidValue, "prompt is an empty list")
	}
	first := bytes.TrimSpace(list[0])
	switch {
	case len(first) > 0 && first[0] == '"':
		if len(list) > 1 {
			return badRequest("prompt", CodeUnsupported, "%d prompts in one request; only one is supported", len(list))
		}
		return json.Unmarshal(first, &p.Text)
	case len(first) > 0 && first[0] == '[':
		if len(list) > 1 {
			return badRequest("prompt", CodeUnsupported, "%d prompts in one request; only one is supported", len(list))
		}
		b = first
	}
	p.IsIDs = true
	if err := json.Unmarshal(b, &p.Tokens); err != nil {
		return badRequest("prompt", CodeInvalidValue, "prompt token ids must be integers: %v", err)
	}
	return nil
}

// MarshalJSON writes the prompt back as a string or a list of ids.
func (p Prompt) MarshalJSON() ([]byte, error) {
	if p.IsIDs {
		return json.Marshal(p.Tokens)
	}
	return json.Marshal(p.Text)
}

// Usage counts the tokens of a request.
type Usage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// PromptTokensDetails says how many prompt tokens came from the slot's
// cache instead of being evaluated.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// CompletionResponse is the body of a non-streamed /v1/completions
// response, and (with Object "text_completion" too) each streamed chunk.
type CompletionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint,omitempty"`
	Choices           []CompletionChoice `json:"choices"`
	Usage             *Usage             `json:"usage,omitempty"`
}

// CompletionChoice is one choice of a CompletionResponse. FinishReason is
// null until the last chunk.
type CompletionChoice struct {
	Text         string              `json:"text"`
	Index        int                 `json:"index"`
	Logprobs     *CompletionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// CompletionLogprobs are the log-probabilities of a completion's tokens
// (or of a chunk's), in OpenAI's legacy shape: per token its text, its
// log-probability, a map of the most likely tokens' texts (the token
// itself included) to theirs, and the offset of its text in the
// completion, in Unicode code points (counted from the start of the
// generated text, continued across chunks).
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// ChatLogprobs are the log-probabilities of a chat choice's (or chunk's)
// content tokens; Refusal is always null.
type ChatLogprobs struct {
	Content []ChatTokenLogprob `json:"content"`
	Refusal []ChatTokenLogprob `json:"refusal"`
}

// ChatTokenLogprob is one token of ChatLogprobs: its text, its
// log-probability, its UTF-8 bytes, and the most likely tokens at its
// position (most likely first).
type ChatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float64          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []ChatTopLogprob `json:"top_logprobs"`
}

// ChatTopLogprob is one of the most likely tokens at a position.
type ChatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// ChatCompletionResponse is the body of a non-streamed
// /v1/chat/completions response.
type ChatCompletionResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint,omitempty"`
	Choices           []ChatChoice `json:"choices"`
	Usage             *Usage       `json:"usage,omitempty"`
}

// ChatChoice is one choice of a ChatCompletionResponse.
type ChatChoice struct {
	Index        int                 `json:"index"`
	Message      ChatResponseMessage `json:"message"`
	Logprobs     *ChatLogprobs       `json:"logprobs"`
	FinishReason string              `json:"finish_reason"`
}

// ChatResponseMessage is the assistant message of a ChatChoice. Content
// is null for a reply made only of tool calls.
type ChatResponseMessage struct {
	Role      string     `json:"role"`
	Content   *string    `json:"content"`
	Refusal   *string    `json:"refusal"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// ChatCompletionChunk is one streamed chat completion event.
type ChatCompletionChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint,omitempty"`
	Choices           []ChatChunkChoice `json:"choices"`
	Usage             *Usage            `json:"usage,omitempty"`
}

// ChatChunkChoice is the choice of a chunk: a delta of the message.
type ChatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        ChatDelta     `json:"delta"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// ChatDelta is the new part of the assistant message: the role in the
// first chunk, then content or parts of tool calls.
type ChatDelta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls []ToolCallDelta `json:"tool_calls,omitempty"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Object string      `json:"object"`
	Data   []ModelInfo `json:"data"`
}

// ModelInfo describes the served model.
type ModelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// TokenizeRequest is the body of POST /tokenize (llama.cpp's shape).
type TokenizeRequest struct {
	Content string `json:"content"`
	// AddSpecial adds BOS/EOS as the model asks (default false).
	AddSpecial bool `json:"add_special"`
	// ParseSpecial turns control-token text into their ids (default true).
	ParseSpecial *bool `json:"parse_special,omitempty"`
	// WithPieces returns {"id","piece"} objects instead of bare ids.
	WithPieces bool `json:"with_pieces"`
}

// TokenizeResponse is the body of a /tokenize response without pieces.
type TokenizeResponse struct {
	Tokens []int32 `json:"tokens"`
}

// TokenPiece is a token id with its text.
type TokenPiece struct {
	ID    int32  `json:"id"`
	Piece string `json:"piece"`
}

// TokenizePiecesResponse is the body of a /tokenize response with pieces.
type TokenizePiecesResponse struct {
	Tokens []TokenPiece `json:"tokens"`
}

// DetokenizeRequest is the body of POST /detokenize.
type DetokenizeRequest struct {
	Tokens []int32 `json:"tokens"`
}

// DetokenizeResponse is the body of a /detokenize response.
type DetokenizeResponse struct {
	Content string `json:"content"`
}

// HealthResponse is the body of GET /health: Status is "ok", "loading
// model", "shutting down" or "error", and Error says what failed.
type HealthResponse struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}
