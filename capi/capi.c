/*
 * capi.c - the exported m40llm_* functions of libm40llm.so.
 *
 * Each function that needs Go is a thin stub over the Go function capiNAME
 * (see main.go): handles cross as integers, const is dropped (Go writes only
 * through the out parameters), and a successful status clears the calling
 * thread's last error (a failure has set it from Go). m40llm_version,
 * m40llm_abi_version, m40llm_strerror and m40llm_last_error are plain C.
 *
 * The package is compiled with -fvisibility=hidden; M40LLM_PUBLIC marks the
 * functions of include/m40llm.h, the only ones exported.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "capi.h"
#include "_cgo_export.h"

#define M40LLM_PUBLIC __attribute__((visibility("default")))

/* The library's version; a release build sets it with
 * CGO_CFLAGS=-DM40LLM_VERSION_STRING='"x.y.z"'. */
#ifndef M40LLM_VERSION_STRING
#define M40LLM_VERSION_STRING "0.1.0-dev"
#endif

/*
 * The calling thread's last error (see m40llm_last_error) lives in a
 * malloc'd buffer held in a pthread key, whose destructor frees it when the
 * thread exits. Not a _Thread_local array: the Go runtime in this library
 * uses initial-exec TLS, which makes the loader place the library's whole
 * TLS block in the small static TLS surplus, and a 2 KiB block there makes
 * dlopen (Python's ctypes) fail with "cannot allocate memory in static TLS
 * block".
 */
#define ERROR_SIZE 2048

static pthread_key_t error_key;
static pthread_once_t error_once = PTHREAD_ONCE_INIT;

static void error_key_init(void) { pthread_key_create(&error_key, free); }

/* error_buffer returns the thread's buffer, making it when create is set;
 * NULL when there is none (or no memory for one). */
static char *error_buffer(bool create)
{
    pthread_once(&error_once, error_key_init);
    char *b = pthread_getspecific(error_key);
    if (b == NULL && create) {
        b = malloc(ERROR_SIZE);
        if (b != NULL) {
            b[0] = '\0';
            if (pthread_setspecific(error_key, b) != 0) {
                free(b);
                b = NULL;
            }
        }
    }
    return b;
}

void capi_set_error(const char *msg, size_t len)
{
    char *b = error_buffer(true);
    if (b == NULL)
        return;
    if (len >= ERROR_SIZE) {
        len = ERROR_SIZE - 1;
        /* Do not cut a UTF-8 sequence. */
        while (len > 0 && ((unsigned char)msg[len] & 0xC0) == 0x80)
            len--;
    }
    memcpy(b, msg, len);
    b[len] = '\0';
}

const char *capi_last_error(void)
{
    const char *b = error_buffer(false);
    return b ? b : "";
}

int capi_call_text(m40llm_text_callback cb, const char *text, size_t len, void *user_data)
{
    return cb(text, len, user_data);
}

/* done returns st, clearing the last error when it is M40LLM_OK. */
static m40llm_status done(m40llm_status st)
{
    if (st == M40LLM_OK) {
        char *b = error_buffer(false);
        if (b != NULL)
            b[0] = '\0';
    }
    return st;
}

/* ---- errors and versions ---- */

M40LLM_PUBLIC const char *m40llm_version(void) { return M40LLM_VERSION_STRING; }

M40LLM_PUBLIC int32_t m40llm_abi_version(void) { return M40LLM_ABI_VERSION; }

M40LLM_PUBLIC const char *m40llm_last_error(void) { return capi_last_error(); }

M40LLM_PUBLIC const char *m40llm_strerror(m40llm_status status)
{
    switch (status) {
    case M40LLM_OK:
        return "M40LLM_OK: success";
    case M40LLM_ERR_INVALID_ARGUMENT:
        return "M40LLM_ERR_INVALID_ARGUMENT: invalid argument";
    case M40LLM_ERR_INVALID_HANDLE:
        return "M40LLM_ERR_INVALID_HANDLE: freed or wrong handle";
    case M40LLM_ERR_BUFFER_TOO_SMALL:
        return "M40LLM_ERR_BUFFER_TOO_SMALL: buffer too small";
    case M40LLM_ERR_IO:
        return "M40LLM_ERR_IO: file cannot be read";
    case M40LLM_ERR_FORMAT:
        return "M40LLM_ERR_FORMAT: malformed model file";
    case M40LLM_ERR_UNSUPPORTED:
        return "M40LLM_ERR_UNSUPPORTED: not supported by this build";
    case M40LLM_ERR_NO_DEVICE:
        return "M40LLM_ERR_NO_DEVICE: no usable CUDA GPU";
    case M40LLM_ERR_CUDA:
        return "M40LLM_ERR_CUDA: CUDA call failed";
    case M40LLM_ERR_OUT_OF_MEMORY:
        return "M40LLM_ERR_OUT_OF_MEMORY: out of memory";
    case M40LLM_ERR_CONTEXT_FULL:
        return "M40LLM_ERR_CONTEXT_FULL: context full";
    case M40LLM_ERR_BUSY:
        return "M40LLM_ERR_BUSY: in use";
    case M40LLM_ERR_INTERNAL:
        return "M40LLM_ERR_INTERNAL: internal error";
    }
    return "unknown status";
}

