package chat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ardanlabs/jinja"
)

// How a render is bounded: instrument (instrument.go) rewrites a template
// so that it calls back into a per-render guard at every loop iteration,
// macro call, assignment and output, and the guard fails the render as
// soon as a limit is broken or its context is done. ardanlabs/jinja has
// no such hooks of its own, and cannot be interrupted otherwise: a render
// runs on the caller's goroutine, so that nothing of it goes on after
// Render has returned.

// Default limits, used for the zero fields of Limits.
const (
	// DefaultMaxDepth allows macros nested 100 calls deep: real templates
	// recurse, if at all, to render nested JSON schemas, a few levels.
	DefaultMaxDepth = 100
	// DefaultMaxSteps allows a million loop iterations and macro calls
	// in all: a 1,000-message conversation looped over twice by nested
	// loops stays within it, and it takes the engine about a second.
	DefaultMaxSteps = 1 << 20
	// DefaultMaxOutput is 32 MiB: a prompt that fills a 128K-token context
	// is about 512 KiB of text, and the server accepts bodies of 8 MiB.
	DefaultMaxOutput = 32 << 20
	// DefaultTimeout is 5 s; real templates render in well under 10 ms.
	DefaultTimeout = 5 * time.Second
)

// Bounds checked when a template is compiled.
const (
	// MaxSourceBytes bounds the size of a template source: real ones are
	// at most some tens of KiB, and a single expression's evaluation
	// (which no callback interrupts) is bounded by its length.
	MaxSourceBytes = 256 << 10
	// MaxNesting bounds how deep brackets nest within a tag and block
	// statements (if, for, macro, ...) nest within each other: the
	// engine's parser recurses on both.
	MaxNesting = 64
)

// Limits bound the work of one Render. A zero field means its default
// (DefaultMaxDepth, ...); there is no way to turn a limit off.
type Limits struct {
	// MaxDepth bounds how many macro calls may be in progress at once.
	MaxDepth int
	// MaxSteps bounds the loop iterations plus macro calls of a render,
	// and the length of a range().
	MaxSteps int
	// MaxOutput bounds the bytes the template writes, counting every
	// output statement each time it runs, inside macros, call blocks and
	// {% set %} blocks too. It also bounds the size of any value a
	// {% set %} assigns or a macro receives, as printed.
	MaxOutput int
	// Timeout bounds the time a render may take, besides the deadline of
	// the context passed to Render.
	Timeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = DefaultMaxSteps
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = DefaultMaxOutput
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	return l
}

// LimitError reports a template that broke one of the bounds of this
// package: a field of Limits while rendering (Render returns it wrapped
// in a *TemplateError), or MaxSourceBytes or MaxNesting while compiling
// (wrapped in an *Error).
type LimitError struct {
	// Limit names the bound: "MaxDepth", "MaxSteps", "MaxOutput",
	// "Timeout", "MaxSourceBytes" or "MaxNesting".
	Limit string
	// Max is the bound's value (nanoseconds for Timeout).
	Max int64
	// What says what the template did, e.g. "macro calls nested deeper
	// than 100".
	What string
}

func (e *LimitError) Error() string { return fmt.Sprintf("%s (limit %s)", e.What, e.Limit) }

// ErrSelfReference is matched (errors.Is) by the error of a render that
// set a namespace attribute to a value containing the namespace: such a
// value has no end, and printing or comparing it would not return.
var ErrSelfReference = errors.New("a namespace attribute set to a value that contains the namespace")

// maxValueDepth bounds the nesting of the values a guard measures, as
// maxDepth does for Extra values: the engine prints, compares and encodes
// values recursively.
const maxValueDepth = maxDepth

// Names of the callbacks instrument writes into a template. No template
// may use the prefix (compiling rejects it), so that none can redefine
// them.
const (
	hookPrefix = "__m40llm_"
	hookOut    = hookPrefix + "out"   // hookOut(v) counts v's output, returns v
	hookStep   = hookPrefix + "step"  // at the start of each loop iteration
	hookEnter  = hookPrefix + "enter" // hookEnter(params...) at the start of a macro body
	hookLeave  = hookPrefix + "leave" // at its end
	hookVal    = hookPrefix + "val"   // hookVal(v[, ns]) checks a value set (into ns)
	// hookToJSON replaces the tojson filter (see tojson.go).
	hookToJSON = hookPrefix + "tojson"
)

