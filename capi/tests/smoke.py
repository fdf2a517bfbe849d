"""Smoke test of libm40llm.so from Python through ctypes.

    python3 smoke.py LIBM40LLM.so MODEL.gguf

MODEL.gguf is the bundled stories260K model. Prints one line per failed
check and a summary; the exit status is 0 when every check passed.
capi_test.go runs it when python3 is installed.
"""

import ctypes as C
import sys

failures = 0
checks = 0


def check(ok, what):
    global checks, failures
    checks += 1
    if not ok:
        failures += 1
        print(f"smoke.py: FAIL: {what} (last error: {last_error()!r})", file=sys.stderr)


lib = C.CDLL(sys.argv[1])
model_path = sys.argv[2].encode()

OK, INVALID_ARGUMENT, INVALID_HANDLE, BUFFER_TOO_SMALL, IO = 0, -1, -2, -3, -4
FINISH_LENGTH, FINISH_CALLBACK = 2, 3


class ModelParams(C.Structure):
    _fields_ = [(n, C.c_int32) for n in ("backend", "device", "n_ctx", "n_sessions", "n_batch", "n_threads")]


class ModelProps(C.Structure):
    _fields_ = [("architecture", C.c_char * 32), ("backend", C.c_char * 32)] + [
        (n, C.c_int32)
        for n in ("context_length", "n_ctx", "n_sessions", "n_batch", "vocab_size", "n_layers",
                  "n_embd", "n_heads", "n_kv_heads", "bos_token", "eos_token")
    ] + [("weight_bytes", C.c_uint64)]


class GenerateParams(C.Structure):
    _fields_ = [
        ("max_tokens", C.c_int32), ("temperature", C.c_float), ("top_k", C.c_int32),
        ("top_p", C.c_float), ("min_p", C.c_float), ("repeat_penalty", C.c_float),
        ("repeat_last_n", C.c_int32), ("presence_penalty", C.c_float),
        ("frequency_penalty", C.c_float), ("seed", C.c_uint64), ("add_special", C.c_bool),
        ("parse_special", C.c_bool), ("ignore_eos", C.c_bool),
        ("stop", C.POINTER(C.c_char_p)), ("n_stop", C.c_size_t),
    ]


class GenerateResult(C.Structure):
    _fields_ = [(n, C.c_int32) for n in ("n_prompt_tokens", "n_cached_tokens", "n_generated", "finish_reason")] + [
        (n, C.c_double) for n in ("prompt_seconds", "generate_seconds", "prompt_tokens_per_second", "tokens_per_second")
    ]


TEXT_CB = C.CFUNCTYPE(C.c_int, C.c_char_p, C.c_size_t, C.c_void_p)
handle = C.c_void_p
status = C.c_int

lib.m40llm_version.restype = C.c_char_p
lib.m40llm_abi_version.restype = C.c_int32
lib.m40llm_strerror.restype = C.c_char_p
lib.m40llm_strerror.argtypes = [status]
lib.m40llm_last_error.restype = C.c_char_p
for name, args in {
    "m40llm_model_params_init": [C.POINTER(ModelParams)],
    "m40llm_model_load": [C.c_char_p, C.POINTER(ModelParams), C.POINTER(handle)],
    "m40llm_model_free": [handle],
    "m40llm_model_info": [handle, C.POINTER(ModelProps)],
    "m40llm_tokenize": [handle, C.c_char_p, C.c_bool, C.c_bool, C.POINTER(C.c_int32), C.c_size_t, C.POINTER(C.c_size_t)],
    "m40llm_detokenize": [handle, C.POINTER(C.c_int32), C.c_size_t, C.c_char_p, C.c_size_t, C.POINTER(C.c_size_t)],
    "m40llm_session_new": [handle, C.POINTER(handle)],
    "m40llm_session_free": [handle],
    "m40llm_eval": [handle, C.POINTER(C.c_int32), C.c_size_t],
    "m40llm_get_logits": [handle, C.POINTER(C.c_float), C.c_size_t, C.POINTER(C.c_size_t)],
    "m40llm_embed": [handle, C.POINTER(C.c_int32), C.c_size_t, C.c_int, C.POINTER(C.c_float), C.c_size_t,
                     C.POINTER(C.c_size_t)],
    "m40llm_generate_params_init": [C.POINTER(GenerateParams)],
    "m40llm_generate": [handle, C.c_char_p, C.POINTER(GenerateParams), TEXT_CB, C.c_void_p, C.POINTER(GenerateResult)],
    "m40llm_generate_text": [handle, C.c_char_p, C.POINTER(GenerateParams), C.c_char_p, C.c_size_t,
                             C.POINTER(C.c_size_t), C.POINTER(GenerateResult)],
}.items():
    f = getattr(lib, name)
    f.argtypes = args
    f.restype = status


