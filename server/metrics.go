package server

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/lsm"
)

// Metrics are the server's Prometheus series. Per-command series are
// resolved once when the command tables are built, so the request path does
// no label lookups.
type Metrics struct {
	Connections prometheus.Gauge
	BytesIn     prometheus.Counter
	BytesOut    prometheus.Counter
	Errors      *prometheus.CounterVec
	LimitCloses *prometheus.CounterVec

	requestsVec *prometheus.CounterVec
	latencyVec  *prometheus.HistogramVec
	requests    []prometheus.Counter
	latency     []prometheus.Observer
	opNames     []string // by op id, for labels
}

// NewMetrics creates the server's series and registers them with reg
// (nil: unregistered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kv_connections", Help: "Open client connections."}),
		BytesIn:     prometheus.NewCounter(prometheus.CounterOpts{Name: "kv_net_input_bytes_total", Help: "Request bytes parsed."}),
		BytesOut:    prometheus.NewCounter(prometheus.CounterOpts{Name: "kv_net_output_bytes_total", Help: "Reply bytes written."}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kv_errors_total",
			Help: "Error replies by command (the command's name, or the store operation for store errors; empty when no command was decoded) and cause (protocol, unknown, arity, noauth, store)."},
			[]string{"command", "cause"}),
		LimitCloses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kv_limit_closes_total",
			Help: "Connections closed for exceeding a buffer limit."}, []string{"limit"}),
		requestsVec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kv_requests_total",
			Help: "Requests by command."}, []string{"proto", "command"}),
		latencyVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kv_request_duration_seconds",
			Help:    "Time from dispatch to reply ready, by store operation.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2.5, 14)}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.BytesIn, m.BytesOut, m.Errors, m.LimitCloses, m.requestsVec, m.latencyVec)
	}
	return m
}

// bindCommand allocates the request counter of a command and returns its id.
func (m *Metrics) bindCommand(proto, name string) int {
	m.requests = append(m.requests, m.requestsVec.WithLabelValues(proto, name))
	return len(m.requests) - 1
}

// bindOp allocates the latency histogram of a store operation (get, put,
// ...) and returns its id.
func (m *Metrics) bindOp(name string) int {
	m.latency = append(m.latency, m.latencyVec.WithLabelValues(name))
	m.opNames = append(m.opNames, name)
	return len(m.latency) - 1
}

// NewEngineCollector exports engine metrics (levels, compactions, stalls,
// cache, WAL) read from fn at scrape time.
func NewEngineCollector(fn func() lsm.Metrics) prometheus.Collector {
	return engineCollector{fn: fn}
}

type engineCollector struct{ fn func() lsm.Metrics }

var (
	descLevelFiles   = prometheus.NewDesc("kv_engine_level_files", "SSTables per level.", []string{"level"}, nil)
	descLevelBytes   = prometheus.NewDesc("kv_engine_level_bytes", "Bytes per level.", []string{"level"}, nil)
	descMemtable     = prometheus.NewDesc("kv_engine_memtable_bytes", "Bytes in memtables.", nil, nil)
	descImmutable    = prometheus.NewDesc("kv_engine_immutable_memtables", "Memtables waiting to be flushed.", nil, nil)
	descWALBytes     = prometheus.NewDesc("kv_engine_wal_bytes_total", "Bytes written to the WAL.", nil, nil)
	descWALSyncs     = prometheus.NewDesc("kv_engine_wal_syncs_total", "WAL fsyncs.", nil, nil)
	descFlushes      = prometheus.NewDesc("kv_engine_flushes_total", "Memtable flushes.", nil, nil)
	descCompactions  = prometheus.NewDesc("kv_engine_compactions_total", "Compactions.", nil, nil)
	descCompRead     = prometheus.NewDesc("kv_engine_compaction_read_bytes_total", "Bytes read by compactions.", nil, nil)
	descCompWritten  = prometheus.NewDesc("kv_engine_compaction_written_bytes_total", "Bytes written by compactions.", nil, nil)
	descWriteAmp     = prometheus.NewDesc("kv_engine_write_amplification", "Bytes written to tables per user byte.", nil, nil)
	descStalls       = prometheus.NewDesc("kv_engine_write_stalls_total", "Times writes stopped for compaction.", nil, nil)
	descStallSeconds = prometheus.NewDesc("kv_engine_write_stall_seconds_total", "Time writes spent stopped.", nil, nil)
	descSlowdowns    = prometheus.NewDesc("kv_engine_write_slowdowns_total", "Times writes were slowed.", nil, nil)
	descCacheHits    = prometheus.NewDesc("kv_engine_cache_hits_total", "Block cache hits.", nil, nil)
	descCacheMisses  = prometheus.NewDesc("kv_engine_cache_misses_total", "Block cache misses.", nil, nil)
	descKeys         = prometheus.NewDesc("kv_engine_keys_estimate", "Estimated entries (includes overwritten and deleted).", nil, nil)
)

func (engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLevelFiles, descLevelBytes, descMemtable, descImmutable, descWALBytes,
		descWALSyncs, descFlushes, descCompactions, descCompRead, descCompWritten, descWriteAmp, descStalls,
		descStallSeconds, descSlowdowns, descCacheHits, descCacheMisses, descKeys} {
		ch <- d
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.fn()
	for i, l := range m.Levels {
		lv := strconv.Itoa(i)
		ch <- prometheus.MustNewConstMetric(descLevelFiles, prometheus.GaugeValue, float64(l.Files), lv)
		ch <- prometheus.MustNewConstMetric(descLevelBytes, prometheus.GaugeValue, float64(l.Bytes), lv)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descMemtable, float64(m.MemtableBytes))
	gauge(descImmutable, float64(m.ImmutableMemtables))
	counter(descWALBytes, float64(m.WALBytes))
	counter(descWALSyncs, float64(m.WALSyncs))
	counter(descFlushes, float64(m.Flushes))
	counter(descCompactions, float64(m.Compactions))
	counter(descCompRead, float64(m.CompactionBytesRead))
	counter(descCompWritten, float64(m.CompactionBytesWritten))
	gauge(descWriteAmp, m.WriteAmp)
	counter(descStalls, float64(m.StallCount))
	counter(descStallSeconds, m.StallDuration.Seconds())
	counter(descSlowdowns, float64(m.SlowdownCount))
	counter(descCacheHits, float64(m.CacheHits))
	counter(descCacheMisses, float64(m.CacheMisses))
	gauge(descKeys, float64(m.ApproxKeys))
}
