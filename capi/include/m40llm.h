/*
 * m40llm.h - the C API of m40llm (libm40llm.so).
 *
 * m40llm runs LLaMA-family GGUF models on NVIDIA GPUs and on the CPU. This
 * header is the whole, stable interface of libm40llm.so; every function it
 * declares is exported by the library and nothing else named m40llm_* is.
 *
 * Build the library from the capi/ folder of the source tree (needs Go and a
 * C compiler; no CUDA toolkit):
 *
 *     go build -buildmode=c-shared -o libm40llm.so
 *
 * and link with -lm40llm. The library needs no GPU: without one the CPU
 * backend runs models, and the GPU functions report M40LLM_ERR_NO_DEVICE.
 *
 * CONVENTIONS
 *
 * Status. Every function that can fail returns an m40llm_status: 0
 * (M40LLM_OK) on success, one of the negative codes below on failure. The
 * codes mean the same in every function. m40llm_last_error() then gives a
 * one-line message that names the argument, file, device or limit at fault.
 *
 * Handles. m40llm_model, m40llm_session, m40llm_context and m40llm_kvcache
 * are opaque: use them only as the pointers the library hands out, and free
 * each exactly once with its own function. Freeing NULL does nothing and
 * returns M40LLM_OK. A handle is not an address (never dereference one):
 * it holds the index of a slot in the library's table of live objects, the
 * slot's generation (raised each time its object is freed) and a check
 * made from a random per-process tag. Any value but a live handle of the
 * kind expected is therefore refused with M40LLM_ERR_INVALID_HANDLE, and
 * m40llm_last_error names the kind expected ("m40llm_session"): a handle
 * that was freed, a handle of another kind, a small integer such as
 * (void *)0x1, a live handle with one bit flipped, and random bits but for
 * a chance below 2^-40 (2^-20 on a 32-bit system). A freed handle stays
 * refused when its slot holds a new object; its value comes back only
 * after at least 2^28 frees (2^18 on 32-bit; fewer only while the table is
 * full). At most 2^20 objects (1024 on 32-bit) are live at once: making
 * another fails with M40LLM_ERR_OUT_OF_MEMORY.
 *
 * Arguments. NULL where a pointer is required, negative sizes and values out
 * of range are refused with M40LLM_ERR_INVALID_ARGUMENT before anything
 * happens. Strings are NUL-terminated UTF-8.
 *
 * Buffers. Functions that write into a caller's buffer take its capacity and
 * report the size they need through an out parameter. When the buffer is too
 * short they write nothing, set that size and return
 * M40LLM_ERR_BUFFER_TOO_SMALL; passing a NULL buffer with capacity 0 is the
 * way to ask for the size. (m40llm_generate_text is the one exception: see
 * there.)
 *
 * Memory. The library never keeps a pointer the caller passed once the call
 * returns, and the caller never receives a pointer into library memory except
 * the constant strings of m40llm_version, m40llm_strerror and
 * m40llm_last_error.
 *
 * THREAD SAFETY
 *
 * - A model may be used by any number of threads at once: m40llm_model_info,
 *   m40llm_tokenize and m40llm_detokenize run concurrently. Sessions of one
 *   model that generate (m40llm_generate, m40llm_generate_text) from several
 *   threads at once share the model's forward passes: each step evaluates
 *   the next token of every one of them together (continuous batching), so
 *   n threads get nearly n times the throughput of one on a GPU. Other
 *   forward passes (m40llm_eval) run one at a time between those steps.
 * - A session is used by one thread at a time. A call on a session that is
 *   already inside a call on another thread (or on the same thread, from a
 *   generation callback) fails with M40LLM_ERR_BUSY and changes nothing.
 * - Free a model only after all of its sessions; m40llm_model_free refuses
 *   with M40LLM_ERR_BUSY while sessions are alive or another thread is inside
 *   a call on the model. Likewise m40llm_session_free refuses a session that
 *   is in use.
 * - A low-level context may be used from any thread; its calls run one at a
 *   time, in order, on the thread that owns the CUDA context.
 * - m40llm_last_error is per thread.
 * - Callbacks run on the thread that made the call, before it returns. They
 *   must return normally (no longjmp, no C++ exception through the library).
 *
 * A panic inside the library is caught at the boundary and returned as
 * M40LLM_ERR_INTERNAL with its message; the process carries on.
 */
