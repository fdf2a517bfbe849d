package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
)

// The request fields OpenAI defines that this server does not implement.
// Each is decoded raw and accepted only with a value that changes nothing
// here (null always counts as absent); any other value is refused with 400
// unsupported_value naming the field, so that no request is answered as
// if a feature it asked for had been applied.

// chatExtras are the fields of /v1/chat/completions kept raw.
type chatExtras struct {
	User                 json.RawMessage `json:"user,omitempty"`
	SafetyIdentifier     json.RawMessage `json:"safety_identifier,omitempty"`
	PromptCacheKey       json.RawMessage `json:"prompt_cache_key,omitempty"`
	PromptCacheRetention json.RawMessage `json:"prompt_cache_retention,omitempty"`
	PromptCacheOptions   json.RawMessage `json:"prompt_cache_options,omitempty"`
	Store                json.RawMessage `json:"store,omitempty"`
	Metadata             json.RawMessage `json:"metadata,omitempty"`
	ServiceTier          json.RawMessage `json:"service_tier,omitempty"`
	Functions            json.RawMessage `json:"functions,omitempty"`
	FunctionCall         json.RawMessage `json:"function_call,omitempty"`
	Modalities           json.RawMessage `json:"modalities,omitempty"`
	Audio                json.RawMessage `json:"audio,omitempty"`
	Prediction           json.RawMessage `json:"prediction,omitempty"`
	ReasoningEffort      json.RawMessage `json:"reasoning_effort,omitempty"`
	Verbosity            json.RawMessage `json:"verbosity,omitempty"`
	WebSearchOptions     json.RawMessage `json:"web_search_options,omitempty"`
	Moderation           json.RawMessage `json:"moderation,omitempty"`
}

// completionExtras are the fields of /v1/completions kept raw.
type completionExtras struct {
	User json.RawMessage `json:"user,omitempty"`
	// BestOf is accepted when it equals n (checkBestOf).
	BestOf json.RawMessage `json:"best_of,omitempty"`
	Echo   json.RawMessage `json:"echo,omitempty"`
	Suffix json.RawMessage `json:"suffix,omitempty"`
}

// fieldRule accepts a raw field when ok holds for its decoded value;
// otherwise the request is refused with why: a value of the wrong type
// (typed) as invalid_value, any other as unsupported_value.
type fieldRule struct {
	name  string
	raw   json.RawMessage
	ok    func(v any) bool
	why   string
	typed bool
}

// Predicates of fieldRule.ok over decoded JSON values.
func anyString(v any) bool { _, ok := v.(string); return ok }
func anyObject(v any) bool { _, ok := v.(map[string]any); return ok }
func nothing(any) bool     { return false }

// oneOf accepts the values of the JSON texts given.
func oneOf(texts ...string) func(any) bool {
	vals := make([]any, len(texts))
	for i, t := range texts {
		if err := json.Unmarshal([]byte(t), &vals[i]); err != nil {
			panic(fmt.Sprintf("server: bad JSON %q in a field rule", t))
		}
	}
	return func(v any) bool {
		for _, w := range vals {
			if reflect.DeepEqual(v, w) {
				return true
			}
		}
		return false
	}
}

func (x *chatExtras) rules() []fieldRule {
	const noFunctions = "the deprecated functions are not supported; use tools"
	return []fieldRule{
		{"user", x.User, anyString, "user must be a string", true},
		{"safety_identifier", x.SafetyIdentifier, anyString, "safety_identifier must be a string", true},
		{"prompt_cache_key", x.PromptCacheKey, anyString, "prompt_cache_key must be a string", true},
		{"prompt_cache_retention", x.PromptCacheRetention, anyString, "prompt_cache_retention must be a string", true},
		{"prompt_cache_options", x.PromptCacheOptions, anyObject, "prompt_cache_options must be an object", true},
		{"store", x.Store, oneOf(`false`), "this server does not store completions; store must be false", false},
		{"metadata", x.Metadata, oneOf(`{}`), "metadata is kept with stored completions, which this server does not keep", false},
		{"service_tier", x.ServiceTier, oneOf(`"auto"`, `"default"`), "this server has one service tier; service_tier must be auto or default", false},
		{"functions", x.Functions, oneOf(`[]`), noFunctions, false},
		{"function_call", x.FunctionCall, oneOf(`"none"`, `"auto"`), noFunctions + "; function_call must be none or auto", false},
		{"modalities", x.Modalities, oneOf(`["text"]`), "only the text modality is supported", false},
		{"audio", x.Audio, nothing, "audio output is not supported", false},
		{"prediction", x.Prediction, nothing, "predicted outputs are not supported", false},
		{"reasoning_effort", x.ReasoningEffort, oneOf(`"none"`), "the model does not reason; reasoning_effort must be none", false},
		{"verbosity", x.Verbosity, oneOf(`"medium"`), "verbosity cannot be changed; it must be medium", false},
		{"web_search_options", x.WebSearchOptions, nothing, "web search is not supported", false},
		{"moderation", x.Moderation, nothing, "moderation is not supported", false},
	}
}

func (x *completionExtras) rules() []fieldRule {
	return []fieldRule{
		{"user", x.User, anyString, "user must be a string", true},
		{"echo", x.Echo, oneOf(`false`), "echo is not supported", false},
		{"suffix", x.Suffix, oneOf(`""`), "suffix (insertion) is not supported", false},
	}
}

// checkFields returns a 400 *Error for the first rule whose field is
// present, not null, and not accepted.
func checkFields(rules []fieldRule) error {
	for _, r := range rules {
		raw := bytes.TrimSpace(r.raw)
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil || !r.ok(v) {
			code := CodeUnsupported
			if r.typed {
				code = CodeInvalidValue
			}
			return badRequest(r.name, code, "%s", r.why)
		}
	}
	return nil
}

// checkMessage refuses the fields of message i that the server does not
// implement (the deprecated function_call of an assistant message, its
// refusal or audio).
func checkMessage(i int, m *ChatMessage) error {
	field := func(name string) string { return fmt.Sprintf("messages[%d].%s", i, name) }
	return checkFields([]fieldRule{
		{field("function_call"), m.FunctionCall, nothing, "the deprecated function_call is not supported; use tool_calls", false},
		{field("refusal"), m.Refusal, nothing, "refusal messages are not supported", false},
		{field("audio"), m.Audio, nothing, "audio is not supported", false},
	})
}
