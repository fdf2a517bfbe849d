/*
 * generate.c - continue a prompt with libm40llm.so, streaming the text.
 *
 *     cc -I capi/include -o generate capi/examples/generate.c -L DIR -lm40llm
 *     ./generate -m testdata/stories260K.gguf -p "Once upon a time" -n 64 --temp 0
 *
 * The generated text goes to stdout as it is produced (the same bytes as
 * `m40llm generate` prints for the same options); the token counts and
 * speeds go to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m40llm.h"

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -m MODEL.gguf -p PROMPT [-n N] [--temp T] [--seed S] [--backend auto|cpu|cuda]\n",
            argv0);
    return 2;
}

/* print_piece writes each piece of text as soon as it is final. */
static int print_piece(const char *text, size_t len, void *user_data)
{
    (void)user_data;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* go on; nonzero would stop the generation */
}

static int fail(const char *what, m40llm_status st)
{
    fprintf(stderr, "generate: %s: %s: %s\n", what, m40llm_strerror(st), m40llm_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL;
    m40llm_model_params mp;
    m40llm_generate_params gp;
    m40llm_model_params_init(&mp);
    m40llm_generate_params_init(&gp);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage(argv[0]);
        if (strcmp(a, "-m") == 0)
            model_path = v;
        else if (strcmp(a, "-p") == 0)
            prompt = v;
        else if (strcmp(a, "-n") == 0)
            gp.max_tokens = atoi(v);
        else if (strcmp(a, "--temp") == 0)
            gp.temperature = strtof(v, NULL);
        else if (strcmp(a, "--seed") == 0)
            gp.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--backend") == 0)
            mp.backend = strcmp(v, "cpu") == 0    ? M40LLM_BACKEND_CPU
                         : strcmp(v, "cuda") == 0 ? M40LLM_BACKEND_CUDA
                                                  : M40LLM_BACKEND_AUTO;
        else
            return usage(argv[0]);
        i++;
    }
    if (!model_path || !prompt)
        return usage(argv[0]);
    if (m40llm_abi_version() != M40LLM_ABI_VERSION) {
        fprintf(stderr, "generate: libm40llm.so has ABI %d, this program was built for %d\n",
                m40llm_abi_version(), M40LLM_ABI_VERSION);
        return 1;
    }

    m40llm_model *model;
    m40llm_status st = m40llm_model_load(model_path, &mp, &model);
    if (st != M40LLM_OK)
        return fail("load", st);
    m40llm_model_props info;
    m40llm_model_info(model, &info);

    /* Tokenize once to report the prompt's size (m40llm_generate tokenizes
     * it again, the same way: BOS as the model asks, special tokens parsed). */
    size_t n_prompt = 0;
    st = m40llm_tokenize(model, prompt, true, true, NULL, 0, &n_prompt);
    if (st != M40LLM_OK && st != M40LLM_ERR_BUFFER_TOO_SMALL) {
        m40llm_model_free(model);
        return fail("tokenize", st);
    }
    fprintf(stderr, "generate: %s model on %s, vocabulary %d, context %d; prompt %zu tokens\n",
            info.architecture, info.backend, info.vocab_size, info.n_ctx, n_prompt);

    m40llm_session *session;
    st = m40llm_session_new(model, &session);
    if (st != M40LLM_OK) {
        m40llm_model_free(model);
        return fail("session", st);
    }
    m40llm_generate_result res;
    st = m40llm_generate(session, prompt, &gp, print_piece, NULL, &res);
    fprintf(stderr, "\n");
    if (st != M40LLM_OK) {
        m40llm_session_free(session);
        m40llm_model_free(model);
        return fail("generate", st);
    }
    static const char *finish[] = {"none", "stop", "length", "callback"};
    fprintf(stderr,
            "generate: prompt %d tokens in %.3f s (%.1f tok/s) | generated %d tokens in %.3f s "
            "(%.1f tok/s) | finish: %s\n",
            res.n_prompt_tokens, res.prompt_seconds, res.prompt_tokens_per_second,
            res.n_generated, res.generate_seconds, res.tokens_per_second,
            finish[res.finish_reason & 3]);

    m40llm_session_free(session);
    st = m40llm_model_free(model);
    return st == M40LLM_OK ? 0 : fail("free", st);
}
