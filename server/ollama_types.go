package server

import (
	"encoding/json"
	"time"
)

// Wire types of the ollama API (github.com/ollama/ollama docs/api.md), as
// its clients send and receive them. Fields that this server refuses
// when set (images, tools, ...) are declared so that it can tell
// they were sent; fields it does not know at all are skipped, as ollama
// skips them.

// OllamaGenerateRequest is the body of POST /api/generate.
type OllamaGenerateRequest struct {
	Model  string `json:"model"`
	Prompt string `json:"prompt"`
	// Suffix asks for fill-in-the-middle; refused.
	Suffix string `json:"suffix"`
	// System is a system message put before the prompt (not with Raw).
	System string `json:"system"`
	// Template overrides the model's prompt template; refused.
	Template string `json:"template"`
	// Context is the context of a previous response: its token ids, put
	// before the prompt's.
	Context []int64 `json:"context,omitempty"`
	// Stream is true when absent: NDJSON lines, one per piece of text.
	Stream *bool `json:"stream,omitempty"`
	// Raw tokenizes Prompt as it is, without the chat template.
	Raw bool `json:"raw,omitempty"`
	OllamaCommonFields
}

// OllamaChatRequest is the body of POST /api/chat.
type OllamaChatRequest struct {
	Model    string          `json:"model"`
	Messages []OllamaMessage `json:"messages"`
	// Stream is true when absent.
	Stream *bool `json:"stream,omitempty"`
	// Tools are refused (no tool calling yet).
	Tools json.RawMessage `json:"tools,omitempty"`
	OllamaCommonFields
}

// OllamaCommonFields are the fields that generate and chat requests
// share.
type OllamaCommonFields struct {
	// Format asks for JSON output: "json" for a JSON object, or a JSON
	// schema object for a value the schema accepts ("" or null: none).
	Format json.RawMessage `json:"format,omitempty"`
	// KeepAlive is how long the model should stay loaded: a duration
	// string ("5m") or a number of seconds; negative means forever.
	// Checked, then without effect: the server's one model stays loaded
	// while it runs.
	KeepAlive json.RawMessage `json:"keep_alive,omitempty"`
	// Images are refused (no vision models).
	Images []string `json:"images,omitempty"`
	// Options are the sampling and runner options (see ollamaOptions).
	Options map[string]json.RawMessage `json:"options"`
	// Think, Truncate, Shift, Logprobs, TopLogprobs and DebugRenderOnly
	// are accepted when off and refused when on.
	Think           json.RawMessage `json:"think,omitempty"`
	Truncate        *bool           `json:"truncate,omitempty"`
	Shift           *bool           `json:"shift,omitempty"`
	Logprobs        bool            `json:"logprobs,omitempty"`
	TopLogprobs     int             `json:"top_logprobs,omitempty"`
	DebugRenderOnly bool            `json:"_debug_render_only,omitempty"`
}

// OllamaMessage is one message of a chat request or the reply of a chat
// response.
type OllamaMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// Thinking, Images and ToolCalls are refused in requests.
	Thinking  string          `json:"thinking,omitempty"`
	Images    []string        `json:"images,omitempty"`
	ToolCalls json.RawMessage `json:"tool_calls,omitempty"`
	ToolName  string          `json:"tool_name,omitempty"`
}

// OllamaMetrics are the counts and durations of a finished generation,
// on the last object of a response. Durations are in nanoseconds.
type OllamaMetrics struct {
	// TotalDuration runs from the start of the handler to the end of the
	// generation.
	TotalDuration time.Duration `json:"total_duration,omitempty"`
	// LoadDuration is the time the request waited for a KV-cache slot
	// (the model itself is loaded before the server serves).
	LoadDuration time.Duration `json:"load_duration,omitempty"`
	// PromptEvalCount is the prompt's tokens, those reused from the
	// slot's cache included.
	PromptEvalCount int `json:"prompt_eval_count,omitempty"`
	// PromptEvalDuration runs from admission to the first generated
	// token.
	PromptEvalDuration time.Duration `json:"prompt_eval_duration,omitempty"`
	// EvalCount is the generated tokens (end-of-generation tokens not
	// counted).
	EvalCount int `json:"eval_count,omitempty"`
	// EvalDuration runs from the first generated token to the last.
	EvalDuration time.Duration `json:"eval_duration,omitempty"`
}