def last_error():
    return lib.m40llm_last_error().decode()


check(lib.m40llm_version().decode() != "", "version")
check(lib.m40llm_abi_version() == 1, "ABI version")
check(lib.m40llm_strerror(-3).decode().startswith("M40LLM_ERR_BUFFER_TOO_SMALL:"), "strerror")

model = handle()
check(lib.m40llm_model_load(b"/nonexistent.gguf", None, C.byref(model)) == IO, "bad path")
check("/nonexistent.gguf" in last_error(), "message names the path")
check(model.value is None, "model cleared")

params = ModelParams()
check(lib.m40llm_model_params_init(C.byref(params)) == OK, "model params")
params.n_ctx = 128
check(lib.m40llm_model_load(model_path, C.byref(params), C.byref(model)) == OK, "load")
props = ModelProps()
check(lib.m40llm_model_info(model, C.byref(props)) == OK, "info")
check(props.architecture == b"llama" and props.vocab_size == 512 and props.n_ctx == 128, "props")

prompt = b"Once upon a time"
n = C.c_size_t()
check(lib.m40llm_tokenize(model, prompt, True, True, None, 0, C.byref(n)) == BUFFER_TOO_SMALL, "size query")
toks = (C.c_int32 * n.value)()
check(lib.m40llm_tokenize(model, prompt, True, True, toks, n.value, C.byref(n)) == OK, "tokenize")
check(list(toks) == [1, 403, 407, 261, 378], "ids")
buf = C.create_string_buffer(64)
tl = C.c_size_t()
check(lib.m40llm_detokenize(model, C.cast(C.byref(toks, 4), C.POINTER(C.c_int32)), n.value - 1, buf, 64, C.byref(tl)) == OK, "detokenize")
check(buf.value == prompt, "round trip")

session = handle()
check(lib.m40llm_session_new(model, C.byref(session)) == OK, "session")
check(lib.m40llm_eval(session, toks, n.value) == OK, "eval")
logits = (C.c_float * 512)()
check(lib.m40llm_get_logits(session, logits, 512, C.byref(n)) == OK, "logits")
check(max(range(512), key=lambda i: logits[i]) == 432, "argmax after the prompt")

embd = (C.c_float * 64)()
ne = C.c_size_t()
check(lib.m40llm_embed(session, toks, len(toks), 1, embd, 64, C.byref(ne)) == OK, "embed (mean)")
check(ne.value == 64 and abs(sum(x * x for x in embd) - 1) < 1e-5, "unit-norm embedding")
check(lib.m40llm_embed(session, toks, len(toks), 0, embd, 64, C.byref(ne)) == INVALID_ARGUMENT, "no model pooling")

gp = GenerateParams()
check(lib.m40llm_generate_params_init(C.byref(gp)) == OK, "generate params")
check(abs(gp.temperature - 0.8) < 1e-6 and gp.top_k == 40 and gp.add_special, "generate defaults")
gp.temperature = 0
gp.max_tokens = 24
pieces = []


@TEXT_CB
def on_text(text, length, user):
    pieces.append(C.string_at(text, length).decode())
    return 1 if len(pieces) == 1000 else 0


res = GenerateResult()
check(lib.m40llm_generate(session, prompt, C.byref(gp), on_text, None, C.byref(res)) == OK, "generate")
text = "".join(pieces)
check(text.startswith(", there was a little girl named Lily."), f"greedy text {text!r}")
check(res.n_generated == 24 and res.finish_reason == FINISH_LENGTH, "result")

out = C.create_string_buffer(4096)
check(lib.m40llm_generate_text(session, prompt, C.byref(gp), out, 4096, C.byref(tl), C.byref(res)) == OK, "generate_text")
check(out.value.decode() == text and res.n_cached_tokens == 4, "generate_text equals the streamed text")


@TEXT_CB
def stop_at_two(text, length, user):
    stop_at_two.calls += 1
    return 1 if stop_at_two.calls == 2 else 0


stop_at_two.calls = 0
check(lib.m40llm_generate(session, prompt, C.byref(gp), stop_at_two, None, C.byref(res)) == OK, "callback stop")
check(res.finish_reason == FINISH_CALLBACK and stop_at_two.calls == 2, "finish by callback")

check(lib.m40llm_model_free(model) == -11, "model with a live session is busy")
check(lib.m40llm_session_free(session) == OK, "session free")
check(lib.m40llm_session_free(session) == INVALID_HANDLE, "double free")
check(lib.m40llm_model_free(model) == OK, "model free")
check(lib.m40llm_model_info(None, C.byref(props)) == INVALID_ARGUMENT, "NULL model")

print(f"smoke.py: {checks} checks, {failures} failed")
sys.exit(1 if failures else 0)
