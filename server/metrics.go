package server

import (
	"sort"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// Metrics are the server's Prometheus series.
//
// Request counters, latency histograms and byte counters are kept per event
// loop (loopStats) and summed at scrape time: with one shared counter every
// request did several atomic read-modify-writes on cache lines bouncing
// between the loops' cores, which cost 12-20% of GET throughput. Metrics
// implements prometheus.Collector for those series.
type Metrics struct {
	Connections prometheus.Gauge
	Errors      *prometheus.CounterVec
	LimitCloses *prometheus.CounterVec

	cmdProto, cmdNames []string // by command id
	opNames            []string // by op id
	loops              func() []*loopStats
}

var (
	descRequests = prometheus.NewDesc("kv_requests_total", "Requests by command.", []string{"proto", "command"}, nil)
	descLatency  = prometheus.NewDesc("kv_request_duration_seconds",
		"Time from the arrival of the input holding a request to its reply being ready to send, by store operation.", []string{"op"}, nil)
	descBytesIn  = prometheus.NewDesc("kv_net_input_bytes_total", "Request bytes parsed.", nil, nil)
	descBytesOut = prometheus.NewDesc("kv_net_output_bytes_total", "Reply bytes written.", nil, nil)
	descDirect   = prometheus.NewDesc("kv_server_direct_replies_total",
		"Replies written by the goroutine that completed the request instead of the event loop.", nil, nil)

	// latencyBounds are the histogram's upper bounds, 10 µs to ~23 s: a
	// cluster request times out after 5 s by default (request_timeout), and
	// the top bounds must tell those from requests of a second or two.
	// Extending the old series (which ended at 1.49 s) keeps the bounds
	// dashboards already query.
	latencyBounds   = prometheus.ExponentialBuckets(0.00001, 2.5, 17)
	latencyBoundsNs = func() []int64 {
		ns := make([]int64, len(latencyBounds))
		for i, b := range latencyBounds {
			ns[i] = int64(b * 1e9)
		}
		return ns
	}()
)

// The causes of error replies, kv_errors_total's cause label. Every error
// reply is counted where it is encoded (appendErrs, appendRESPErr), under
// one of these.
const (
	causeProtocol = "protocol" // the request could not be decoded
	causeUnknown  = "unknown"  // no such command
	causeArity    = "arity"    // wrong number of arguments
	causeNoAuth   = "noauth"   // AUTH needed first, or a wrong password
	causeInvalid  = "invalid"  // refused as sent: a bad key, argument or option, a disabled command
	causeLimit    = "limit"    // over a buffer limit: a connection's input, max_input_bytes, an MGET reply
	causeShutdown = "shutdown" // the server is shutting down
	causeStore    = "store"    // the store failed the request (storage errors, timeouts, no leader)
)

// NewMetrics creates the server's series and registers them with reg
// (nil: unregistered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kv_connections", Help: "Open client connections."}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kv_errors_total",
			Help: "Error replies by command (the command's name; the store operation for cause store; empty when no command was decoded) " +
				"and cause (protocol, unknown, arity, noauth, invalid, limit, shutdown, store)."},
			[]string{"command", "cause"}),
		LimitCloses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kv_limit_closes_total",
			Help: "Connections closed for exceeding a buffer limit."}, []string{"limit"}),
		loops: func() []*loopStats { return nil },
	}
	// Series that exist before their first event, so that rate() and
	// alerts on them work from the start.
	m.Errors.WithLabelValues("", causeProtocol)
	m.Errors.WithLabelValues("", causeUnknown)
	m.LimitCloses.WithLabelValues("input")
	m.LimitCloses.WithLabelValues("output")
	m.LimitCloses.WithLabelValues("input_total")
	m.LimitCloses.WithLabelValues("output_total")
	if reg != nil {
		reg.MustRegister(m.Connections, m.Errors, m.LimitCloses, m)
	}
	return m
}

