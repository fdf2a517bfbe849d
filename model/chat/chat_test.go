package chat

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// corpusTemplate is one line of chat-templates.jsonl.
type corpusTemplate struct {
	family string
	nth    int // occurrence of the family, from 0, in file order
	src    string
}

func (c corpusTemplate) name() string { return fmt.Sprintf("%s#%d", c.family, c.nth) }

// loadCorpus reads the real templates of the shared test data (see
// fixture.Shared for what happens when they are missing).
func loadCorpus(t *testing.T) []corpusTemplate {
	t.Helper()
	f, err := os.Open(fixture.Shared(t, "templates/chat-templates.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	var out []corpusTemplate
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]string
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
		require.Len(t, line, 1)
		for family, src := range line {
			out = append(out, corpusTemplate{family, seen[family], src})
			seen[family]++
		}
	}
	require.NoError(t, sc.Err())
	return out
}

func find(t *testing.T, corpus []corpusTemplate, name string) corpusTemplate {
	t.Helper()
	for _, c := range corpus {
		if c.name() == name {
			return c
		}
	}
	t.Fatalf("template %s not in the corpus", name)
	return corpusTemplate{}
}

var (
	withSystem = []Message{
		{Role: "system", Content: "You are terse."},
		{Role: "user", Content: "Hello!"},
		{Role: "assistant", Content: "Hi there."},
		{Role: "user", Content: "What is 2+2?"},
	}
	withoutSystem = withSystem[1:]
	baseOptions   = RenderOptions{AddGenerationPrompt: true, BOSToken: "<s>", EOSToken: "</s>"}
)

// raised extracts the literal messages a template passes to
// raise_exception.
var raiseCall = regexp.MustCompile(`raise_exception\(\s*(?:'([^']*)'|"([^"]*)")\s*\)`)

func raised(src string) []string {
	var msgs []string
	for _, m := range raiseCall.FindAllStringSubmatch(src, -1) {
		msgs = append(msgs, m[1]+m[2])
	}
	return msgs
}

// TestCorpus renders every real template with a system/user/assistant/user
// conversation. A template may refuse it only through its own
// raise_exception; it must then render the conversation without the
// system message.
func TestCorpus(t *testing.T) {
	corpus := loadCorpus(t)
	require.Len(t, corpus, 35)
	// The templates that refuse a leading system message, read off their
	// sources: Mistral's and Gemma's role checks, and StarCoder2/Magicoder,
	// which reject system messages outright.
	refuses := map[string]bool{
		"mistral-instruct#0": true, "mistral-instruct#1": true, "gemma-instruct#0": true,
		"starcoder2-instruct#0": true, "magicoder#0": true,
	}
	var rendered, refused int
	for _, c := range corpus {
		t.Run(c.name(), func(t *testing.T) {
			tmpl, err := Parse(c.src)
			require.NoError(t, err)
			assert.Equal(t, c.src, tmpl.Source())
			out, err := tmpl.Render(context.Background(), withSystem, baseOptions)
			if !refuses[c.name()] {
				require.NoError(t, err)
				assert.Contains(t, out, "What is 2+2?")
				rendered++
				return
			}
			var te *TemplateError
			require.True(t, errors.As(err, &te), "want *TemplateError, got %v", err)
			assert.Contains(t, raised(c.src), te.Message)
			assert.Equal(t, "custom", te.Template)
			refused++
			out, err = tmpl.Render(context.Background(), withoutSystem, baseOptions)
			require.NoError(t, err)
			assert.Contains(t, out, "What is 2+2?")
		})
	}
	t.Logf("%d templates render the system conversation, %d refuse it with their own message", rendered, refused)
	assert.Equal(t, 30, rendered)
	assert.Equal(t, 5, refused)
}