// guard holds the state of one render's limits. A render runs on one
// goroutine, so the guard needs no locking. Its first failure sticks:
// every later callback returns it again, and Render reports it even if
// the engine dropped the error on the way (it ignores errors in slice
// bounds, for one).
type guard struct {
	ctx      context.Context
	lim      Limits
	deadline time.Time
	steps    int
	depth    int
	output   int
	err      error
}

func newGuard(ctx context.Context, lim Limits) *guard {
	lim = lim.withDefaults()
	return &guard{ctx: ctx, lim: lim, deadline: time.Now().Add(lim.Timeout)}
}

func (g *guard) fail(err error) error {
	if g.err == nil {
		g.err = err
	}
	return g.err
}

// check fails once the context is done or the time is up.
func (g *guard) check() error {
	if g.err != nil {
		return g.err
	}
	if err := g.ctx.Err(); err != nil {
		return g.fail(err)
	}
	if time.Now().After(g.deadline) {
		return g.fail(&LimitError{Limit: "Timeout", Max: int64(g.lim.Timeout),
			What: fmt.Sprintf("rendering took longer than %v", g.lim.Timeout)})
	}
	return nil
}

// step counts a loop iteration or a macro call.
func (g *guard) step() error {
	if err := g.check(); err != nil {
		return err
	}
	g.steps++
	if g.steps > g.lim.MaxSteps {
		return g.fail(&LimitError{Limit: "MaxSteps", Max: int64(g.lim.MaxSteps),
			What: fmt.Sprintf("more than %d loop iterations and macro calls", g.lim.MaxSteps)})
	}
	return nil
}

// measure returns the printed size of v, or an error once it exceeds
// budget bytes or nests deeper than maxValueDepth, or, when ns is not
// nil, when v contains ns. It visits each part of v at most once per
// byte of budget, so shared parts (a list holding one list twice, twenty
// times over) cannot make it slow.
func (g *guard) measure(v jinja.Value, budget int, ns *jinja.Dict, what string) (int, error) {
	n := 0
	var walk func(v jinja.Value, depth int) error
	walk = func(v jinja.Value, depth int) error {
		if depth > maxValueDepth {
			return g.fail(&LimitError{Limit: "MaxNesting", Max: maxValueDepth,
				What: fmt.Sprintf("%s nested deeper than %d", what, maxValueDepth)})
		}
		switch {
		case v.IsString():
			n += len(v.AsString()) + 2
		case v.IsList():
			n += 2
			for _, item := range v.AsList().Items {
				n += 2
				if n > budget {
					break
				}
				if err := walk(item, depth+1); err != nil {
					return err
				}
			}
		case v.IsDict():
			d := v.AsDict()
			if d == ns {
				return g.fail(ErrSelfReference)
			}
			n += 2
			for _, k := range d.Keys {
				n += len(k) + 6
				if n > budget {
					break
				}
				if err := walk(d.Data[k], depth+1); err != nil {
					return err
				}
			}
		default:
			n += 24 // a number, a boolean, None
		}
		if n > budget {
			return g.fail(&LimitError{Limit: "MaxOutput", Max: int64(g.lim.MaxOutput),
				What: fmt.Sprintf("%s larger than %d bytes", what, g.lim.MaxOutput)})
		}
		return nil
	}
	err := walk(v, 0)
	return n, err
}

