package server

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvstore/kv/lsm"
)

// engineMetrics is implemented by stores that can report engine metrics.
type engineMetrics interface {
	EngineMetrics() lsm.Metrics
}

// healthChecker is implemented by stores that can tell when their storage
// is unwell: it cannot take writes (a full disk, a failed write path) or
// a read found a damaged table.
type healthChecker interface {
	Health() error
}

// storeHealth is st's Health, or nil for a store without one.
func storeHealth(st any) error {
	if h, ok := st.(healthChecker); ok {
		return h.Health()
	}
	return nil
}

// infoText renders INFO in Redis's "# Section" / "field:value" layout.
// No section, or "all"/"everything"/"default" among them, means every
// section; otherwise the named ones, in the server's order (as Redis 7).
func (s *Server) infoText(sections ...string) string {
	all := len(sections) == 0
	for _, sec := range sections {
		all = all || sec == "all" || sec == "everything" || sec == "default"
	}
	var b strings.Builder
	add := func(name string, fn func(w func(k string, v any))) {
		if !all && !slices.Contains(sections, name) {
			return
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(name[:1]) + name[1:] + "\r\n")
		fn(func(k string, v any) { fmt.Fprintf(&b, "%s:%v\r\n", k, v) })
	}
	add("server", func(w func(string, any)) {
		_, port, _ := net.SplitHostPort(s.cfg.Listen)
		w("redis_version", "7.0.0")
		w("kv_version", s.info.Version)
		w("kv_mode", s.info.Mode)
		w("os", runtime.GOOS+" "+runtime.GOARCH)
		w("go_version", runtime.Version())
		w("process_id", os.Getpid())
		w("tcp_port", port)
		w("uptime_in_seconds", int64(time.Since(s.started).Seconds()))
		w("event_loops", EventLoops(s.cfg))
	})
	add("clients", func(w func(string, any)) {
		w("connected_clients", s.conns.Load())
		w("maxclients", s.cfg.MaxConnections)
		w("blocked_clients", 0) // no blocking commands
		// Requests received and not yet parsed, all clients together, and
		// the bound past which the biggest holder is closed.
		w("input_buffered_bytes", s.input.Load())
		w("max_input_bytes", int64(s.cfg.MaxInputBytes))
		// Replies not yet sent, all clients together (up to a millisecond
		// behind), and the bound past which the biggest holder is closed.
		w("output_buffered_bytes", s.output.Load())
		w("max_total_output_bytes", int64(s.cfg.MaxTotalOutputBytes))
	})
	add("memory", func(w func(string, any)) {
		heap, limit := goMemory()
		w("used_memory", heap)
		w("used_memory_human", humanBytes(heap))
		if rss, ok := residentBytes(); ok {
			w("used_memory_rss", rss)
			w("used_memory_rss_human", humanBytes(rss))
		}
		w("maxmemory", 0) // nothing is evicted: the memory limit paces the garbage collector
		w("maxmemory_policy", "noeviction")
		w("go_memory_limit", limit)
		w("go_memory_limit_human", humanBytes(limit))
	})
	add("stats", func(w func(string, any)) {
		w("total_connections_received", s.totalConns.Load())
		w("total_commands_processed", s.metrics.totalRequests())
		w("rejected_connections", s.rejected.Load())
		w("inflight_requests", s.inflight.Load())
		w("direct_replies", s.metrics.directReplies())
	})
	add("replication", func(w func(string, any)) {
		// Every node takes writes (a cluster node proposes them to the
		// shard's raft leader), and none is a Redis replica: what
		// monitoring tools read to tell a primary.
		w("role", "master")
		w("connected_slaves", 0)
	})
	add("persistence", func(w func(string, any)) {
		w("engine", "lsm")
		w("data_dir", s.info.DataDir)
		w("sync", s.info.Sync)
		if err := storeHealth(s.store); err != nil {
			w("storage_status", "err")
			w("storage_error", strings.ReplaceAll(err.Error(), "\r\n", " "))
		} else {
			w("storage_status", "ok")
		}
		w("aof_enabled", 0)
		w("rdb_bgsave_in_progress", 0)
		if em, ok := s.store.(engineMetrics); ok {
			m := em.EngineMetrics()
			for i, l := range m.Levels {
				w("level"+strconv.Itoa(i), fmt.Sprintf("files=%d,bytes=%d", l.Files, l.Bytes))
			}
			w("memtable_bytes", m.MemtableBytes)
			w("immutable_memtables", m.ImmutableMemtables)
			w("wal_bytes", m.WALBytes)
			w("wal_syncs", m.WALSyncs)
			w("flushes", m.Flushes)
			w("compactions", m.Compactions)
			w("write_amplification", fmt.Sprintf("%.2f", m.WriteAmp))
			w("write_stalls", m.StallCount)
			w("write_stall_seconds", fmt.Sprintf("%.3f", m.StallDuration.Seconds()))
			w("write_slowdowns", m.SlowdownCount)
			w("block_cache_hits", m.CacheHits)
			w("block_cache_misses", m.CacheMisses)
			w("corrupt_reads", m.CorruptReads)
			w("table_files_open", m.TableFilesOpen)
			w("table_file_reopens", m.TableFileReopens)
			w("table_memory", m.TableMemory)
		}
	})
	add("keyspace", func(w func(string, any)) {
		n := s.store.ApproxKeys()
		w("db0", fmt.Sprintf("keys=%d,expires=0,avg_ttl=0", n))
		w("keys_are_estimate", "yes (DBSIZE is table entries less two per tombstone: overwritten versions not yet compacted count twice, a tombstone whose key is already gone counts negative)")
	})
	add("cluster", func(w func(string, any)) {
		st := s.store.Status()
		enabled := 0
		if st.Mode == "cluster" {
			enabled = 1
		}
		w("cluster_enabled", enabled)
		w("mode", st.Mode)
		w("state", st.State)
		w("node_id", st.NodeID)
		w("nodes", st.Nodes)
		w("nodes_up", st.NodesUp)
		w("shards", st.Shards)
		w("shards_with_leader", st.ShardsWithLeader)
		w("nodes_nonvoting", st.NodesNonVoting)
		w("shards_led", st.ShardsLed)
	})
	return b.String()
}

