package chat

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

// KeyTemplate is the GGUF metadata key of a model's chat template, and the
// Name of a template read from it.
const KeyTemplate = "tokenizer.chat_template"

// ErrUnknownBuiltin is matched (errors.Is) by the error Builtin returns for
// a name it does not know.
var ErrUnknownBuiltin = errors.New("unknown built-in chat template")

// builtins are the fallback formats, written for this package; each note
// says which models they serve.
var builtins = map[string]string{
	// ChatML, as used by Qwen 2/2.5/3 (without Qwen's default system
	// prompt or tool syntax).
	"chatml": "{%- for message in messages -%}" +
		"{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}" +
		"{%- endfor -%}" +
		"{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",

	// Llama 2 chat: [INST] turns, the system message folded into the
	// first one between <<SYS>> markers. The format cannot express other
	// role orders, so it refuses them.
	"llama2": "{%- if messages and messages[0]['role'] == 'system' -%}" +
		"{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}" +
		"{%- else -%}" +
		"{%- set system = '' -%}{%- set turns = messages -%}" +
		"{%- endif -%}" +
		"{%- for message in turns -%}" +
		"{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}" +
		"{{- raise_exception('llama2 format: after an optional system message the roles must alternate user/assistant/user/...') -}}" +
		"{%- endif -%}" +
		"{%- if message['role'] == 'user' -%}" +
		"{{- bos_token + '[INST] ' -}}" +
		"{%- if loop.first and system -%}{{- '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' -}}{%- endif -%}" +
		"{{- message['content'] | trim + ' [/INST]' -}}" +
		"{%- else -%}" +
		"{{- ' ' + message['content'] | trim + ' ' + eos_token -}}" +
		"{%- endif -%}" +
		"{%- endfor -%}",

	// Llama 3 header format.
	"llama3": "{{- bos_token -}}" +
		"{%- for message in messages -%}" +
		"{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' -}}" +
		"{%- endfor -%}" +
		"{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}",

	// "role: content" lines, for models without a known format.
	"plain": "{%- for message in messages -%}" +
		"{{- message['role'] + ': ' + message['content'] + '\\n' -}}" +
		"{%- endfor -%}" +
		"{%- if add_generation_prompt -%}{{- 'assistant:' -}}{%- endif -%}",
}

// Builtin returns the built-in template called name:
//
//	chatml  <|im_start|>role\ncontent<|im_end|>\n per message (Qwen)
//	llama2  <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] answer </s>
//	llama3  <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
//	plain   role: content\n per message, then "assistant:"
func Builtin(name string) (*Template, error) {
	src, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("chat: %w %q", ErrUnknownBuiltin, name)
	}
	return parse(name, src)
}

// FromGGUF returns the model's own chat template (tokenizer.chat_template)
// when the metadata has a non-empty one, and otherwise a built-in chosen
// from the vocabulary and the architecture arch (general.architecture when
// arch is empty):
//
//   - llama3 when the vocabulary has <|start_header_id|>;
//   - chatml for qwen2, qwen2moe, qwen3 and qwen3moe, or when the
//     vocabulary has <|im_start|>;
//   - llama2 for llama with a SentencePiece vocabulary
//     (tokenizer.ggml.model "llama"), as Llama 2 and Mistral ship;
//   - plain otherwise.
//
// The template's Name tells which was chosen. A chat template that is not a
// string yields the metadata's *gguf.KeyError, one that does not compile a
// *Error; neither falls back silently.
func FromGGUF(md *gguf.Metadata, arch string) (*Template, error) {
	if md == nil {
		return nil, errors.New("chat: FromGGUF: nil metadata")
	}
	if md.Has(KeyTemplate) {
		src, err := md.String(KeyTemplate)
		if err != nil {
			return nil, fmt.Errorf("chat: %w", err)
		}
		if strings.TrimSpace(src) != "" {
			return parse(KeyTemplate, src)
		}
	}
	return Builtin(fallback(md, arch))
}

func fallback(md *gguf.Metadata, arch string) string {
	if arch == "" {
		arch, _ = md.String("general.architecture")
	}
	tokens, _ := md.Strings("tokenizer.ggml.tokens")
	if slices.Contains(tokens, "<|start_header_id|>") {
		return "llama3"
	}
	switch arch {
	case "qwen2", "qwen2moe", "qwen3", "qwen3moe":
		return "chatml"
	}
	if slices.Contains(tokens, "<|im_start|>") {
		return "chatml"
	}
	if model, _ := md.String("tokenizer.ggml.model"); arch == "llama" && model == "llama" {
		return "llama2"
	}
	return "plain"
}