// bindCommand names a command's request counter and returns its id.
func (m *Metrics) bindCommand(proto, name string) int {
	m.cmdProto = append(m.cmdProto, proto)
	m.cmdNames = append(m.cmdNames, name)
	return len(m.cmdNames) - 1
}

// bindOp names a store operation's latency histogram and returns its id.
func (m *Metrics) bindOp(name string) int {
	m.opNames = append(m.opNames, name)
	return len(m.opNames) - 1
}

// loopStats are one event loop's counters. Only that loop writes them, so
// the atomic adds are uncontended; scrapes read them from another goroutine.
type loopStats struct {
	requests []atomic.Uint64   // by command id
	buckets  [][]atomic.Uint64 // by op id; len(latencyBounds)+1, the last is +Inf
	sumNs    []atomic.Uint64   // by op id
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	direct   atomic.Uint64 // replies written by their completion (tryDirect)
}

func (m *Metrics) newLoopStats() *loopStats {
	st := &loopStats{
		requests: make([]atomic.Uint64, len(m.cmdNames)),
		buckets:  make([][]atomic.Uint64, len(m.opNames)),
		sumNs:    make([]atomic.Uint64, len(m.opNames)),
	}
	for i := range st.buckets {
		st.buckets[i] = make([]atomic.Uint64, len(latencyBounds)+1)
	}
	return st
}

// observeN records n requests of op that took ns each.
func (st *loopStats) observeN(op int, ns int64, n uint64) {
	i := sort.Search(len(latencyBoundsNs), func(i int) bool { return ns <= latencyBoundsNs[i] })
	st.buckets[op][i].Add(n)
	st.sumNs[op].Add(uint64(max(ns, 0)) * n)
}

// totalRequests sums every loop's request counters.
func (m *Metrics) totalRequests() int64 {
	var n uint64
	for _, st := range m.loops() {
		for i := range st.requests {
			n += st.requests[i].Load()
		}
	}
	return int64(n)
}

// directReplies is the number of replies tryDirect wrote.
func (m *Metrics) directReplies() uint64 {
	var n uint64
	for _, st := range m.loops() {
		n += st.direct.Load()
	}
	return n
}

// Describe implements prometheus.Collector for the per-loop series.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descLatency
	ch <- descBytesIn
	ch <- descBytesOut
	ch <- descDirect
}

// Collect sums the per-loop series.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	loops := m.loops()
	var in, out uint64
	for _, st := range loops {
		in += st.bytesIn.Load()
		out += st.bytesOut.Load()
	}
	ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(in))
	ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(out))
	ch <- prometheus.MustNewConstMetric(descDirect, prometheus.CounterValue, float64(m.directReplies()))
	for id, name := range m.cmdNames {
		var n uint64
		for _, st := range loops {
			n += st.requests[id].Load()
		}
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), m.cmdProto[id], name)
	}
	for op, name := range m.opNames {
		counts := make([]uint64, len(latencyBounds)+1)
		var sumNs uint64
		for _, st := range loops {
			for i := range counts {
				counts[i] += st.buckets[op][i].Load()
			}
			sumNs += st.sumNs[op].Load()
		}
		cum := make(map[float64]uint64, len(latencyBounds))
		var total uint64
		for i, b := range latencyBounds {
			total += counts[i]
			cum[b] = total
		}
		total += counts[len(latencyBounds)]
		ch <- prometheus.MustNewConstHistogram(descLatency, total, float64(sumNs)/1e9, cum, name)
	}
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
	descStalls       = prometheus.NewDesc("kv_engine_write_stalls_total", "Times writes stopped to wait for a flush (memtables full) or a compaction (level 0 full).", nil, nil)
	descStallSeconds = prometheus.NewDesc("kv_engine_write_stall_seconds_total", "Time writes spent stopped, including a stall in progress.", nil, nil)
	descSlowdowns    = prometheus.NewDesc("kv_engine_write_slowdowns_total", "Times writes were slowed.", nil, nil)
	descCacheHits    = prometheus.NewDesc("kv_engine_cache_hits_total", "Block cache hits.", nil, nil)
	descCacheMisses  = prometheus.NewDesc("kv_engine_cache_misses_total", "Block cache misses.", nil, nil)
	descCacheRatio   = prometheus.NewDesc("kv_engine_cache_hit_ratio", "Block cache hits over lookups since start (0 before any).", nil, nil)
	descKeys         = prometheus.NewDesc("kv_engine_keys_estimate", "Estimated live keys (see DBSIZE).", nil, nil)
	descRefused      = prometheus.NewDesc("kv_engine_writes_refused_total", "Write batches refused while flushes failed and the memtables were full.", nil, nil)
	descDiskReads    = prometheus.NewDesc("kv_engine_reads_needing_disk_total", "Point reads that needed the disk, served on a goroutine instead of an event loop.", nil, nil)
	descCorruptReads = prometheus.NewDesc("kv_engine_corrupt_reads_total", "Engine reads that failed because a table is damaged (a block checksum mismatch, say).", nil, nil)
	descTableFiles   = prometheus.NewDesc("kv_engine_table_files_open", "Table files held open (at most storage.max_open_tables).", nil, nil)
	descTableReopens = prometheus.NewDesc("kv_engine_table_file_reopens_total", "Table files reopened after the storage.max_open_tables bound closed them.", nil, nil)
	descTableMemory  = prometheus.NewDesc("kv_engine_table_memory_bytes", "Memory held by open tables' indexes and bloom filters, outside the block cache; grows with the data.", nil, nil)
)

