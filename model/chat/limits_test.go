package chat

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ardanlabs/jinja"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRenderLimits renders templates that would otherwise never end, or
// end the process: each must fail, fast, with a *TemplateError wrapping
// the *LimitError of the limit it broke.
func TestRenderLimits(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		lim   Limits
		limit string
	}{
		// The stack overflow of a macro that calls itself kills the
		// process ("goroutine stack exceeds 1000000000-byte limit").
		{"recursion", `{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}`, Limits{}, "MaxDepth"},
		{"recursion through caller", `{% macro f() %}{% call f() %}x{% endcall %}{% endmacro %}{{ f() }}`, Limits{}, "MaxDepth"},
		// Nested loops (10^10 iterations with range(100000) used to run
		// for minutes; here 10^6, each range within the bound). The step
		// bound is set below the default (2^20) so that it, not the 5 s
		// timeout, trips on a slow machine (the race detector on two busy
		// cores takes about 5 µs a step).
		{"nested loops", `{% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}`,
			Limits{MaxSteps: 1 << 16}, "MaxSteps"},
		{"calls that branch", `{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}`,
			Limits{MaxSteps: 1 << 16}, "MaxSteps"},
		// The engine's range builds its whole list first: 24 GB here.
		{"huge range", `{% for i in range(10**9) %}{% endfor %}`, Limits{}, "MaxSteps"},
		{"output", `{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}`, Limits{}, "MaxOutput"},
		{"output in a set block", `{% for i in range(100) %}{% set b %}{{ 'x' * 1000000 }}{% endset %}{% endfor %}`,
			Limits{}, "MaxOutput"},
		{"a value doubled by set", `{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}`,
			Limits{}, "MaxOutput"},
		{"an argument doubled by calls", `{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ f('x', 60) }}`,
			Limits{}, "MaxOutput"},
		{"a list nested by set", `{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}{% endfor %}`,
			Limits{}, "MaxNesting"},
		{"timeout", `{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}`,
			Limits{MaxSteps: 1 << 40, Timeout: 50 * time.Millisecond}, "Timeout"},
		{"own MaxDepth", `{% macro f(n) %}{% if n %}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(5) }}`, Limits{MaxDepth: 5}, "MaxDepth"},
		{"own MaxOutput", `{{ 'x' * 11 }}`, Limits{MaxOutput: 10}, "MaxOutput"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := Parse(tt.src)
			require.NoError(t, err)
			start := time.Now()
			opts := baseOptions
			opts.Limits = tt.lim
			_, err = tmpl.Render(context.Background(), withSystem, opts)
			assert.Less(t, time.Since(start), 5*time.Second)
			var te *TemplateError
			require.True(t, errors.As(err, &te), "want *TemplateError, got %v", err)
			var le *LimitError
			require.True(t, errors.As(err, &le), "want *LimitError, got %v", err)
			assert.Equal(t, tt.limit, le.Limit)
			assert.Equal(t, "custom", te.Template)
			assert.Contains(t, te.Message, "render limit")
			assert.Contains(t, te.Message, tt.limit)
		})
	}

	// Within the limits, the same constructs render.
	tmpl, err := Parse(`{% macro f(n) %}{% if n %}{{ n }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(5) }}`)
	require.NoError(t, err)
	out, err := tmpl.Render(context.Background(), nil, RenderOptions{Limits: Limits{MaxDepth: 6}})
	require.NoError(t, err)
	assert.Equal(t, "54321", out)
}

// TestSelfReference: a namespace that contains itself has no end; printing
// it used to overflow the stack.
func TestSelfReference(t *testing.T) {
	for _, src := range []string{
		`{% set ns = namespace() %}{% set ns.me = ns %}{{ ns | tojson }}`,
		`{% set a = namespace() %}{% set b = namespace(a=a) %}{% set a.b = [b] %}{{ a }}`,
	} {
		tmpl, err := Parse(src)
		require.NoError(t, err)
		_, err = tmpl.Render(context.Background(), nil, RenderOptions{})
		var te *TemplateError
		require.True(t, errors.As(err, &te), "%s: got %v", src, err)
		assert.ErrorIs(t, err, ErrSelfReference)
	}
}