#ifndef M40LLM_H
#define M40LLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * M40LLM_ABI_VERSION changes whenever a declaration in this header changes
 * incompatibly. Compare it with m40llm_abi_version() at start-up.
 */
#define M40LLM_ABI_VERSION 1

/* ------------------------------------------------------------------------
 * Status codes and errors
 * ------------------------------------------------------------------------ */

/* m40llm_status is the result of every function that can fail. */
typedef enum m40llm_status {
    M40LLM_OK = 0,
    /* A required pointer is NULL, or a value is out of range. */
    M40LLM_ERR_INVALID_ARGUMENT = -1,
    /* A handle was already freed, is of another kind, or is a value the
     * library never returned. */
    M40LLM_ERR_INVALID_HANDLE = -2,
    /* The caller's buffer is too short; the needed size was reported. */
    M40LLM_ERR_BUFFER_TOO_SMALL = -3,
    /* A file could not be opened or read. */
    M40LLM_ERR_IO = -4,
    /* A model file is malformed (not GGUF, truncated, inconsistent). */
    M40LLM_ERR_FORMAT = -5,
    /* Valid input that this build does not handle: an architecture, tensor
     * type or tokenizer it does not run. */
    M40LLM_ERR_UNSUPPORTED = -6,
    /* No usable GPU: no driver library, no device, or a driver too old. */
    M40LLM_ERR_NO_DEVICE = -7,
    /* A CUDA driver, cuBLAS or kernel call failed; the message names it. */
    M40LLM_ERR_CUDA = -8,
    /* Host or device memory is exhausted, or the 2^20 live objects that
     * handles can name (see CONVENTIONS). */
    M40LLM_ERR_OUT_OF_MEMORY = -9,
    /* The tokens do not fit in the session's (or KV cache's) context. */
    M40LLM_ERR_CONTEXT_FULL = -10,
    /* The object is in use: a session inside another call, a model with
     * live sessions, or no free session slot. */
    M40LLM_ERR_BUSY = -11,
    /* A bug in the library (a caught panic); please report the message. */
    M40LLM_ERR_INTERNAL = -12
} m40llm_status;

/* m40llm_version returns the library's version, e.g. "0.1.0-dev". */
const char *m40llm_version(void);

/* m40llm_abi_version returns the M40LLM_ABI_VERSION the library was built
 * with. */
int32_t m40llm_abi_version(void);

/*
 * m40llm_strerror returns the name and a short description of a status, e.g.
 * "M40LLM_ERR_BUFFER_TOO_SMALL: buffer too small", or "unknown status" for a
 * value that is not an m40llm_status. The string is constant.
 */
const char *m40llm_strerror(m40llm_status status);

/*
 * m40llm_last_error returns the message of the last call made on this
 * thread: "" after a call that returned M40LLM_OK, a one-line description of
 * the failure otherwise (truncated to 2047 bytes). The string belongs to the
 * library and stays valid until the thread's next m40llm_* call.
 */
const char *m40llm_last_error(void);

/* ------------------------------------------------------------------------
 * Devices
 * ------------------------------------------------------------------------ */

/* m40llm_device_props describes one CUDA device. */
typedef struct m40llm_device_props {
    char name[256];            /* "Tesla M40 24GB" (NUL-terminated) */
    int32_t ordinal;           /* the index passed to m40llm_device_info */
    int32_t compute_major;     /* compute capability */
    int32_t compute_minor;
    int32_t multiprocessors;
    uint64_t total_memory;     /* bytes */
    uint64_t free_memory;      /* bytes */
    double bandwidth;          /* theoretical memory bandwidth, bytes/s; 0 if unknown */
    int32_t pci_bus_id;
    int32_t driver_version;    /* CUDA driver API version, 1000*major + 10*minor */
    bool native_code;          /* true: the embedded sm_52 code runs as is;
                                  false: the driver JIT-compiles the PTX */
} m40llm_device_props;

/*
 * m40llm_device_count sets *count to the number of CUDA devices. Without a
 * usable GPU it sets *count to 0 and returns M40LLM_ERR_NO_DEVICE, with the
 * reason (driver not found, no device, driver too old) in m40llm_last_error.
 */