/* ---- devices ---- */

M40LLM_PUBLIC m40llm_status m40llm_device_count(int32_t *count)
{
    return done(capiDeviceCount(count));
}

M40LLM_PUBLIC m40llm_status m40llm_device_info(int32_t index, m40llm_device_props *props)
{
    return done(capiDeviceInfo(index, props));
}

/* ---- models ---- */

M40LLM_PUBLIC m40llm_status m40llm_model_params_init(m40llm_model_params *params)
{
    return done(capiModelParamsInit(params));
}

M40LLM_PUBLIC m40llm_status m40llm_model_load(const char *path, const m40llm_model_params *params,
                                              m40llm_model **model)
{
    uintptr_t h = 0;
    m40llm_status st = capiModelLoad((char *)path, (m40llm_model_params *)params, model ? &h : NULL);
    if (model)
        *model = (m40llm_model *)h;
    return done(st);
}

M40LLM_PUBLIC m40llm_status m40llm_model_params_ex_init(m40llm_model_params_ex *params)
{
    return done(capiModelParamsExInit(params));
}

M40LLM_PUBLIC m40llm_status m40llm_model_load_ex(const char *path, const m40llm_model_params_ex *params,
                                                 m40llm_model **model)
{
    uintptr_t h = 0;
    m40llm_status st = capiModelLoadEx((char *)path, (m40llm_model_params_ex *)params, model ? &h : NULL);
    if (model)
        *model = (m40llm_model *)h;
    return done(st);
}

M40LLM_PUBLIC m40llm_status m40llm_model_free(m40llm_model *model)
{
    return done(capiModelFree((uintptr_t)model));
}

M40LLM_PUBLIC m40llm_status m40llm_model_info(m40llm_model *model, m40llm_model_props *props)
{
    return done(capiModelInfo((uintptr_t)model, props));
}

/* ---- tokens ---- */

M40LLM_PUBLIC m40llm_status m40llm_tokenize(m40llm_model *model, const char *text, bool add_special,
                                            bool parse_special, int32_t *tokens, size_t capacity,
                                            size_t *n_tokens)
{
    return done(capiTokenize((uintptr_t)model, (char *)text, add_special, parse_special, tokens,
                             capacity, n_tokens));
}

M40LLM_PUBLIC m40llm_status m40llm_detokenize(m40llm_model *model, const int32_t *tokens,
                                              size_t n_tokens, char *text, size_t capacity,
                                              size_t *text_len)
{
    return done(capiDetokenize((uintptr_t)model, (int32_t *)tokens, n_tokens, text, capacity,
                               text_len));
}

/* ---- sessions ---- */

M40LLM_PUBLIC m40llm_status m40llm_session_new(m40llm_model *model, m40llm_session **session)
{
    uintptr_t h = 0;
    m40llm_status st = capiSessionNew((uintptr_t)model, session ? &h : NULL);
    if (session)
        *session = (m40llm_session *)h;
    return done(st);
}

M40LLM_PUBLIC m40llm_status m40llm_session_free(m40llm_session *session)
{
    return done(capiSessionFree((uintptr_t)session));
}

M40LLM_PUBLIC m40llm_status m40llm_session_reset(m40llm_session *session)
{
    return done(capiSessionReset((uintptr_t)session));
}

M40LLM_PUBLIC m40llm_status m40llm_session_length(m40llm_session *session, size_t *n_tokens)
{
    return done(capiSessionLength((uintptr_t)session, n_tokens));
}

M40LLM_PUBLIC m40llm_status m40llm_eval(m40llm_session *session, const int32_t *tokens,
                                        size_t n_tokens)
{
    return done(capiEval((uintptr_t)session, (int32_t *)tokens, n_tokens));
}

M40LLM_PUBLIC m40llm_status m40llm_get_logits(m40llm_session *session, float *logits,
                                              size_t capacity, size_t *n_logits)
{
    return done(capiGetLogits((uintptr_t)session, logits, capacity, n_logits));
}

M40LLM_PUBLIC m40llm_status m40llm_embed(m40llm_session *session, const int32_t *tokens,
                                         size_t n_tokens, m40llm_pooling pooling, float *embedding,
                                         size_t capacity, size_t *n_embd)
{
    return done(capiEmbed((uintptr_t)session, (int32_t *)tokens, n_tokens, (int32_t)pooling, embedding,
                          capacity, n_embd));
}