// OllamaGenerateResponse is one NDJSON line of a streamed /api/generate
// response, or the whole non-streamed one.
type OllamaGenerateResponse struct {
	Model      string    `json:"model"`
	CreatedAt  time.Time `json:"created_at"`
	Response   string    `json:"response"`
	Done       bool      `json:"done"`
	DoneReason string    `json:"done_reason,omitempty"`
	// Context is the prompt's token ids followed by the generated ones,
	// on the last object: sent back as the next request's context, it
	// continues the text.
	Context []int32 `json:"context,omitempty"`
	OllamaMetrics
}

// OllamaChatResponse is one NDJSON line of a streamed /api/chat
// response, or the whole non-streamed one.
type OllamaChatResponse struct {
	Model      string        `json:"model"`
	CreatedAt  time.Time     `json:"created_at"`
	Message    OllamaMessage `json:"message"`
	Done       bool          `json:"done"`
	DoneReason string        `json:"done_reason,omitempty"`
	OllamaMetrics
}

// OllamaShowRequest is the body of POST /api/show.
type OllamaShowRequest struct {
	Model string `json:"model"`
	// Name is the older name of Model.
	Name string `json:"name"`
	// Verbose adds the metadata arrays (the vocabulary) to ModelInfo.
	Verbose bool `json:"verbose"`
}

// OllamaModelDetails describes a model file.
type OllamaModelDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

// OllamaShowResponse is the body of a /api/show response.
type OllamaShowResponse struct {
	// Modelfile is an ollama Modelfile that describes the served model:
	// its FROM file and the PARAMETER defaults of this server.
	Modelfile string `json:"modelfile"`
	// Parameters lists the server's sampling defaults and the model's stop
	// token, one "name value" per line.
	Parameters string `json:"parameters"`
	// Template is the model's chat template, in Jinja (the GGUF's own or
	// the built-in fallback), not in ollama's Go template syntax.
	Template     string             `json:"template"`
	Details      OllamaModelDetails `json:"details"`
	ModelInfo    map[string]any     `json:"model_info"`
	Capabilities []string           `json:"capabilities"`
	ModifiedAt   time.Time          `json:"modified_at"`
}

// OllamaListResponse is the body of a /api/tags response.
type OllamaListResponse struct {
	Models []OllamaListModel `json:"models"`
}

// OllamaListModel is one model of OllamaListResponse.
type OllamaListModel struct {
	Name       string    `json:"name"`
	Model      string    `json:"model"`
	ModifiedAt time.Time `json:"modified_at"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// Digest is the sha256 of the file in hex, or "" while it is being
	// computed (once, in the background, from the first request that
	// needs it) and when there is no file.
	Digest  string             `json:"digest"`
	Details OllamaModelDetails `json:"details"`
}

// OllamaPSResponse is the body of a /api/ps response.
type OllamaPSResponse struct {
	Models []OllamaRunningModel `json:"models"`
}

// OllamaRunningModel is one model of OllamaPSResponse.
type OllamaRunningModel struct {
	Name    string             `json:"name"`
	Model   string             `json:"model"`
	Size    int64              `json:"size"`
	Digest  string             `json:"digest"`
	Details OllamaModelDetails `json:"details"`
	// ExpiresAt is the zero time: the model stays loaded while the server
	// runs.
	ExpiresAt time.Time `json:"expires_at"`
	// SizeVRAM is the device memory the backend holds; 0 on the CPU.
	SizeVRAM      int64 `json:"size_vram"`
	ContextLength int   `json:"context_length"`
}

// OllamaVersionResponse is the body of a /api/version response.
type OllamaVersionResponse struct {
	Version string `json:"version"`
}

// OllamaErrorBody is the body of every ollama API error, and the NDJSON
// line that ends a stream that failed.
type OllamaErrorBody struct {
	Error string `json:"error"`
}