// configParams is what CONFIG GET can see, with Redis's names where one
// exists so Redis tools understand them.
func (s *Server) configParams() [][2]string {
	appendonly := "no"
	if s.info.Sync == "always" || s.info.Sync == "batch" || s.info.Sync == "raft" {
		appendonly = "yes"
	}
	// "raft": a cluster node acknowledges a write once a quorum has fsynced
	// its raft log, which is "always" to a Redis tool.
	fsync := map[string]string{"always": "always", "batch": "everysec", "none": "no", "raft": "always"}[s.info.Sync]
	host, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		host = s.cfg.Listen
	}
	return [][2]string{
		{"save", ""},
		{"appendonly", appendonly},
		{"appendfsync", fsync},
		{"maxclients", strconv.Itoa(s.cfg.MaxConnections)},
		{"timeout", strconv.Itoa(int(s.cfg.IdleTimeout.D() / time.Second))},
		{"proto-max-bulk-len", strconv.FormatInt(int64(s.cfg.MaxFrameBytes), 10)},
		{"databases", "1"},
		// As Redis answers (an authenticated client): "" said "no
		// password" to tools when one was set.
		{"requirepass", s.cfg.RequirePass},
		{"dir", s.info.DataDir},
		{"bind", host},
		{"port", port},
		{"maxmemory", "0"},
	}
}

// goMemory returns the bytes of live and not yet swept heap objects (what
// Redis calls used_memory: what the allocator handed out) and the
// runtime's soft memory limit, read without stopping the world.
func goMemory() (heap, limit int64) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(samples)
	return int64(samples[0].Value.Uint64()), int64(samples[1].Value.Uint64())
}

// residentBytes is the process's resident set size (Linux).
func residentBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}

// humanBytes renders n as Redis's *_human fields do (1.50M, 896.00M).
func humanBytes(n int64) string {
	const units = "BKMGTP"
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatInt(n, 10) + "B"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + units[i:i+1]
}
