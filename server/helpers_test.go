package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
)

const (
	modelName = "stories260K"
	testKey   = "test-key"
)

// testBackend is the CPU backend with switches for tests: Read, ReadTopK
// and Sync fail while fail is set (with a device out-of-memory error while
// oom is set, and for good, as after a device fault, once a failure
// happens while sticky is set), Read and ReadTopK panic while panic is
// set and sleep for delay (so that a step takes about that long), and it
// reports a fake device memory.
type testBackend struct {
	*cpu.Backend
	fail, oom, sticky atomic.Bool
	panic             atomic.Bool // Read panics, as a backend with a broken invariant would
	delay             atomic.Int64
	broken            atomic.Pointer[error]
}

var errInjected = errors.New("injected backend failure")

// failure returns the error a call fails with, or nil.
func (b *testBackend) failure() error {
	if p := b.broken.Load(); p != nil {
		return *p
	}
	if !b.fail.Load() {
		return nil
	}
	err := errInjected
	if b.oom.Load() {
		err = fmt.Errorf("scratch: %w", &cudadrv.CallError{Func: "cuMemAlloc_v2", Result: cudadrv.ErrOutOfMemory})
	}
	if b.sticky.Load() {
		b.broken.Store(&err)
	}
	return err
}

func (b *testBackend) Read(dst []float32, src model.Buf, n int) error {
	time.Sleep(time.Duration(b.delay.Load()))
	if b.panic.Load() {
		panic("injected backend panic")
	}
	if err := b.failure(); err != nil {
		return err
	}
	return b.Backend.Read(dst, src, n)
}

func (b *testBackend) ReadTopK(ids []int32, vals []float32, src model.Buf, n, k int) error {
	time.Sleep(time.Duration(b.delay.Load()))
	if b.panic.Load() {
		panic("injected backend panic")
	}
	if err := b.failure(); err != nil {
		return err
	}
	return b.Backend.ReadTopK(ids, vals, src, n, k)
}

func (b *testBackend) Sync() error {
	if err := b.failure(); err != nil {
		return err
	}
	return b.Backend.Sync()
}

// Err reports the failure that made the backend unusable.
func (b *testBackend) Err() error {
	if p := b.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// MemoryUsage pretends to be a device of 1 GiB with 768 MiB in use.
func (b *testBackend) MemoryUsage() model.MemoryUsage {
	return model.MemoryUsage{Weights: 1 << 20, KV: 2 << 20, Activations: 3 << 20, Scratch: 4 << 20, DeviceUsed: 768 << 20, DeviceTotal: 1 << 30}
}

// loadModel loads the bundled model on the CPU backend with slots slots
// of ctx positions.
func loadModel(t testing.TB, slots, ctx int) (*model.Model, *testBackend) {
	t.Helper()
	be := &testBackend{Backend: cpu.New(cpu.Options{Threads: 2})}
	m, err := model.Load(fixture.BundledModel(t), be, model.Options{Slots: slots, CtxSize: ctx})
	require.NoError(t, err)
	return m, be
}

type testServer struct {
	srv *Server
	ts  *httptest.Server
	m   *model.Model
	be  *testBackend
}

// startServer serves the bundled model on a loopback port. opts.Name
// defaults to modelName and opts.APIKey to testKey ("-" for none).
func startServer(t testing.TB, slots, ctx int, opts Options) *testServer {
	t.Helper()
	m, be := loadModel(t, slots, ctx)
	t.Cleanup(func() { m.Close() })
	ts := serve(t, m, opts)
	ts.be = be
	return ts
}

// serve serves m (closed by the caller) as startServer does.
func serve(t testing.TB, m *model.Model, opts Options) *testServer {
	t.Helper()
	if opts.Name == "" {
		opts.Name = modelName
	}
	switch opts.APIKey {
	case "":
		opts.APIKey = testKey
	case "-":
		opts.APIKey = ""
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv := New(opts)
	require.NoError(t, srv.Start(m))
	// The http.Server that `m40llm serve` runs, with its timeouts and limits.
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config = srv.HTTPServer()
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { srv.Close() })
	return &testServer{srv: srv, ts: ts, m: m}
}

// client returns an SDK client of the server that does not retry.
func (s *testServer) client(opts ...option.RequestOption) *openai.Client {
	c := openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(s.ts.URL + "/v1/"),
		option.WithAPIKey(testKey),
		option.WithMaxRetries(0),
	}, opts...)...)
	return &c
}

// dial opens a raw connection to the server, closed at the end of the test.
func (s *testServer) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.ts.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// post sends body (a string, or a value to encode) to path with the test
// key and returns the status, the headers and the body.
func (s *testServer) post(t testing.TB, path string, body any) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case string:
		r = bytes.NewBufferString(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(http.MethodPost, s.ts.URL+path, r)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

// postAs is post with the Content-Type header ct (none when empty) and
// body sent as it is.
func (s *testServer) postAs(t testing.TB, path, ct, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.ts.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	return do(t, req)
}

func (s *testServer) get(t testing.TB, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.ts.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, data
}

// decodeError decodes an OpenAI error body.
func decodeError(t testing.TB, body []byte) ErrorDetail {
	t.Helper()
	var e ErrorBody
	require.NoError(t, json.Unmarshal(body, &e), "error body %s", body)
	return e.Error
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
