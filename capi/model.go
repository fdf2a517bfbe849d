package main

/*
#include "capi.h"
*/
import "C"

import (
	"errors"
	"math"
	"runtime"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
)

// loadedModel is the object behind an m40llm_model handle.
type loadedModel struct {
	guard
	m *model.Model
	// eng runs the generations of every session of the model, so that
	// sessions generating from several threads at once share each step.
	eng  *model.Engine
	busy []bool // KV-cache slots held by sessions; under guard.mu
	live int    // sessions alive; under guard.mu
}

// enterModel looks up handle h and registers a call on it; call m.exit
// when done.
func enterModel(h C.uintptr_t) (*loadedModel, error) {
	m, err := lookup[*loadedModel](h, "model")
	if err != nil {
		return nil, err
	}
	if err := m.enter("model"); err != nil {
		return nil, err
	}
	return m, nil
}

//export capiModelParamsInit
func capiModelParamsInit(p *C.m40llm_model_params) (st status) {
	defer recoverPanic(&st)
	if p == nil {
		return failArg(argErrorf("params is NULL"))
	}
	*p = defaultModelParams()
	return stOK
}

func defaultModelParams() C.m40llm_model_params {
	return C.m40llm_model_params{backend: C.M40LLM_BACKEND_AUTO}
}

// checkModelParams refuses negative sizes.
func checkModelParams(p *C.m40llm_model_params) error {
	for _, f := range []struct {
		name string
		v    C.int32_t
	}{{"device", p.device}, {"n_ctx", p.n_ctx}, {"n_sessions", p.n_sessions}, {"n_batch", p.n_batch}, {"n_threads", p.n_threads}} {
		if f.v < 0 {
			return argErrorf("model params: %s is %d; want 0 or more", f.name, int32(f.v))
		}
	}
	if int(p.n_threads) > cpu.MaxThreads() {
		return argErrorf("model params: n_threads is %d; want at most %d (4 times the %d CPUs)", int32(p.n_threads), cpu.MaxThreads(), runtime.NumCPU())
	}
	return nil
}

//export capiModelLoad
func capiModelLoad(path *C.char, params *C.m40llm_model_params, out *C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	p := defaultModelParamsEx()
	if params != nil {
		p.base = *params
	}
	if p.base.backend != C.M40LLM_BACKEND_CPU {
		p.n_gpu_layers = math.MaxInt32 // as before m40llm_model_load_ex: every layer on the GPU
	}
	return loadModel(path, &p, out)
}

//export capiModelParamsExInit
func capiModelParamsExInit(p *C.m40llm_model_params_ex) (st status) {
	defer recoverPanic(&st)
	if p == nil {
		return failArg(argErrorf("params is NULL"))
	}
	*p = defaultModelParamsEx()
	return stOK
}

func defaultModelParamsEx() C.m40llm_model_params_ex {
	return C.m40llm_model_params_ex{size: C.uint32_t(C.sizeof_m40llm_model_params_ex), base: defaultModelParams(),
		type_k: C.M40LLM_CACHE_F16, type_v: C.M40LLM_CACHE_F16, n_gpu_layers: -1}
}

//export capiModelLoadEx
func capiModelLoadEx(path *C.char, params *C.m40llm_model_params_ex, out *C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	switch {
	case params == nil:
		return failArg(argErrorf("params is NULL"))
	case params.size != C.sizeof_m40llm_model_params_ex:
		return failArg(argErrorf("model params: size %d; this library knows m40llm_model_params_ex of %d bytes (set it with m40llm_model_params_ex_init)",
			uint32(params.size), C.sizeof_m40llm_model_params_ex))
	}
	p := *params
	return loadModel(path, &p, out)
}

// cacheTypes maps m40llm_cache_type to model.CacheType.
var cacheTypes = map[C.int32_t]model.CacheType{
	C.M40LLM_CACHE_F16: model.CacheF16, C.M40LLM_CACHE_F32: model.CacheF32,
	C.M40LLM_CACHE_Q8_0: model.CacheQ8_0, C.M40LLM_CACHE_Q4_0: model.CacheQ4_0,
}

