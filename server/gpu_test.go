package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/internal/gputest"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cuda"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGPUDeviceFault serves the bundled model on the GPU, then makes the
// device fault for real (cuda.Backend.InjectFault: a kernel writes
// through an invalid address): the request in flight gets 503
// backend_failed, /health answers 503 with the driver's error, new
// requests fail at once, and /metrics still answers. It skips without a
// GPU and fails then under M40LLM_REQUIRE_GPU=1. The fault breaks the
// process's CUDA context, so the test runs in a process of its own.
func TestGPUDeviceFault(t *testing.T) {
	if !gputest.Isolate(t) {
		return
	}
	be, err := cuda.New(cuda.Options{Driver: gputest.DriverOptions()})
	if err != nil {
		gputest.Unavailable(t, "no usable CUDA GPU: %v", err)
	}
	m, err := model.Load(fixture.BundledModel(t), be, model.Options{Slots: 2, CtxSize: 128})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	ts := serve(t, m, Options{})

	status, _, body := ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4,"temperature":0}`)
	require.Equal(t, http.StatusOK, status, "%s", body)

	be.InjectFault()
	status, _, body = ts.post(t, "/v1/completions", `{"prompt":"Once","max_tokens":4,"temperature":0}`)
	assert.Equal(t, http.StatusServiceUnavailable, status, "%s", body)
	assert.Equal(t, CodeBackendFailed, deref(decodeError(t, body).Code))
	t.Logf("the faulted request: %s", body)

	status, _, body = ts.get(t, "/health")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Contains(t, string(body), `"status":"error"`)
	assert.Contains(t, string(body), "CUDA_ERROR", "the driver's error is the reason")
	t.Logf("/health: %s", body)

	start := time.Now()
	status, _, body = ts.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4}`)
	assert.Equal(t, http.StatusServiceUnavailable, status, "%s", body)
	assert.Equal(t, CodeBackendFailed, deref(decodeError(t, body).Code))
	assert.Less(t, time.Since(start), time.Second, "fails at once")

	status, _, body = ts.get(t, "/metrics")
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, string(body), `m40llm_http_requests_total{code="503",route="POST /v1/completions"} 1`)
}