/* ---- generation ---- */

M40LLM_PUBLIC m40llm_status m40llm_generate_params_init(m40llm_generate_params *params)
{
    return done(capiGenerateParamsInit(params));
}

M40LLM_PUBLIC m40llm_status m40llm_generate(m40llm_session *session, const char *prompt,
                                            const m40llm_generate_params *params,
                                            m40llm_text_callback callback, void *user_data,
                                            m40llm_generate_result *result)
{
    return done(capiGenerate((uintptr_t)session, (char *)prompt, (m40llm_generate_params *)params,
                             callback, user_data, result));
}

M40LLM_PUBLIC m40llm_status m40llm_generate_text(m40llm_session *session, const char *prompt,
                                                 const m40llm_generate_params *params, char *text,
                                                 size_t capacity, size_t *text_len,
                                                 m40llm_generate_result *result)
{
    return done(capiGenerateText((uintptr_t)session, (char *)prompt,
                                 (m40llm_generate_params *)params, text, capacity, text_len,
                                 result));
}

/* ---- low-level compute ---- */

M40LLM_PUBLIC m40llm_status m40llm_create_context(int32_t device_id, m40llm_context **ctx)
{
    uintptr_t h = 0;
    m40llm_status st = capiCreateContext(device_id, ctx ? &h : NULL);
    if (ctx)
        *ctx = (m40llm_context *)h;
    return done(st);
}

M40LLM_PUBLIC m40llm_status m40llm_destroy_context(m40llm_context *ctx)
{
    return done(capiDestroyContext((uintptr_t)ctx));
}

M40LLM_PUBLIC m40llm_status m40llm_device_malloc(m40llm_context *ctx, size_t bytes,
                                                 m40llm_devptr *ptr)
{
    return done(capiDeviceMalloc((uintptr_t)ctx, bytes, ptr));
}

M40LLM_PUBLIC m40llm_status m40llm_device_free(m40llm_context *ctx, m40llm_devptr ptr)
{
    return done(capiDeviceFree((uintptr_t)ctx, ptr));
}

M40LLM_PUBLIC m40llm_status m40llm_memcpy_h2d(m40llm_context *ctx, m40llm_devptr dst,
                                              const void *src, size_t bytes)
{
    return done(capiMemcpyH2D((uintptr_t)ctx, dst, (void *)src, bytes));
}

M40LLM_PUBLIC m40llm_status m40llm_memcpy_d2h(m40llm_context *ctx, void *dst, m40llm_devptr src,
                                              size_t bytes)
{
    return done(capiMemcpyD2H((uintptr_t)ctx, dst, src, bytes));
}

M40LLM_PUBLIC m40llm_status m40llm_gemm_f16_storage_f32_compute(m40llm_context *ctx,
                                                                m40llm_devptr A, m40llm_devptr B,
                                                                m40llm_devptr C, int32_t M,
                                                                int32_t N, int32_t K)
{
    return done(capiGemm((uintptr_t)ctx, A, B, C, M, N, K));
}

M40LLM_PUBLIC m40llm_status m40llm_alloc_kvcache(m40llm_context *ctx, int32_t n_layers,
                                                 int32_t n_kv_heads, int32_t head_dim,
                                                 int32_t max_seqs, int32_t max_seq_len,
                                                 m40llm_kvcache **kv)
{
    uintptr_t h = 0;
    m40llm_status st = capiAllocKVCache((uintptr_t)ctx, n_layers, n_kv_heads, head_dim, max_seqs,
                                        max_seq_len, kv ? &h : NULL);
    if (kv)
        *kv = (m40llm_kvcache *)h;
    return done(st);
}

M40LLM_PUBLIC m40llm_status m40llm_free_kvcache(m40llm_context *ctx, m40llm_kvcache *kv)
{
    return done(capiFreeKVCache((uintptr_t)ctx, (uintptr_t)kv));
}

M40LLM_PUBLIC m40llm_status m40llm_kv_append_token(m40llm_context *ctx, m40llm_kvcache *kv,
                                                   int32_t layer, int32_t seq, m40llm_devptr k_new,
                                                   m40llm_devptr v_new)
{
    return done(capiKVAppendToken((uintptr_t)ctx, (uintptr_t)kv, layer, seq, k_new, v_new));
}

M40LLM_PUBLIC m40llm_status m40llm_attention_last_token(m40llm_context *ctx, m40llm_kvcache *kv,
                                                        int32_t layer, int32_t seq,
                                                        int32_t n_heads, m40llm_devptr q,
                                                        m40llm_devptr out)
{
    return done(capiAttentionLastToken((uintptr_t)ctx, (uintptr_t)kv, layer, seq, n_heads, q, out));
}