m40llm_status m40llm_device_count(int32_t *count);

/* m40llm_device_info describes device index (0 <= index < count). */
m40llm_status m40llm_device_info(int32_t index, m40llm_device_props *props);

/* ------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------ */

/* m40llm_model is a loaded model: weights, tokenizer and KV cache. */
typedef struct m40llm_model m40llm_model;

/* m40llm_backend selects where a model runs (m40llm_model_params.backend). */
typedef enum m40llm_backend {
    /* The CUDA backend on params.device when the driver, the device and its
     * context work, else the CPU (the reason is not reported). */
    M40LLM_BACKEND_AUTO = 0,
    M40LLM_BACKEND_CPU = 1,
    /* The CUDA backend: weights as stored (quantized) or FP16, an FP16 KV
     * cache (other types through m40llm_model_load_ex), FP32 arithmetic. Fails
     * with M40LLM_ERR_NO_DEVICE without a usable GPU. */
    M40LLM_BACKEND_CUDA = 2
} m40llm_backend;

/* m40llm_model_params configures m40llm_model_load. Start from
 * m40llm_model_params_init. */
typedef struct m40llm_model_params {
    int32_t backend;    /* an m40llm_backend; default AUTO */
    int32_t device;     /* CUDA device ordinal; default 0 */
    int32_t n_ctx;      /* KV-cache positions per session; 0 (default): the
                           model's context length, at most 4096 */
    int32_t n_sessions; /* sessions that can exist at once (each has its own
                           KV cache); 0 (default): 1 */
    int32_t n_batch;    /* largest number of tokens per forward pass; 0
                           (default): 512 */
    int32_t n_threads;  /* CPU backend threads; 0 (default): all cores; at most
                           4 times the CPUs (more is INVALID_ARGUMENT) */
} m40llm_model_params;

/* m40llm_model_params_init fills *params with the defaults. */
m40llm_status m40llm_model_params_init(m40llm_model_params *params);

/*
 * m40llm_model_load loads the GGUF file at path and sets *model (NULL on
 * failure). params may be NULL for the defaults. On the CUDA backend every
 * layer goes to the GPU (m40llm_model_load_ex places layers over the GPU
 * and the CPU). Errors: M40LLM_ERR_IO
 * (cannot open), _FORMAT (malformed file), _UNSUPPORTED (architecture,
 * tensor type or tokenizer), _NO_DEVICE, _OUT_OF_MEMORY (the model does not
 * fit in the GPU's free memory: the message says how much it needs).
 */
m40llm_status m40llm_model_load(const char *path, const m40llm_model_params *params,
                                m40llm_model **model);

/* m40llm_cache_type is the element type of the KV cache, with llama.cpp's
 * names and block layouts. The quantized types need head dimensions that
 * are multiples of 32. */
typedef enum m40llm_cache_type {
    M40LLM_CACHE_F16 = 0,
    M40LLM_CACHE_F32 = 1,
    M40LLM_CACHE_Q8_0 = 2,
    M40LLM_CACHE_Q4_0 = 3
} m40llm_cache_type;

/* m40llm_model_params_ex is m40llm_model_params with the options added
 * since: the KV cache's types and the placement of layers on the GPU and
 * the CPU. Start from m40llm_model_params_ex_init, which sets size; later
 * versions of the library append fields and read size to know which ones
 * the caller has. */
typedef struct m40llm_model_params_ex {
    uint32_t size;              /* sizeof(m40llm_model_params_ex) */
    m40llm_model_params base;   /* as for m40llm_model_load */
    int32_t type_k;             /* an m40llm_cache_type for the keys; default F16 */
    int32_t type_v;             /* and for the values; default F16 */
    int32_t n_gpu_layers;       /* the last n layers on the GPU (llama.cpp's
                                   -ngl; above the layer count the output too;
                                   0: the CPU backend); -1 (default): as many as
                                   fit in the GPU's free memory (or
                                   gpu_memory_limit). With backend CPU it must
                                   be 0 or -1. */
    int32_t reserved;           /* 0 */
    uint64_t gpu_memory_limit;  /* bytes of the GPU a model may use; 0
                                   (default): its free memory */
} m40llm_model_params_ex;

/* m40llm_model_params_ex_init fills *params with the defaults and size. */
m40llm_status m40llm_model_params_ex_init(m40llm_model_params_ex *params);