func (engineCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, descLevelFiles, descLevelBytes, descMemtable, descImmutable, descWALBytes,
		descWALSyncs, descFlushes, descCompactions, descCompRead, descCompWritten, descWriteAmp, descStalls,
		descStallSeconds, descSlowdowns, descCacheHits, descCacheMisses, descCacheRatio, descKeys, descRefused, descDiskReads, descCorruptReads,
		descTableFiles, descTableReopens, descTableMemory)
}

// sendGauge and sendCounter send one unlabelled sample.
func sendGauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
}

func sendCounter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
}

// describe sends a collector's descriptions.
func describe(ch chan<- *prometheus.Desc, ds ...*prometheus.Desc) {
	for _, d := range ds {
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
	gauge := func(d *prometheus.Desc, v float64) { sendGauge(ch, d, v) }
	counter := func(d *prometheus.Desc, v float64) { sendCounter(ch, d, v) }
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
	ratio := 0.0
	if n := m.CacheHits + m.CacheMisses; n > 0 {
		ratio = float64(m.CacheHits) / float64(n)
	}
	gauge(descCacheRatio, ratio)
	gauge(descKeys, float64(m.ApproxKeys))
	counter(descRefused, float64(m.WritesRefused))
	counter(descDiskReads, float64(m.ReadsNeedingDisk))
	counter(descCorruptReads, float64(m.CorruptReads))
	gauge(descTableFiles, float64(m.TableFilesOpen))
	counter(descTableReopens, float64(m.TableFileReopens))
	gauge(descTableMemory, float64(m.TableMemory))
}

// NewClusterCollector exports a cluster node's view of the cluster (what
// CLUSTER_STATUS and INFO report) read from fn at scrape time: an alert on
// kv_cluster_state{state="healthy"} == 0 or on kv_cluster_nodes_up <
// kv_cluster_nodes needs no client.
func NewClusterCollector(fn func() store.Status) prometheus.Collector {
	return clusterCollector{fn: fn}
}

type clusterCollector struct{ fn func() store.Status }

var (
	descClusterState   = prometheus.NewDesc("kv_cluster_state", "1 for the cluster's state as this node sees it (healthy, degraded or unavailable), 0 for the others.", []string{"state"}, nil)
	descClusterNodes   = prometheus.NewDesc("kv_cluster_nodes", "Members of the cluster.", nil, nil)
	descClusterUp      = prometheus.NewDesc("kv_cluster_nodes_up", "Members this node can reach.", nil, nil)
	descClusterShards  = prometheus.NewDesc("kv_cluster_shards", "Raft groups (shards).", nil, nil)
	descClusterLeader  = prometheus.NewDesc("kv_cluster_shards_with_leader", "Shards with a known leader.", nil, nil)
	descClusterLed     = prometheus.NewDesc("kv_cluster_shards_led", "Shards this node leads.", nil, nil)
	descClusterMoves   = prometheus.NewDesc("kv_cluster_leader_moves_total", "Shard leaderships this node handed to another to balance leaders.", nil, nil)
	descClusterRecheck = prometheus.NewDesc("kv_cluster_proposal_rechecks_total", "Raft proposals forwarded to another node's leader and sent again for want of an answer.", nil, nil)
)

func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, descClusterState, descClusterNodes, descClusterUp, descClusterShards, descClusterLeader, descClusterLed, descClusterMoves, descClusterRecheck)
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.fn()
	for _, s := range []string{"healthy", "degraded", "unavailable"} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descClusterState, prometheus.GaugeValue, v, s)
	}
	gauge := func(d *prometheus.Desc, v int) { sendGauge(ch, d, float64(v)) }
	gauge(descClusterNodes, st.Nodes)
	gauge(descClusterUp, st.NodesUp)
	gauge(descClusterShards, st.Shards)
	gauge(descClusterLeader, st.ShardsWithLeader)
	gauge(descClusterLed, st.ShardsLed)
	sendCounter(ch, descClusterMoves, float64(st.LeaderMoves))
	sendCounter(ch, descClusterRecheck, float64(st.ProposalRechecks))
}

