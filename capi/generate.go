package main

/*
#include "capi.h"
*/
import "C"

import (
	"context"
	"errors"
	"math"
	"unsafe"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/sample"
)

// Reasons a generation ended early, returned by emit functions.
var (
	errCallbackStop = errors.New("the callback asked to stop")
	errBufferFull   = errors.New("the text buffer is full")
)

//export capiGenerateParamsInit
func capiGenerateParamsInit(p *C.m40llm_generate_params) (st status) {
	defer recoverPanic(&st)
	if p == nil {
		return failArg(argErrorf("params is NULL"))
	}
	*p = defaultGenerateParams()
	return stOK
}

// defaultGenerateParams is llama.cpp's default sampler (sample.DefaultParams)
// with no token limit.
func defaultGenerateParams() C.m40llm_generate_params {
	d := sample.DefaultParams()
	return C.m40llm_generate_params{
		max_tokens:        -1,
		temperature:       C.float(d.Temperature),
		top_k:             C.int32_t(d.TopK),
		top_p:             C.float(d.TopP),
		min_p:             C.float(d.MinP),
		repeat_penalty:    C.float(d.RepeatPenalty),
		repeat_last_n:     C.int32_t(d.RepeatLastN),
		presence_penalty:  C.float(d.PresencePenalty),
		frequency_penalty: C.float(d.FrequencyPenalty),
		seed:              C.uint64_t(d.Seed),
		add_special:       true,
		parse_special:     true,
	}
}

// genRequest is a checked m40llm_generate call.
type genRequest struct {
	prompt       string
	opts         model.GenerateOptions
	addSpecial   bool
	parseSpecial bool
}

// readGenerateParams converts and checks the prompt and params (NULL: the
// defaults). The sampler checks its own fields (a *sample.ParamError).
func readGenerateParams(prompt *C.char, params *C.m40llm_generate_params) (*genRequest, error) {
	if prompt == nil {
		return nil, argErrorf("prompt is NULL")
	}
	p := defaultGenerateParams()
	if params != nil {
		p = *params
	}
	r := &genRequest{
		prompt:       C.GoString(prompt),
		addSpecial:   bool(p.add_special),
		parseSpecial: bool(p.parse_special),
		opts: model.GenerateOptions{
			MaxTokens: int(p.max_tokens),
			IgnoreEOS: bool(p.ignore_eos),
			Sampling: sample.Params{
				Temperature:      float32(p.temperature),
				TopK:             int(p.top_k),
				TopP:             float32(p.top_p),
				MinP:             float32(p.min_p),
				RepeatPenalty:    float32(p.repeat_penalty),
				RepeatLastN:      int(p.repeat_last_n),
				PresencePenalty:  float32(p.presence_penalty),
				FrequencyPenalty: float32(p.frequency_penalty),
				Seed:             uint64(p.seed),
			},
		},
	}
	if p.n_stop > 0 {
		if p.stop == nil {
			return nil, argErrorf("params: stop is NULL but n_stop is %d", uint64(p.n_stop))
		}
		if uint64(p.n_stop) > 1<<20 {
			return nil, argErrorf("params: n_stop is %d", uint64(p.n_stop))
		}
		for i, s := range unsafe.Slice(p.stop, int(p.n_stop)) {
			if s == nil {
				return nil, argErrorf("params: stop[%d] is NULL", i)
			}
			r.opts.Stop = append(r.opts.Stop, C.GoString(s))
		}
	}
	if _, err := sample.New(r.opts.Sampling); err != nil {
		return nil, err
	}
	return r, nil
}