/*
 * m40llm_model_load_ex is m40llm_model_load with m40llm_model_params_ex
 * (not NULL). Besides m40llm_model_load's errors: M40LLM_ERR_INVALID_ARGUMENT
 * for a size this library does not know, a cache type outside the enum or
 * one whose blocks do not divide the model's head dimension, and
 * n_gpu_layers < -1 or > 0 with the CPU backend; M40LLM_ERR_OUT_OF_MEMORY
 * when, with backend CUDA and n_gpu_layers -1, not even one layer fits
 * (with backend AUTO the model then runs on the CPU).
 */
m40llm_status m40llm_model_load_ex(const char *path, const m40llm_model_params_ex *params,
                                   m40llm_model **model);

/* m40llm_model_free frees a model whose sessions have all been freed. */
m40llm_status m40llm_model_free(m40llm_model *model);

/* m40llm_model_props describes a loaded model. */
typedef struct m40llm_model_props {
    char architecture[32];  /* general.architecture: "llama", "qwen2", ... */
    char backend[32];       /* "cpu", "cuda:0" */
    int32_t context_length; /* trained context length */
    int32_t n_ctx;          /* KV-cache positions per session */
    int32_t n_sessions;     /* sessions that can exist at once */
    int32_t n_batch;        /* largest tokens per forward pass */
    int32_t vocab_size;     /* logits per token */
    int32_t n_layers;
    int32_t n_embd;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t bos_token;      /* -1 when the vocabulary has none */
    int32_t eos_token;      /* -1 when the vocabulary has none */
    uint64_t weight_bytes;  /* size of the weights as stored in the file */
} m40llm_model_props;

/* m40llm_model_info fills *props. */
m40llm_status m40llm_model_info(m40llm_model *model, m40llm_model_props *props);

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------ */

/*
 * m40llm_tokenize encodes text into token ids, as llama.cpp's llama_tokenize.
 * add_special puts the BOS (and EOS) token around the text when the
 * vocabulary asks for it; parse_special turns control tokens written in the
 * text ("<s>", "<|im_start|>") into their ids. *n_tokens is set to the number
 * of tokens; when it exceeds capacity nothing is written and the result is
 * M40LLM_ERR_BUFFER_TOO_SMALL (tokens may be NULL when capacity is 0).
 */
m40llm_status m40llm_tokenize(m40llm_model *model, const char *text, bool add_special,
                              bool parse_special, int32_t *tokens, size_t capacity,
                              size_t *n_tokens);

/*
 * m40llm_detokenize decodes token ids into text (llama.cpp's detokenize of a
 * whole sequence: the first token's leading space is dropped when the
 * vocabulary adds one). *text_len is set to the text's length in bytes,
 * without the NUL; the text and its NUL are written when text_len + 1 <=
 * capacity, else the result is M40LLM_ERR_BUFFER_TOO_SMALL. Every id must be
 * in [0, vocab_size). The bytes are those of the tokens, which may split a
 * multi-byte character.
 */
m40llm_status m40llm_detokenize(m40llm_model *model, const int32_t *tokens, size_t n_tokens,
                                char *text, size_t capacity, size_t *text_len);

/* ------------------------------------------------------------------------
 * Sessions: one sequence with its own KV cache
 * ------------------------------------------------------------------------ */

/* m40llm_session is one token sequence held in a KV-cache slot of a model. */
typedef struct m40llm_session m40llm_session;

/* m40llm_session_new creates an empty session on a free slot of model, or
 * returns M40LLM_ERR_BUSY when all n_sessions slots are taken. */
m40llm_status m40llm_session_new(m40llm_model *model, m40llm_session **session);

/* m40llm_session_free frees a session and its slot. */
m40llm_status m40llm_session_free(m40llm_session *session);

/* m40llm_session_reset forgets every token of the session. */
m40llm_status m40llm_session_reset(m40llm_session *session);

/* m40llm_session_length sets *n_tokens to the number of tokens in the
 * session's cache. */
m40llm_status m40llm_session_length(m40llm_session *session, size_t *n_tokens);