// loadModel loads the model at path as p says and sets *out to its handle.
func loadModel(path *C.char, p *C.m40llm_model_params_ex, out *C.uintptr_t) status {
	switch {
	case out == nil:
		return failArg(argErrorf("model (the result pointer) is NULL"))
	case path == nil:
		return failArg(argErrorf("path is NULL"))
	}
	if err := checkModelParams(&p.base); err != nil {
		return failArg(err)
	}
	typeK, okK := cacheTypes[p.type_k]
	typeV, okV := cacheTypes[p.type_v]
	switch {
	case !okK || !okV:
		return failArg(argErrorf("model params: type_k %d, type_v %d: want m40llm_cache_type values (0 to 3)", int32(p.type_k), int32(p.type_v)))
	case p.n_gpu_layers < -1:
		return failArg(argErrorf("model params: n_gpu_layers %d: want -1 (as many as fit) or 0 and more", int32(p.n_gpu_layers)))
	case p.base.backend == C.M40LLM_BACKEND_CPU && p.n_gpu_layers > 0:
		return failArg(argErrorf("model params: n_gpu_layers %d with backend CPU", int32(p.n_gpu_layers)))
	}
	opts := model.Options{
		CtxSize:    int(p.base.n_ctx),
		Slots:      int(p.base.n_sessions),
		BatchSize:  int(p.base.n_batch),
		CacheTypeK: typeK,
		CacheTypeV: typeV,
	}
	be, err := newBackend(C.GoString(path), p, opts)
	if err != nil {
		return fail(err, stInternal)
	}
	m, err := model.Load(C.GoString(path), be, opts)
	if err != nil {
		be.Close()
		return fail(err, stInternal)
	}
	lm := &loadedModel{m: m, eng: model.NewEngine(m, model.EngineOptions{}), busy: make([]bool, m.Slots())}
	h, err := newHandle(lm)
	if err != nil {
		lm.eng.Close()
		return fail(errors.Join(err, m.Close()), stInternal)
	}
	*out = h
	return stOK
}

//export capiModelFree
func capiModelFree(h C.uintptr_t) (st status) {
	defer recoverPanic(&st)
	if h == 0 {
		return stOK
	}
	m, err := lookup[*loadedModel](h, "model")
	if err != nil {
		return failArg(err)
	}
	err = m.close("model", func() error {
		if m.live > 0 {
			return errorf(stBusy, "model has %d live session(s); free them first", m.live)
		}
		return nil
	})
	if err != nil {
		return failArg(err)
	}
	deleteHandle(h)
	m.eng.Close()
	return fail(m.m.Close(), stInternal)
}

//export capiModelInfo
func capiModelInfo(h C.uintptr_t, props *C.m40llm_model_props) (st status) {
	defer recoverPanic(&st)
	m, err := enterModel(h)
	if err != nil {
		return failArg(err)
	}
	defer m.exit()
	if props == nil {
		return failArg(argErrorf("props is NULL"))
	}
	cfg, tok := m.m.Config, m.m.Tokenizer
	var p C.m40llm_model_props
	copyCString(p.architecture[:], cfg.Arch)
	copyCString(p.backend[:], m.m.Backend().Name())
	p.context_length = C.int32_t(cfg.ContextLength)
	p.n_ctx = C.int32_t(m.m.CtxSize())
	p.n_sessions = C.int32_t(m.m.Slots())
	p.n_batch = C.int32_t(m.m.BatchSize())
	p.vocab_size = C.int32_t(cfg.VocabSize)
	p.n_layers = C.int32_t(cfg.Layers)
	p.n_embd = C.int32_t(cfg.Dim)
	p.n_heads = C.int32_t(cfg.Heads)
	p.n_kv_heads = C.int32_t(cfg.KVHeads)
	p.bos_token = C.int32_t(tok.BOS())
	p.eos_token = C.int32_t(tok.EOS())
	p.weight_bytes = C.uint64_t(m.m.Weights.Bytes)
	*props = p
	return stOK
}

// copyCString copies s into the fixed array dst, truncated at a UTF-8
// boundary so that it fits with its NUL.
func copyCString(dst []C.char, s string) {
	n := min(len(s), len(dst)-1)
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	for i := range n {
		dst[i] = C.char(s[i])
	}
	dst[n] = 0
}