// TestCorpusExact compares real templates with their published formats,
// written out by hand.
func TestCorpusExact(t *testing.T) {
	corpus := loadCorpus(t)
	const chatqaSystem = "System: This is a chat between a user and an artificial intelligence assistant. " +
		"The assistant gives helpful, detailed, and polite answers to the user's questions based on the context. " +
		"The assistant should also indicate when the answer cannot be found in the context.\n\n"
	tests := []struct {
		template string
		msgs     []Message
		opts     RenderOptions
		want     string
	}{
		{"chatml#4", withSystem, RenderOptions{AddGenerationPrompt: true},
			"<|im_start|>system\nYou are terse.<|im_end|>\n" +
				"<|im_start|>user\nHello!<|im_end|>\n" +
				"<|im_start|>assistant\nHi there.<|im_end|>\n" +
				"<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
				"<|im_start|>assistant\n"},
		{"chatml#4", withoutSystem, RenderOptions{},
			"<|im_start|>user\nHello!<|im_end|>\n" +
				"<|im_start|>assistant\nHi there.<|im_end|>\n" +
				"<|im_start|>user\nWhat is 2+2?<|im_end|>\n"},
		// Qwen-style default system prompt.
		{"chatml#5", withoutSystem, RenderOptions{AddGenerationPrompt: true},
			"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
				"<|im_start|>user\nHello!<|im_end|>\n" +
				"<|im_start|>assistant\nHi there.<|im_end|>\n" +
				"<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
				"<|im_start|>assistant\n"},
		// Llama 2: the system prompt inside the first [INST], every user turn
		// after BOS, answers between spaces and closed by EOS.
		{"llama2-chat#0", withSystem, baseOptions,
			"<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama2-chat#1", withSystem, baseOptions,
			"<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama2-chat#0", withoutSystem, baseOptions,
			"<s>[INST] Hello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama3-instruct#0", withSystem,
			RenderOptions{AddGenerationPrompt: true, BOSToken: "<|begin_of_text|>", EOSToken: "<|eot_id|>"},
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"mistral-instruct#0", withoutSystem, baseOptions,
			"<s>[INST] Hello! [/INST]Hi there.</s>[INST] What is 2+2? [/INST]"},
		{"mistral-instruct#1", withoutSystem, baseOptions,
			"<s>[INST] Hello! [/INST]Hi there.</s> [INST] What is 2+2? [/INST]"},
		{"phi-3#2", withSystem, RenderOptions{AddGenerationPrompt: true, BOSToken: "<s>", EOSToken: "<|endoftext|>"},
			"<s><|system|>\nYou are terse.<|end|>\n" +
				"<|user|>\nHello!<|end|>\n" +
				"<|assistant|>\nHi there.<|end|>\n" +
				"<|user|>\nWhat is 2+2?<|end|>\n" +
				"<|assistant|>\n"},
		// The first Phi-3 template ignores system messages.
		{"phi-3#0", withSystem, baseOptions,
			"<|user|>\nHello!<|end|>\n<|assistant|>\nHi there.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n"},
		{"zephyr#0", withSystem, baseOptions,
			"<|system|>\nYou are terse.</s>\n" +
				"<|user|>\nHello!</s>\n" +
				"<|assistant|>\nHi there.</s>\n" +
				"<|user|>\nWhat is 2+2?</s>\n" +
				"<|assistant|>\n"},
		{"gemma-instruct#0", withoutSystem, RenderOptions{AddGenerationPrompt: true, BOSToken: "<bos>", EOSToken: "<eos>"},
			"<bos><start_of_turn>user\nHello!<end_of_turn>\n" +
				"<start_of_turn>model\nHi there.<end_of_turn>\n" +
				"<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n" +
				"<start_of_turn>model\n"},
		// ChatQA 1.5 mixes literal text with "{%- ... -%}" tags: the blank
		// line after the fixed system text and the space after "User:" and
		// "Assistant:" must survive (ardanlabs/jinja alone drops them).
		{"chatqa#1", withSystem, baseOptions,
			"<s>" + chatqaSystem + "User: Hello!\n\nAssistant: Hi there.\n\nUser: What is 2+2?\n\nAssistant:"},
		// DeepSeek Coder's alpaca layout relies on trim_blocks and
		// lstrip_blocks around indented tags.
		{"alpaca#0", withSystem, baseOptions,
			"<s>You are terse.### Instruction:\nHello!\n### Response:\nHi there.\n<|EOT|>\n" +
				"### Instruction:\nWhat is 2+2?\n### Response:\n"},
		{"starcoder2-instruct#0", withoutSystem, baseOptions,
			"<s>You are an exceptionally intelligent coding assistant that consistently delivers accurate and reliable responses to user instructions.\n\n" +
				"### Instruction\nHello!\n\n### Response\nHi there.</s>\n\n### Instruction\nWhat is 2+2?\n\n### Response\n"},
	}
	for _, tt := range tests {
		t.Run(tt.template, func(t *testing.T) {
			tmpl, err := Parse(find(t, corpus, tt.template).src)
			require.NoError(t, err)
			got, err := tmpl.Render(context.Background(), tt.msgs, tt.opts)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestTemplateError(t *testing.T) {
	tmpl, err := Parse(`{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be "user"') }}{% endif %}ok`)
	require.NoError(t, err)
	_, err = tmpl.Render(context.Background(), withSystem, RenderOptions{})
	var te *TemplateError
	require.True(t, errors.As(err, &te), "got %v", err)
	assert.Equal(t, `first message must be "user"`, te.Message)
	assert.Equal(t, "custom", te.Template)
	out, err := tmpl.Render(context.Background(), withoutSystem, RenderOptions{})
	require.NoError(t, err)
	assert.Equal(t, "ok", out)

	// Other failures are *Error, with the operation.
	_, err = Parse("{{ unclosed")
	var ce *Error
	require.True(t, errors.As(err, &ce), "got %v", err)
	assert.Equal(t, "parse", ce.Op)
	var se *SyntaxError
	require.True(t, errors.As(err, &se))
	assert.Equal(t, 1, se.Line)

	tmpl, err = Parse("{{ messages | nosuchfilter }}")
	if err == nil {
		_, err = tmpl.Render(context.Background(), withSystem, RenderOptions{})
	}
	require.True(t, errors.As(err, &ce), "got %v", err)
	assert.False(t, errors.As(err, &te))
}

// TestWhitespace pins Jinja2's whitespace rules with trim_blocks and
// lstrip_blocks, each expected output worked out from jinja2/lexer.py.
func TestWhitespace(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"marker strips only the adjacent text",
			"a\n\n{% for x in [1] %}{%- if true -%}User: {{ 'v' }}{%- endif %}{% endfor %}", "a\n\nUser: v"},
		{"trim_blocks ignores expressions", "{% if true %}{{ 'x' }}\nfoo{% endif %}", "x\nfoo"},
		{"trim_blocks removes one newline", "{% if true %}\n\nb{% endif %}", "\nb"},
		{"lstrip_blocks at template start", "  {% if true %}\n  b\n  {% endif %}\nc", "  b\nc"},
		{"lstrip_blocks only from line start", "x  {% if true %}y{% endif %}", "x  y"},
		{"lstrip_blocks not after a tag on the line", "{{ 'a' }}  {% if true %}b{% endif %}", "a  b"},
		{"plus opts out of lstrip_blocks", "a\n  {%+ if true %}b{% endif %}", "a\n  b"},
		{"plus opts out of trim_blocks", "{% if true +%}\nb{% endif %}", "\nb"},
		{"lstrip after a consumed newline", "{% if true %}\n  {% if true %}x{% endif %}{% endif %}", "x"},
		{"dash consumes to a space: no line start", "{% if true -%}\n  x {% if true %}y{% endif %}{% endif %}", "x y"},
		{"expressions keep indentation", "a\n  {{ 'b' }}\n", "a\n  b"},
		{"comments strip like blocks", "a\n  {# note #}\nb", "a\nb"},
		{"comment markers", "a {#- c -#} b", "ab"},
		{"expression markers", " \n {{- 'x' -}} \n ", "x"},
		{"one trailing newline dropped", "line\n\n", "line\n"},
		{"CRLF read as LF", "a\r\nb\rc", "a\nb\nc"},
		{"raw", "{% raw %}{{ not a tag }}{% endraw %}", "{{ not a tag }}"},
		{"raw with markers", "{%- raw -%}  x  {%- endraw %}\ny", "xy"},
		{"closers inside strings", `{{ '}}' }}{{ "%}" }}`, "}}%}"},
		{"quotes and backslashes in text", `it's a \ back"slash`, `it's a \ back"slash`},
		{"newline escapes in strings", `{{ 'a\nb' }}`, "a\nb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := Parse(tt.src)
			require.NoError(t, err)
			got, err := tmpl.Render(context.Background(), nil, RenderOptions{})
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestErrorLineNumbers(t *testing.T) {
	// The statement on line 5 follows whitespace that the rules remove;
	// the engine still reports line 5.
	_, err := Parse("a\n{%- if true -%}\n\n\n{% bogus %}{% endif %}")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 5")
}

func TestVariables(t *testing.T) {
	now := time.Date(2025, 3, 5, 14, 7, 9, 0, time.UTC)
	// Llama 3.1/3.2 pick the date like this.
	const dated = `{%- if not date_string is defined %}{%- if strftime_now is defined %}` +
		`{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}` +
		`{%- endif %}{%- endif %}Today Date: {{ date_string }}`
	type tool struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	var weather tool
	weather.Type, weather.Function.Name = "function", "get_weather"
	tests := []struct {
		name, src string
		opts      RenderOptions
		want      string
	}{
		{"strftime_now", dated, RenderOptions{Now: now}, "Today Date: 05 Mar 2025"},
		{"date_string overrides", dated, RenderOptions{Now: now, Extra: map[string]any{"date_string": "01 Jan 2030"}}, "Today Date: 01 Jan 2030"},
		{"tools default to None", "{% if tools is none %}none{% endif %}{% if tools %}some{% endif %}", RenderOptions{}, "none"},
		{"documents default to None", "{{ documents is none }}", RenderOptions{}, "True"},
		{"raw JSON keeps key order", "{{ tools | tojson }}",
			RenderOptions{Extra: map[string]any{"tools": json.RawMessage(`[{"z": 1, "a": [true, null, 2.5, "s"]}]`)}},
			`[{"z": 1, "a": [true, null, 2.5, "s"]}]`},
		{"structs by json tags", "{{ tools[0].function.name }}/{{ tools[0].type }}",
			RenderOptions{Extra: map[string]any{"tools": []tool{weather}}}, "get_weather/function"},
		{"numbers", "{{ n + 1 }} {{ f }}", RenderOptions{Extra: map[string]any{"n": int32(41), "f": 0.5}}, "42 0.5"},
		{"messages replaced", "{{ messages[0].content }}",
			RenderOptions{Extra: map[string]any{"messages": []map[string]string{{"role": "user", "content": "replaced"}}}}, "replaced"},
		{"bos, eos, generation prompt", "{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}",
			RenderOptions{BOSToken: "<s>", EOSToken: "</s>", AddGenerationPrompt: true}, "<s></s>True"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := Parse(tt.src)
			require.NoError(t, err)
			got, err := tmpl.Render(context.Background(), withSystem, tt.opts)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	tmpl, err := Parse("{{ x }}")
	require.NoError(t, err)
	_, err = tmpl.Render(context.Background(), nil, RenderOptions{Extra: map[string]any{"x": func() {}}})
	var ce *Error
	require.True(t, errors.As(err, &ce), "got %v", err)
	assert.Equal(t, "render", ce.Op)
}

func TestStrftime(t *testing.T) {
	at := time.Date(2024, 7, 6, 9, 3, 4, 0, time.UTC)
	tests := []struct{ format, want string }{
		{"%d %b %Y", "06 Jul 2024"},
		{"%-d %B %Y", "6 July 2024"},
		{"%A, %a %e", "Saturday, Sat  6"},
		{"%H:%M:%S %I %p", "09:03:04 09 AM"},
		{"%y-%m-%d %j", "24-07-06 188"},
		{"%F %T %Z %z", "2024-07-06 09:03:04 UTC +0000"},
		{"100%% %q %", "100% %q %"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, strftime(tt.format, at), tt.format)
	}
	assert.Equal(t, "12 PM", strftime("%I %p", time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)))
	assert.Equal(t, "12 AM", strftime("%I %p", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)))
}

// FuzzParse feeds arbitrary sources through the whitespace rules and the
// engine: nothing may panic, and failures must be this package's errors.
func FuzzParse(f *testing.F) {
	for _, src := range builtins {
		f.Add(src)
	}
	f.Add("a\n  {%- if true -%}\n{{ 'x' }}{# c #}{% raw %}{{{% endraw %}\r\n")
	f.Add(`{{ raise_exception("no") }}`)
	f.Fuzz(func(t *testing.T, src string) {
		tmpl, err := Parse(src)
		if err != nil {
			var ce *Error
			require.True(t, errors.As(err, &ce), "%T: %v", err, err)
			return
		}
		_, err = tmpl.Render(context.Background(), withSystem, baseOptions)
		if err != nil {
			var ce *Error
			var te *TemplateError
			require.True(t, errors.As(err, &ce) || errors.As(err, &te), "%T: %v", err, err)
		}
	})
}