// generate runs one generation on s through the model's engine, sending
// text to emit on the calling thread. Generations of other sessions of the
// model running at the same time share the engine's steps. It returns the
// result (never nil) and the finish reason; an emit error stops the
// generation (within one step) with errCallbackStop or errBufferFull,
// which are not failures.
func (s *session) generate(r *genRequest, emit func(string) error) (*model.Result, C.int32_t, error) {
	s.logits = false
	m := s.m.m
	ids := m.Tokenizer.Encode(r.prompt, r.addSpecial, r.parseSpecial)
	if len(ids) == 0 {
		return &model.Result{}, C.M40LLM_FINISH_NONE, argErrorf("the prompt is empty after tokenization")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j, err := s.m.eng.Submit(ctx, &model.Request{Prompt: ids, Options: r.opts, Session: s.s, Paced: true})
	if err != nil {
		return &model.Result{PromptTokens: len(ids)}, C.M40LLM_FINISH_NONE, err
	}
	// Read to the end even after a stop: the session is the engine's until
	// the job has ended.
	var stop error
	for {
		pieces, done, res, err := j.Next(context.Background())
		for _, p := range pieces {
			if stop == nil {
				if stop = emit(p); stop != nil {
					cancel()
				}
			}
		}
		if !done {
			continue
		}
		switch {
		case errors.Is(stop, errCallbackStop):
			return res, C.M40LLM_FINISH_CALLBACK, nil
		case stop != nil:
			return res, C.M40LLM_FINISH_LENGTH, stop
		case err != nil:
			return res, C.M40LLM_FINISH_NONE, err
		case res.Finish == model.FinishStop:
			return res, C.M40LLM_FINISH_STOP, nil
		case res.Finish == model.FinishLength:
			return res, C.M40LLM_FINISH_LENGTH, nil
		}
		return res, C.M40LLM_FINISH_NONE, nil
	}
}

// fillResult writes res to out (which may be NULL).
func fillResult(out *C.m40llm_generate_result, res *model.Result, finish C.int32_t) {
	if out == nil {
		return
	}
	finite := func(v float64) C.double {
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return 0
		}
		return C.double(v)
	}
	*out = C.m40llm_generate_result{
		n_prompt_tokens:          C.int32_t(res.PromptTokens),
		n_cached_tokens:          C.int32_t(res.CachedTokens),
		n_generated:              C.int32_t(len(res.Tokens)),
		finish_reason:            finish,
		prompt_seconds:           C.double(res.PromptTime.Seconds()),
		generate_seconds:         C.double(res.GenTime.Seconds()),
		prompt_tokens_per_second: finite(res.PromptTokensPerSecond()),
		tokens_per_second:        finite(res.TokensPerSecond()),
	}
}

//export capiGenerate
func capiGenerate(h C.uintptr_t, prompt *C.char, params *C.m40llm_generate_params, cb C.m40llm_text_callback, user unsafe.Pointer, result *C.m40llm_generate_result) (st status) {
	defer recoverPanic(&st)
	fillResult(result, &model.Result{}, C.M40LLM_FINISH_NONE)
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	defer s.busy.Store(false)
	r, err := readGenerateParams(prompt, params)
	if err != nil {
		return failArg(err)
	}
	var buf []byte // the text and a NUL, for the callback
	emit := func(text string) error {
		if cb == nil {
			return nil
		}
		buf = append(append(buf[:0], text...), 0)
		if C.capi_call_text(cb, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(text)), user) != 0 {
			return errCallbackStop
		}
		return nil
	}
	res, finish, err := s.generate(r, emit)
	fillResult(result, res, finish)
	return failArg(err)
}

//export capiGenerateText
func capiGenerateText(h C.uintptr_t, prompt *C.char, params *C.m40llm_generate_params, text *C.char, capacity C.size_t, textLen *C.size_t, result *C.m40llm_generate_result) (st status) {
	defer recoverPanic(&st)
	fillResult(result, &model.Result{}, C.M40LLM_FINISH_NONE)
	s, err := useSession(h)
	if err != nil {
		return failArg(err)
	}
	defer s.busy.Store(false)
	switch {
	case text == nil:
		return failArg(argErrorf("text is NULL"))
	case capacity == 0:
		return failArg(argErrorf("capacity is 0; the buffer needs room for the NUL at least"))
	case textLen == nil:
		return failArg(argErrorf("text_len is NULL"))
	}
	*textLen = 0
	*text = 0
	r, err := readGenerateParams(prompt, params)
	if err != nil {
		return failArg(err)
	}
	// Writes go straight to the caller's buffer, whole pieces at a time.
	n := 0
	emit := func(piece string) error {
		if uint64(n+len(piece)) >= uint64(capacity) {
			return errBufferFull
		}
		dst := unsafe.Slice((*byte)(unsafe.Pointer(text)), n+len(piece)+1)
		copy(dst[n:], piece)
		n += len(piece)
		dst[n] = 0
		return nil
	}
	res, finish, err := s.generate(r, emit)
	*textLen = C.size_t(n)
	fillResult(result, res, finish)
	if errors.Is(err, errBufferFull) {
		return failArg(errorf(stBufferTooSmall, "generate_text: the text outgrew the %d-byte buffer after %d bytes; generation stopped there", uint64(capacity), n))
	}
	return failArg(err)
}