// callbacks returns the template variables of the guard's callbacks, and
// a range() bounded by MaxSteps in place of the engine's.
func (g *guard) callbacks() map[string]jinja.Value {
	empty := jinja.NewString("")
	return map[string]jinja.Value{
		hookOut: jinja.NewCallable(hookOut, func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if g.err != nil {
				return jinja.Undefined(), g.err
			}
			if len(args) != 1 {
				return jinja.Undefined(), errors.New("output of several values")
			}
			v := args[0]
			if v.IsString() {
				g.output += len(v.AsString())
			} else {
				n, err := g.measure(v, g.lim.MaxOutput-g.output, nil, "an output")
				if err != nil {
					return jinja.Undefined(), err
				}
				g.output += n
			}
			if g.output > g.lim.MaxOutput {
				return jinja.Undefined(), g.fail(&LimitError{Limit: "MaxOutput", Max: int64(g.lim.MaxOutput),
					What: fmt.Sprintf("output of more than %d bytes", g.lim.MaxOutput)})
			}
			return v, nil
		}),
		hookStep: jinja.NewCallable(hookStep, func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
			return empty, g.step()
		}),
		hookEnter: jinja.NewCallable(hookEnter, func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if err := g.step(); err != nil {
				return jinja.Undefined(), err
			}
			g.depth++
			if g.depth > g.lim.MaxDepth {
				return jinja.Undefined(), g.fail(&LimitError{Limit: "MaxDepth", Max: int64(g.lim.MaxDepth),
					What: fmt.Sprintf("macro calls nested deeper than %d", g.lim.MaxDepth)})
			}
			for _, a := range args {
				if _, err := g.measure(a, g.lim.MaxOutput, nil, "a macro argument"); err != nil {
					return jinja.Undefined(), err
				}
			}
			return empty, nil
		}),
		hookLeave: jinja.NewCallable(hookLeave, func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
			g.depth--
			return empty, g.err
		}),
		hookVal: jinja.NewCallable(hookVal, func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if err := g.check(); err != nil {
				return jinja.Undefined(), err
			}
			if len(args) == 0 {
				return jinja.Undefined(), nil
			}
			var ns *jinja.Dict
			if len(args) > 1 && args[1].IsDict() {
				ns = args[1].AsDict()
			}
			if _, err := g.measure(args[0], g.lim.MaxOutput, ns, "a value set"); err != nil {
				return jinja.Undefined(), err
			}
			return args[0], nil
		}),
		"range": jinja.NewCallable("range", g.rangeFn),
	}
}

// rangeFn is the engine's range() with its length bounded by MaxSteps:
// the engine builds the whole list before the loop starts.
func (g *guard) rangeFn(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if err := g.check(); err != nil {
		return jinja.Undefined(), err
	}
	var start, stop, step int64 = 0, 0, 1
	switch len(args) {
	case 1:
		stop = toInt(args[0])
	case 2:
		start, stop = toInt(args[0]), toInt(args[1])
	case 3:
		start, stop, step = toInt(args[0]), toInt(args[1]), toInt(args[2])
	default:
		return jinja.Undefined(), fmt.Errorf("range: expected 1-3 arguments, got %d", len(args))
	}
	if step == 0 {
		return jinja.Undefined(), errors.New("range: step must not be zero")
	}
	// The number of items, in uint64 so that no difference overflows.
	var span, by uint64
	switch {
	case step > 0 && stop > start:
		span, by = uint64(stop)-uint64(start), uint64(step)
	case step < 0 && stop < start:
		span, by = uint64(start)-uint64(stop), -uint64(step)
	}
	count := span / max(by, 1)
	if span%max(by, 1) != 0 {
		count++
	}
	if count > uint64(g.lim.MaxSteps) {
		return jinja.Undefined(), g.fail(&LimitError{Limit: "MaxSteps", Max: int64(g.lim.MaxSteps),
			What: fmt.Sprintf("a range of %d items, more than %d", count, g.lim.MaxSteps)})
	}
	items := make([]jinja.Value, count)
	for i := range items {
		items[i] = jinja.NewInt(start + int64(i)*step)
	}
	return jinja.NewList(items), nil
}

// toInt converts a range() argument as the engine does.
func toInt(v jinja.Value) int64 {
	switch {
	case v.IsInt():
		return v.AsInt()
	case v.IsFloat():
		return int64(v.AsFloat())
	case v.IsBool():
		if v.AsBool() {
			return 1
		}
		return 0
	case v.IsString():
		var n int64
		fmt.Sscanf(v.AsString(), "%d", &n)
		return n
	}
	return 0
}
