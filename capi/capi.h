/*
 * capi.h - internal declarations of libm40llm.so, shared by the Go files'
 * cgo preambles and capi.c. Everything here has hidden visibility (the
 * package is compiled with -fvisibility=hidden); the public interface is
 * include/m40llm.h.
 */
#ifndef M40LLM_CAPI_H
#define M40LLM_CAPI_H

#include "m40llm.h"

/* capi_set_error makes msg[0:len) the calling thread's last error. */
void capi_set_error(const char *msg, size_t len);

/* capi_last_error returns the calling thread's last error (for Go tests). */
const char *capi_last_error(void);

/* capi_call_text calls a generation callback; Go cannot call C function
 * pointers itself. */
int capi_call_text(m40llm_text_callback cb, const char *text, size_t len, void *user_data);

#endif