// RaftLogMetrics is what NewRaftLogCollector exports of a cluster node's
// raft log.
type RaftLogMetrics struct {
	Bytes          int64
	Segments       int
	Syncs          uint64
	Written        uint64
	EarlySnapshots uint64
}

// NewRaftLogCollector exports a cluster node's raft log size and its early
// snapshots, read from fn at scrape time; nothing while fn says false.
func NewRaftLogCollector(fn func() (RaftLogMetrics, bool)) prometheus.Collector {
	return raftLogCollector{fn: fn}
}

type raftLogCollector struct {
	fn func() (RaftLogMetrics, bool)
}

var (
	descRaftLogBytes    = prometheus.NewDesc("kv_raft_log_bytes", "Bytes of the node's raft log files (all shards share one log; zero-filled space included).", nil, nil)
	descRaftLogSegments = prometheus.NewDesc("kv_raft_log_segments", "Files of the node's raft log.", nil, nil)
	descRaftLogSyncs    = prometheus.NewDesc("kv_raft_log_syncs_total", "fdatasyncs of the node's raft log: one per raft round of the node that saved entries or a vote.", nil, nil)
	descRaftLogWritten  = prometheus.NewDesc("kv_raft_log_written_bytes_total", "Bytes written to the node's raft log.", nil, nil)
	descRaftLogEarly    = prometheus.NewDesc("kv_raft_log_early_snapshots_total", "Shard snapshots taken early to keep the raft log under cluster.max_raft_log_bytes.", nil, nil)
)

func (raftLogCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, descRaftLogBytes, descRaftLogSegments, descRaftLogSyncs, descRaftLogWritten, descRaftLogEarly)
}

func (c raftLogCollector) Collect(ch chan<- prometheus.Metric) {
	m, ok := c.fn()
	if !ok {
		return
	}
	sendGauge(ch, descRaftLogBytes, float64(m.Bytes))
	sendGauge(ch, descRaftLogSegments, float64(m.Segments))
	sendCounter(ch, descRaftLogSyncs, float64(m.Syncs))
	sendCounter(ch, descRaftLogWritten, float64(m.Written))
	sendCounter(ch, descRaftLogEarly, float64(m.EarlySnapshots))
}