/*
 * m40llm_eval appends tokens to the session and runs them through the model
 * (in chunks of n_batch), keeping the logits after the last one for
 * m40llm_get_logits. Every id must be in [0, vocab_size) and the session
 * must have room: M40LLM_ERR_CONTEXT_FULL otherwise, with nothing evaluated.
 */
m40llm_status m40llm_eval(m40llm_session *session, const int32_t *tokens, size_t n_tokens);

/*
 * m40llm_get_logits copies the vocab_size logits after the last token of the
 * last successful m40llm_eval into logits and sets *n_logits to vocab_size.
 * Fails with M40LLM_ERR_INVALID_ARGUMENT when there are none (no m40llm_eval
 * since the session was created or reset, or a m40llm_generate since).
 */
m40llm_status m40llm_get_logits(m40llm_session *session, float *logits, size_t capacity,
                                size_t *n_logits);

/* ------------------------------------------------------------------------
 * Embeddings
 * ------------------------------------------------------------------------ */

/* m40llm_pooling is how m40llm_embed makes one vector of a token sequence's
 * hidden states (after the final norm, before the output matrix). */
typedef enum m40llm_pooling {
    /* The model's own ({arch}.pooling_type in its file): mean, cls or last;
     * a model that declares none of those is refused. */
    M40LLM_POOLING_MODEL = 0,
    /* The average of every token's hidden state. */
    M40LLM_POOLING_MEAN = 1,
    /* The first token's. */
    M40LLM_POOLING_CLS = 2,
    /* The last token's (Qwen3-Embedding). */
    M40LLM_POOLING_LAST = 3
} m40llm_pooling;

/*
 * m40llm_embed evaluates tokens in the session from its start (with
 * M40LLM_POOLING_LAST a cached prefix of tokens is kept) and writes their
 * pooled hidden state, divided by its Euclidean norm, to embedding; the
 * session then holds tokens. *n_embd is set to the model's embedding
 * length (n_embd of m40llm_model_info); embedding must hold that many
 * floats, else M40LLM_ERR_BUFFER_TOO_SMALL with nothing evaluated. Every
 * id must be in [0, vocab_size) and n_tokens at most n_ctx
 * (M40LLM_ERR_CONTEXT_FULL); a pooling outside the enum, or
 * M40LLM_POOLING_MODEL for a model without one, is
 * M40LLM_ERR_INVALID_ARGUMENT. m40llm_get_logits has no logits after it.
 */
m40llm_status m40llm_embed(m40llm_session *session, const int32_t *tokens, size_t n_tokens,
                           m40llm_pooling pooling, float *embedding, size_t capacity,
                           size_t *n_embd);

/* ------------------------------------------------------------------------
 * Generation
 * ------------------------------------------------------------------------ */

/* m40llm_generate_params configures generation. Start from
 * m40llm_generate_params_init (llama.cpp's default sampler settings). The
 * sampler runs penalties, top-k, top-p, min-p, temperature, then draws. */
typedef struct m40llm_generate_params {
    int32_t max_tokens;      /* generated tokens at most; <= 0 (default -1):
                                until an end-of-generation token or a full
                                context */
    float temperature;       /* <= 0: greedy (the most likely token); default 0.8 */
    int32_t top_k;           /* default 40; <= 0: off */
    float top_p;             /* in (0, 1]; default 0.95; 1: off */
    float min_p;             /* in [0, 1]; default 0.05; 0: off */
    float repeat_penalty;    /* > 0; default 1: off */
    int32_t repeat_last_n;   /* tokens the penalties look back at; default 64;
                                -1: all; 0: penalties off */
    float presence_penalty;  /* default 0 */
    float frequency_penalty; /* default 0 */
    uint64_t seed;           /* sampler seed; default 0. The same seed, prompt
                                and parameters give the same text. */
    bool add_special;        /* tokenize the prompt with BOS as the vocabulary
                                asks; default true */
    bool parse_special;      /* control tokens in the prompt become their ids;
                                default true */
    bool ignore_eos;         /* keep generating past end-of-generation tokens;
                                default false */
    const char *const *stop; /* n_stop strings that end generation (the text
                                from a stop string on is not returned); may be
                                NULL when n_stop is 0 */
    size_t n_stop;
} m40llm_generate_params;

/* m40llm_generate_params_init fills *params with the defaults. */
m40llm_status m40llm_generate_params_init(m40llm_generate_params *params);

