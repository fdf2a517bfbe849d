package server

import (
	"sync"

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
	loads, unloads  *prometheus.CounterVec
	engines         *engineSet
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
	m.loads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "m40llm_model_loads_total", Help: "Loads of a model of the models directory.",
	}, []string{"model"})
	m.unloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "m40llm_model_unloads_total", Help: "Unloads of a model of the models directory.",
	}, []string{"model"})
	m.engines = &engineSet{engines: map[*model.Engine]engineInfo{}, mems: map[model.MemoryReporter]struct{}{}}
	reg.MustRegister(m.loads, m.unloads, m.engines, &memoryCollector{es: m.engines})
	reg.MustRegister(m.requests, m.promptTokens, m.cachedTokens, m.generatedTokens, m.ttft, m.tokenLatency,
		m.queueWait, m.batchTokens,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// engineSet is the engines serving requests (one per loaded model), as
// the gauges of requests running and waiting and of the KV cache, summed
// over the models and, with a model label, per model.
type engineSet struct {
	mu      sync.Mutex
	engines map[*model.Engine]engineInfo
	mems    map[model.MemoryReporter]struct{}
}

type engineInfo struct {
	name     string // "" for the model given to Start
	capacity int
	layers   map[string]int // layers by device (model.LayersByDevice)
}

var (
	activeDesc   = prometheus.NewDesc("m40llm_requests_active", "Requests holding a slot.", nil, nil)
	queuedDesc   = prometheus.NewDesc("m40llm_requests_queued", "Requests waiting for a slot.", nil, nil)
	kvTokensDesc = prometheus.NewDesc("m40llm_kv_cache_tokens", "KV cache positions holding tokens (kept after a request for prefix reuse).", nil, nil)
	kvRatioDesc  = prometheus.NewDesc("m40llm_kv_cache_usage_ratio", "Fraction of the KV cache positions holding tokens.", nil, nil)
	modelActDesc = prometheus.NewDesc("m40llm_model_requests_active", "Requests holding a slot, by model of the models directory.", []string{"model"}, nil)
	modelKVDesc  = prometheus.NewDesc("m40llm_model_kv_cache_tokens", "KV cache positions holding tokens, by model of the models directory.", []string{"model"}, nil)
	loadedDesc   = prometheus.NewDesc("m40llm_models_loaded", "Models loaded from the models directory.", nil, nil)
	layersDesc   = prometheus.NewDesc("m40llm_model_layers", "Layers a device holds, by model (\"\" for the -m model) and device (cpu, cuda:N).", []string{"model", "device"}, nil)
)

// Describe sends nothing: the set is an unchecked collector, whose
// metrics appear once an engine is added.
func (es *engineSet) Describe(chan<- *prometheus.Desc) {}

// Collect reads every engine's statistics.
func (es *engineSet) Collect(ch chan<- prometheus.Metric) {
	es.mu.Lock()
	defer es.mu.Unlock()
	if len(es.engines) == 0 {
		return
	}
	var active, queued, cached, capacity, dir int
	for e, info := range es.engines {
		a, q, c := e.Stats()
		active, queued, cached, capacity = active+a, queued+q, cached+c, capacity+info.capacity
		for dev, n := range info.layers {
			ch <- prometheus.MustNewConstMetric(layersDesc, prometheus.GaugeValue, float64(n), info.name, dev)
		}
		if info.name != "" {
			dir++
			ch <- prometheus.MustNewConstMetric(modelActDesc, prometheus.GaugeValue, float64(a), info.name)
			ch <- prometheus.MustNewConstMetric(modelKVDesc, prometheus.GaugeValue, float64(c), info.name)
		}
	}
	ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(kvTokensDesc, prometheus.GaugeValue, float64(cached))
	ch <- prometheus.MustNewConstMetric(kvRatioDesc, prometheus.GaugeValue, float64(cached)/float64(max(capacity, 1)))
	ch <- prometheus.MustNewConstMetric(loadedDesc, prometheus.GaugeValue, float64(dir))
}

// addEngine adds the engine of model m (name "" for the one given to
// Start) with capacity KV cache positions.
func (m *metrics) addEngine(e *model.Engine, name string, capacity int, mdl *model.Model) {
	layers := model.LayersByDevice(mdl.Backend(), mdl.Config.Layers)
	m.engines.mu.Lock()
	defer m.engines.mu.Unlock()
	m.engines.engines[e] = engineInfo{name: name, capacity: capacity, layers: layers}
}

// modelLoaded counts a load of the models directory.
func (m *metrics) modelLoaded(name string) { m.loads.WithLabelValues(name).Inc() }

// modelUnloaded forgets the engine and memory of an unloaded model and
// counts the unload.
func (m *metrics) modelUnloaded(name string, s *scheduler) {
	m.unloads.WithLabelValues(name).Inc()
	m.engines.mu.Lock()
	defer m.engines.mu.Unlock()
	delete(m.engines.engines, s.eng)
	if mr, ok := s.m.Backend().(model.MemoryReporter); ok {
		delete(m.engines.mems, mr)
	}
}

// addDeviceMemory exports the memory of a backend that reports it (the
// CUDA backend), summed over the loaded models.
func (m *metrics) addDeviceMemory(mr model.MemoryReporter) {
	m.engines.mu.Lock()
	defer m.engines.mu.Unlock()
	m.engines.mems[mr] = struct{}{}
}

// memoryCollector reads model.MemoryUsage of every backend once per
// scrape; it sends nothing while no backend reports memory.
type memoryCollector struct {
	es *engineSet
}

var (
	gpuUsedDesc = prometheus.NewDesc("m40llm_gpu_memory_used_bytes",
		"Device memory in use by every process (0 when unknown).", nil, nil)
	gpuTotalDesc = prometheus.NewDesc("m40llm_gpu_memory_total_bytes",
		"Device memory in total (0 when unknown).", nil, nil)
	backendMemDesc = prometheus.NewDesc("m40llm_backend_memory_bytes",
		"Device memory the backend holds, by use.", []string{"kind"}, nil)
)

// Describe sends nothing: the collector is unchecked.
func (c *memoryCollector) Describe(chan<- *prometheus.Desc) {}

// Collect reads the backend's memory usage.
func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	c.es.mu.Lock()
	defer c.es.mu.Unlock()
	if len(c.es.mems) == 0 {
		return
	}
	var u model.MemoryUsage
	for mr := range c.es.mems {
		v := mr.MemoryUsage()
		u.Weights, u.KV, u.Activations, u.Scratch = u.Weights+v.Weights, u.KV+v.KV, u.Activations+v.Activations, u.Scratch+v.Scratch
		u.DeviceUsed, u.DeviceTotal = max(u.DeviceUsed, v.DeviceUsed), max(u.DeviceTotal, v.DeviceTotal)
	}
	ch <- prometheus.MustNewConstMetric(gpuUsedDesc, prometheus.GaugeValue, float64(u.DeviceUsed))
	ch <- prometheus.MustNewConstMetric(gpuTotalDesc, prometheus.GaugeValue, float64(u.DeviceTotal))
	for _, k := range []struct {
		kind  string
		bytes int64
	}{{"weights", u.Weights}, {"kv", u.KV}, {"activations", u.Activations}, {"scratch", u.Scratch}} {
		ch <- prometheus.MustNewConstMetric(backendMemDesc, prometheus.GaugeValue, float64(k.bytes), k.kind)
	}
}
