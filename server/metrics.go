package server

import (
	"github.com/m40llm/m40llm/model"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus metrics, in one registry per Server.
type metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	promptTokens    prometheus.Counter
	cachedTokens    prometheus.Counter
	generatedTokens prometheus.Counter
	ttft            prometheus.Histogram
	tokenLatency    prometheus.Histogram
	queueWait       prometheus.Histogram
	batchTokens     prometheus.Histogram
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	latency := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "m40llm_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "m40llm_prompt_tokens_total", Help: "Prompt tokens evaluated (cached ones excluded).",
		}),
		cachedTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "m40llm_prompt_tokens_cached_total", Help: "Prompt tokens reused from a slot's KV cache.",
		}),
		generatedTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "m40llm_generated_tokens_total", Help: "Tokens generated.",
		}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "m40llm_time_to_first_token_seconds", Help: "Time from a request's arrival to its first generated token.",
			Buckets: latency,
		}),
		tokenLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "m40llm_time_per_output_token_seconds", Help: "Time between consecutive generated tokens of a request.",
			Buckets: latency,
		}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "m40llm_queue_wait_seconds", Help: "Time a request waited for a slot.",
			Buckets: latency,
		}),
		batchTokens: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "m40llm_batch_tokens", Help: "Tokens per forward pass.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
	reg.MustRegister(m.requests, m.promptTokens, m.cachedTokens, m.generatedTokens, m.ttft, m.tokenLatency,
		m.queueWait, m.batchTokens,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// addEngine exports the gauges of the engine that serves the requests:
// requests running and waiting, and the KV cache positions in use out of
// capacity.
func (m *metrics) addEngine(e *model.Engine, capacity int) {
	gauge := func(name, help string, f func(active, queued, cached int) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(e.Stats()) })
	}
	m.reg.MustRegister(
		gauge("m40llm_requests_active", "Requests holding a slot.",
			func(a, _, _ int) float64 { return float64(a) }),
		gauge("m40llm_requests_queued", "Requests waiting for a slot.",
			func(_, q, _ int) float64 { return float64(q) }),
		gauge("m40llm_kv_cache_tokens", "KV cache positions holding tokens (kept after a request for prefix reuse).",
			func(_, _, c int) float64 { return float64(c) }),
		gauge("m40llm_kv_cache_usage_ratio", "Fraction of the KV cache positions holding tokens.",
			func(_, _, c int) float64 { return float64(c) / float64(capacity) }),
	)
}

// addDeviceMemory exports the memory of a backend that reports it (the
// CUDA backend).
func (m *metrics) addDeviceMemory(mr model.MemoryReporter) {
	m.reg.MustRegister(&memoryCollector{mr: mr})
}

// memoryCollector reads model.MemoryUsage once per scrape.
type memoryCollector struct {
	mr model.MemoryReporter
}

var (
	gpuUsedDesc = prometheus.NewDesc("m40llm_gpu_memory_used_bytes",
		"Device memory in use by every process (0 when unknown).", nil, nil)
	gpuTotalDesc = prometheus.NewDesc("m40llm_gpu_memory_total_bytes",
		"Device memory in total (0 when unknown).", nil, nil)
	backendMemDesc = prometheus.NewDesc("m40llm_backend_memory_bytes",
		"Device memory the backend holds, by use.", []string{"kind"}, nil)
)

// Describe sends the descriptors of the memory metrics.
func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- gpuUsedDesc
	ch <- gpuTotalDesc
	ch <- backendMemDesc
}

// Collect reads the backend's memory usage.
func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	u := c.mr.MemoryUsage()
	ch <- prometheus.MustNewConstMetric(gpuUsedDesc, prometheus.GaugeValue, float64(u.DeviceUsed))
	ch <- prometheus.MustNewConstMetric(gpuTotalDesc, prometheus.GaugeValue, float64(u.DeviceTotal))
	for _, k := range []struct {
		kind  string
		bytes int64
	}{{"weights", u.Weights}, {"kv", u.KV}, {"activations", u.Activations}, {"scratch", u.Scratch}} {
		ch <- prometheus.MustNewConstMetric(backendMemDesc, prometheus.GaugeValue, float64(k.bytes), k.kind)
	}
}