/* m40llm_finish_reason says why generation ended. */
typedef enum m40llm_finish_reason {
    M40LLM_FINISH_NONE = 0,     /* it did not end normally (see the status) */
    M40LLM_FINISH_STOP = 1,     /* an end-of-generation token or a stop string */
    M40LLM_FINISH_LENGTH = 2,   /* max_tokens, a full context, or a full
                                   m40llm_generate_text buffer */
    M40LLM_FINISH_CALLBACK = 3  /* the callback asked to stop */
} m40llm_finish_reason;

/* m40llm_generate_result reports what a generation did. */
typedef struct m40llm_generate_result {
    int32_t n_prompt_tokens;  /* tokens of the prompt */
    int32_t n_cached_tokens;  /* prompt tokens reused from the session's cache */
    int32_t n_generated;      /* tokens generated (end-of-generation excluded) */
    int32_t finish_reason;    /* an m40llm_finish_reason */
    double prompt_seconds;    /* evaluating the prompt: time to first token */
    double generate_seconds;  /* from the first generated token to the last */
    double prompt_tokens_per_second;
    double tokens_per_second; /* generation speed after the first token */
} m40llm_generate_result;

/*
 * m40llm_text_callback receives generated text as it becomes final: text
 * holds len bytes of complete UTF-8 (NUL-terminated for convenience), never
 * part of a stop string. It is valid only during the call. Return 0 to go on,
 * anything else to stop (m40llm_generate then returns M40LLM_OK with
 * finish_reason M40LLM_FINISH_CALLBACK).
 */
typedef int (*m40llm_text_callback)(const char *text, size_t len, void *user_data);

/*
 * m40llm_generate tokenizes prompt, continues it in session and streams the
 * generated text to callback (which may be NULL). The session's cached tokens
 * that match the start of the prompt are reused, so a conversation can pass
 * its whole history each turn; afterwards the session's cache holds the
 * prompt and every generated token but the last (which was never fed
 * back). params may be NULL for the defaults; result may be NULL, and is
 * filled also when generation fails part-way.
 */
m40llm_status m40llm_generate(m40llm_session *session, const char *prompt,
                              const m40llm_generate_params *params,
                              m40llm_text_callback callback, void *user_data,
                              m40llm_generate_result *result);

/*
 * m40llm_generate_text is m40llm_generate that collects the text into a
 * buffer of capacity bytes, NUL-terminated, and sets *text_len to its length.
 * Since the length is not known in advance, a short buffer does not waste a
 * generation: when the next piece of text would not fit, generation stops
 * there, the buffer holds the (valid UTF-8) text so far, finish_reason is
 * M40LLM_FINISH_LENGTH and the result is M40LLM_ERR_BUFFER_TOO_SMALL.
 * capacity must be at least 1.
 */
m40llm_status m40llm_generate_text(m40llm_session *session, const char *prompt,
                                   const m40llm_generate_params *params, char *text,
                                   size_t capacity, size_t *text_len,
                                   m40llm_generate_result *result);

/* ------------------------------------------------------------------------
 * Low-level compute API
 *
 * For hosts that drive the GPU themselves. Device memory is addressed by
 * m40llm_devptr values (CUdeviceptr). Every pointer passed to these
 * functions must lie, with the whole extent the function touches, inside one
 * allocation made by m40llm_device_malloc on the same context; anything else
 * is refused with M40LLM_ERR_INVALID_ARGUMENT, so a wrong size cannot make a
 * kernel write out of bounds. Each call has finished on the GPU when it
 * returns. Without a GPU, m40llm_create_context returns
 * M40LLM_ERR_NO_DEVICE, and there is no context for the others to use.
 * Matrices are row-major: element (r, c) of an R x C matrix is at r*C + c.
 * ------------------------------------------------------------------------ */

/* m40llm_devptr is an address in device memory. */
typedef uint64_t m40llm_devptr;

/* m40llm_context owns a device's CUDA context and the library's kernels. */
typedef struct m40llm_context m40llm_context;

/* m40llm_kvcache is a key/value cache in device memory. */
typedef struct m40llm_kvcache m40llm_kvcache;

/* m40llm_create_context opens device device_id and loads the kernels. */
m40llm_status m40llm_create_context(int32_t device_id, m40llm_context **ctx);

