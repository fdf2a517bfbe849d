package server

import (
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
	active          prometheus.Gauge
	queued          prometheus.Gauge
	kvTokens        prometheus.Gauge
	kvRatio         prometheus.Gauge
}

// DeviceMemory is implemented by backends that can report the memory of
// their device (the CUDA backend); the server then exports it as
// m40llm_gpu_memory_used_bytes and m40llm_gpu_memory_total_bytes.
type DeviceMemory interface {
	// MemoryInfo returns the free and total bytes of the device.
	MemoryInfo() (free, total uint64, err error)
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
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "m40llm_requests_active", Help: "Requests holding a slot.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "m40llm_requests_queued", Help: "Requests waiting for a slot.",
		}),
		kvTokens: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "m40llm_kv_cache_tokens", Help: "KV cache positions holding tokens (kept after a request for prefix reuse).",
		}),
		kvRatio: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "m40llm_kv_cache_usage_ratio", Help: "Fraction of the KV cache positions holding tokens.",
		}),
	}
	reg.MustRegister(m.requests, m.promptTokens, m.cachedTokens, m.generatedTokens, m.ttft, m.tokenLatency,
		m.queueWait, m.batchTokens, m.active, m.queued, m.kvTokens, m.kvRatio,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// addDeviceMemory exports the device memory of a backend that reports it.
func (m *metrics) addDeviceMemory(dm DeviceMemory) {
	read := func(used bool) float64 {
		free, total, err := dm.MemoryInfo()
		if err != nil {
			return 0
		}
		if used {
			return float64(total - free)
		}
		return float64(total)
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "m40llm_gpu_memory_used_bytes", Help: "Device memory in use (all processes).",
		}, func() float64 { return read(true) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "m40llm_gpu_memory_total_bytes", Help: "Device memory in total.",
		}, func() float64 { return read(false) }),
	)
}