// TestRenderStopsWithContext: a render within its limits but long stops
// as soon as its context is done, and says so with the context's error.
func TestRenderStopsWithContext(t *testing.T) {
	tmpl, err := Parse(`{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}`)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = tmpl.Render(ctx, withSystem, RenderOptions{Limits: Limits{MaxSteps: 1 << 40, Timeout: time.Hour}})
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorIs(t, err, context.Canceled)
	var ce *Error
	require.True(t, errors.As(err, &ce), "got %v", err)
	assert.Equal(t, "render", ce.Op)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = tmpl.Render(ctx, withSystem, RenderOptions{Limits: Limits{MaxSteps: 1 << 40, Timeout: time.Hour}})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, errors.As(err, new(*TemplateError)), "the caller's deadline is not a template limit")
}

// TestCompileLimits: what no render-time check can bound is refused when
// the template is compiled.
func TestCompileLimits(t *testing.T) {
	deep := MaxNesting + 1
	tests := []struct {
		name, src string
		limit     string // the *LimitError's, or "" for a *SyntaxError
		msg       string
	}{
		{"source size", strings.Repeat("x", MaxSourceBytes+1), "MaxSourceBytes", "bytes"},
		{"brackets", "{{ " + strings.Repeat("(", deep) + "1" + strings.Repeat(")", deep) + " }}", "MaxNesting", "line 1: brackets"},
		{"blocks", "a\n" + strings.Repeat("{% if true %}", deep) + strings.Repeat("{% endif %}", deep), "MaxNesting", "line 2: blocks"},
		{"append", "{% set l = [] %}\n{{ l.append(l) }}{{ l }}", "", "append() is not supported"},
		{"insert", "{% set l = [] %}{% set _ = l . insert(0, l) %}", "", "insert() is not supported"},
		{"update", "{% set d = {} %}{% set f = d.update %}", "", "update() is not supported"},
		{"reserved prefix", "{{ __m40llm_out }}", "", "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.src)
			var ce *Error
			require.True(t, errors.As(err, &ce), "got %v", err)
			assert.Equal(t, "parse", ce.Op)
			assert.Contains(t, err.Error(), tt.msg)
			var le *LimitError
			var se *SyntaxError
			if tt.limit != "" {
				require.True(t, errors.As(err, &le), "got %v", err)
				assert.Equal(t, tt.limit, le.Limit)
			} else {
				require.True(t, errors.As(err, &se), "got %v", err)
			}
		})
	}

	// At the limits, and with the method names inside strings, templates
	// compile.
	ok := []string{
		strings.Repeat("{% if true %}", MaxNesting) + "x" + strings.Repeat("{% endif %}", MaxNesting),
		"{{ " + strings.Repeat("(", MaxNesting) + "'x.append(y)'" + strings.Repeat(")", MaxNesting) + " }}",
		`{{ "d.update(e)" ~ 'it\'s l.insert' }}{{ messages | length }}`,
	}
	for _, src := range ok {
		tmpl, err := Parse(src)
		require.NoError(t, err, src)
		_, err = tmpl.Render(context.Background(), withSystem, RenderOptions{})
		require.NoError(t, err, src)
	}
}

// plainParse compiles src without the calls of the guard, as the package
// did before it bounded renders.
func plainParse(t *testing.T, src string) *Template {
	t.Helper()
	norm, err := normalize(src, false)
	require.NoError(t, err)
	tmpl, err := jinja.Compile(norm)
	require.NoError(t, err)
	return &Template{name: "custom", src: src, tmpl: tmpl}
}

// TestInstrumentedCorpus: the calls that bound a render change nothing in
// what the real templates and the built-ins write.
func TestInstrumentedCorpus(t *testing.T) {
	srcs := map[string]string{}
	for _, c := range loadCorpus(t) {
		srcs[c.name()] = c.src
	}
	for name, src := range builtins {
		srcs["builtin "+name] = src
	}
	convs := map[string][]Message{
		"with system":    withSystem,
		"without system": withoutSystem,
		"one user turn":  withoutSystem[:1],
		"padded, quoted": {{Role: "user", Content: "  it's \"quoted\" {{ x }} {% if %}\n\n"}, {Role: "assistant", Content: " \tok\n"}, {Role: "user", Content: "</s><|im_end|>"}},
	}
	for name, src := range srcs {
		t.Run(name, func(t *testing.T) {
			tmpl, err := Parse(src)
			require.NoError(t, err)
			plain := plainParse(t, src)
			for cname, msgs := range convs {
				for _, agp := range []bool{false, true} {
					opts := baseOptions
					opts.AddGenerationPrompt = agp
					want, wantErr := plain.Render(context.Background(), msgs, opts)
					got, err := tmpl.Render(context.Background(), msgs, opts)
					assert.Equal(t, wantErr, err, cname)
					assert.Equal(t, want, got, cname)
				}
			}
		})
	}
}