/* m40llm_destroy_context frees every allocation and KV cache still made on
 * ctx, then ctx itself. */
m40llm_status m40llm_destroy_context(m40llm_context *ctx);

/* m40llm_device_malloc allocates bytes (> 0) of device memory (256-byte
 * aligned, contents undefined). */
m40llm_status m40llm_device_malloc(m40llm_context *ctx, size_t bytes, m40llm_devptr *ptr);

/* m40llm_device_free frees an allocation of ctx; 0 does nothing. */
m40llm_status m40llm_device_free(m40llm_context *ctx, m40llm_devptr ptr);

/* m40llm_memcpy_h2d copies bytes from host memory src to device memory dst. */
m40llm_status m40llm_memcpy_h2d(m40llm_context *ctx, m40llm_devptr dst, const void *src,
                                size_t bytes);

/* m40llm_memcpy_d2h copies bytes from device memory src to host memory dst. */
m40llm_status m40llm_memcpy_d2h(m40llm_context *ctx, void *dst, m40llm_devptr src,
                                size_t bytes);

/*
 * m40llm_gemm_f16_storage_f32_compute computes, row-major,
 *
 *     C[M x N] = A[M x K] . B[N x K]^T,   C[i][j] = sum_l A[i][l] * B[j][l]
 *
 *     A: FP32, M rows of K   (activations: M tokens)
 *     B: FP16, N rows of K   (a weight matrix as GGUF stores it, ne = [K, N])
 *     C: FP32, M rows of N   (overwritten)
 *
 * B is stored in FP16 (IEEE binary16); A stays FP32 and all products and sums
 * are FP32. M, N, K > 0.
 */
m40llm_status m40llm_gemm_f16_storage_f32_compute(m40llm_context *ctx, m40llm_devptr A,
                                                  m40llm_devptr B, m40llm_devptr C,
                                                  int32_t M, int32_t N, int32_t K);

/*
 * m40llm_alloc_kvcache allocates a KV cache for n_layers layers of max_seqs
 * sequences of up to max_seq_len positions, each position holding a key row
 * and a value row of n_kv_heads * head_dim elements. Keys and values are
 * stored in FP16. Every sequence of every layer starts empty.
 */
m40llm_status m40llm_alloc_kvcache(m40llm_context *ctx, int32_t n_layers, int32_t n_kv_heads,
                                   int32_t head_dim, int32_t max_seqs, int32_t max_seq_len,
                                   m40llm_kvcache **kv);

/* m40llm_free_kvcache frees a KV cache of ctx. */
m40llm_status m40llm_free_kvcache(m40llm_context *ctx, m40llm_kvcache *kv);

/*
 * m40llm_kv_append_token stores the key row k_new and the value row v_new
 * (each FP32, n_kv_heads * head_dim elements, rounded to FP16) at the next
 * position of sequence seq of layer layer, and advances that (layer, seq)'s
 * length by one. M40LLM_ERR_CONTEXT_FULL when max_seq_len positions are
 * already stored.
 */
m40llm_status m40llm_kv_append_token(m40llm_context *ctx, m40llm_kvcache *kv, int32_t layer,
                                     int32_t seq, m40llm_devptr k_new, m40llm_devptr v_new);

/*
 * m40llm_attention_last_token computes grouped-query attention of one query
 * token over the n stored positions of (layer, seq) (n >= 1; the last stored
 * position is the query's own):
 *
 *     q:   FP32, n_heads rows of head_dim      (n_heads a multiple of n_kv_heads)
 *     out: FP32, n_heads rows of head_dim      (overwritten)
 *     g(h) = h / (n_heads / n_kv_heads)        (the KV head query head h reads)
 *     s[t] = (q[h] . K[t][g(h)]) / sqrt(head_dim),   t = 0 .. n-1
 *     out[h] = sum_t softmax(s)[t] * V[t][g(h)]
 *
 * with FP32 arithmetic on the FP16-stored keys and values.
 */
m40llm_status m40llm_attention_last_token(m40llm_context *ctx, m40llm_kvcache *kv, int32_t layer,
                                          int32_t seq, int32_t n_heads, m40llm_devptr q,
                                          m40llm_devptr out);

#ifdef __cplusplus
}
#endif

#endif /* M40LLM_H */
