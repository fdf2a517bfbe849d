package chat

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
)

func metadata(t *testing.T, kv map[string]any) *gguf.Metadata {
	t.Helper()
	var md gguf.Metadata
	for k, v := range kv {
		require.NoError(t, md.SetAny(k, v))
	}
	return &md
}

func TestFromGGUF(t *testing.T) {
	spm := []string{"<unk>", "<s>", "</s>", "▁the"}
	llama3 := []string{"!", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}
	chatmlVocab := []string{"!", "<|im_start|>", "<|im_end|>"}
	tests := []struct {
		name string
		kv   map[string]any
		arch string
		want string
	}{
		{"own template", map[string]any{KeyTemplate: "{{ 'x' }}", "general.architecture": "llama"}, "", KeyTemplate},
		{"empty template falls back", map[string]any{KeyTemplate: "  ", "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": spm}, "llama", "llama2"},
		{"llama 3 vocabulary", map[string]any{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": llama3}, "llama", "llama3"},
		{"llama 3 header wins over arch", map[string]any{"tokenizer.ggml.tokens": llama3}, "qwen2", "llama3"},
		{"qwen2", map[string]any{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": []string{"a"}}, "qwen2", "chatml"},
		{"qwen3", nil, "qwen3", "chatml"},
		{"qwen3moe", nil, "qwen3moe", "chatml"},
		{"chatml vocabulary", map[string]any{"tokenizer.ggml.tokens": chatmlVocab}, "phi3", "chatml"},
		{"llama with SPM", map[string]any{"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": spm}, "llama", "llama2"},
		{"arch from metadata", map[string]any{"general.architecture": "llama", "tokenizer.ggml.model": "llama"}, "", "llama2"},
		{"llama with BPE, no headers", map[string]any{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": []string{"a"}}, "llama", "plain"},
		{"unknown arch", map[string]any{"tokenizer.ggml.model": "llama"}, "gpt2", "plain"},
		{"nothing at all", nil, "", "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := FromGGUF(metadata(t, tt.kv), tt.arch)
			require.NoError(t, err)
			assert.Equal(t, tt.want, tmpl.Name())
			if tt.want == KeyTemplate {
				assert.Equal(t, tt.kv[KeyTemplate], tmpl.Source())
			} else {
				assert.Equal(t, builtins[tt.want], tmpl.Source())
			}
		})
	}

	_, err := FromGGUF(metadata(t, map[string]any{KeyTemplate: uint32(7)}), "llama")
	var ke *gguf.KeyError
	assert.True(t, errors.As(err, &ke), "a template that is not a string: %v", err)

	_, err = FromGGUF(metadata(t, map[string]any{KeyTemplate: "{% if %}"}), "llama")
	var ce *Error
	require.True(t, errors.As(err, &ce), "a template that does not compile: %v", err)
	assert.Equal(t, KeyTemplate, ce.Template)

	// A template over the size limit does not compile, and one that
	// recurses fails its renders: neither is replaced by a built-in.
	_, err = FromGGUF(metadata(t, map[string]any{KeyTemplate: strings.Repeat(" ", MaxSourceBytes+1) + "x",
		"tokenizer.ggml.model": "llama"}), "llama")
	require.True(t, errors.As(err, &ce), "a template over MaxSourceBytes: %v", err)
	var le *LimitError
	assert.True(t, errors.As(err, &le))
	tmpl, err := FromGGUF(metadata(t, map[string]any{KeyTemplate: `{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}`,
		"tokenizer.ggml.model": "llama"}), "llama")
	require.NoError(t, err)
	assert.Equal(t, KeyTemplate, tmpl.Name())
	_, err = tmpl.Render(context.Background(), withSystem, RenderOptions{})
	var te *TemplateError
	require.True(t, errors.As(err, &te), "got %v", err)
	assert.Equal(t, KeyTemplate, te.Template)

	_, err = FromGGUF(nil, "llama")
	assert.Error(t, err)
}

func TestBuiltins(t *testing.T) {
	opts := RenderOptions{AddGenerationPrompt: true, BOSToken: "<s>", EOSToken: "</s>"}
	tests := []struct {
		name string
		msgs []Message
		opts RenderOptions
		want string
	}{
		{"chatml", withSystem, opts,
			"<|im_start|>system\nYou are terse.<|im_end|>\n" +
				"<|im_start|>user\nHello!<|im_end|>\n" +
				"<|im_start|>assistant\nHi there.<|im_end|>\n" +
				"<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
				"<|im_start|>assistant\n"},
		{"chatml", withoutSystem[:1], RenderOptions{}, "<|im_start|>user\nHello!<|im_end|>\n"},
		{"llama2", withSystem, opts,
			"<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama2", []Message{{Role: "user", Content: "  padded  "}}, opts, "<s>[INST] padded [/INST]"},
		{"llama3", withSystem, RenderOptions{AddGenerationPrompt: true, BOSToken: "<|begin_of_text|>"},
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"plain", withSystem, opts,
			"system: You are terse.\nuser: Hello!\nassistant: Hi there.\nuser: What is 2+2?\nassistant:"},
		{"plain", withSystem[:2], RenderOptions{}, "system: You are terse.\nuser: Hello!\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := Builtin(tt.name)
			require.NoError(t, err)
			assert.Equal(t, tt.name, tmpl.Name())
			got, err := tmpl.Render(context.Background(), tt.msgs, tt.opts)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	// Llama 2 cannot express two user turns in a row.
	tmpl, err := Builtin("llama2")
	require.NoError(t, err)
	_, err = tmpl.Render(context.Background(), []Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}}, opts)
	var te *TemplateError
	require.True(t, errors.As(err, &te), "got %v", err)
	assert.Equal(t, "llama2", te.Template)

	_, err = Builtin("vicuna")
	assert.ErrorIs(t, err, ErrUnknownBuiltin)
}
