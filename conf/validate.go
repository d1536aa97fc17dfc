package conf

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Validate checks every value's range and the relations between values
// (max_frame_bytes >= max_key_bytes, l0_stop_writes > l0_compaction_trigger,
// cluster membership). The error lists every problem, one "key: message"
// per line. Cluster settings are checked only when cluster.enabled is set.
func (c Config) Validate() error {
	errs := c.validate()
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%s: %s", e.key, e.msg)
	}
	return errors.Join(out...)
}

// checker accumulates keyErrors; its methods keep validate a flat list.
type checker struct{ errs []keyError }

func (ch *checker) fail(key, format string, args ...any) {
	ch.errs = append(ch.errs, keyError{key, fmt.Sprintf(format, args...)})
}

func (ch *checker) positive(key string, n int64) {
	if n <= 0 {
		ch.fail(key, "must be greater than 0, got %d", n)
	}
}

func (ch *checker) nonNegative(key string, n int64) {
	if n < 0 {
		ch.fail(key, "must not be negative, got %d", n)
	}
}

// maxBudget bounds the memory budgets (memtables, block cache): far
// above any machine's memory, far below what overflows the arithmetic
// built on them (the cache's admission counters, the memory limit).
const maxBudget = TiB

func (ch *checker) size(key string, b ByteSize) {
	if b <= 0 {
		ch.fail(key, "must be greater than 0, got %d", int64(b))
	}
}

func (ch *checker) budget(key string, b ByteSize) {
	ch.size(key, b)
	if b > maxBudget {
		ch.fail(key, "must be at most %s, got %s", maxBudget, b)
	}
}

func (ch *checker) oneOf(key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	ch.fail(key, "must be %s, got %q", quoteList(allowed), v)
}

// address checks a host:port pair with a numeric port; the host may be
// empty (all interfaces) but the port must be present.
func (ch *checker) address(key, addr string) {
	if err := checkAddress(addr); err != nil {
		ch.fail(key, "%v", err)
	}
}

// dialable reports whether the host:port addr names a host a client can
// dial: not empty, 0.0.0.0 or [::] (listen on every interface).
func dialable(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsUnspecified()
}

func checkAddress(addr string) error {
	if addr == "" {
		return errors.New("must be a host:port address, got \"\"")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be a host:port address, got %q", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return fmt.Errorf("must be a host:port address with a port number 0-65535, got %q", addr)
	}
	return nil
}

// quoteList renders ["a" "b" "c"] as `"a", "b" or "c"`.
func quoteList(vs []string) string {
	s := ""
	for i, v := range vs {
		switch {
		case i == 0:
		case i == len(vs)-1:
			s += " or "
		default:
			s += ", "
		}
		s += strconv.Quote(v)
	}
	return s
}

// maxShards bounds cluster.shards: every shard is a raft group with a
// replica on every member, each with its own engine and goroutines.
const maxShards = 1024

func (c Config) validate() []keyError {
	var ch checker

	s := c.Server
	ch.address("server.listen", s.Listen)
	if s.AdminListen != "" {
		ch.address("server.admin_listen", s.AdminListen)
	}
	ch.nonNegative("server.event_loops", int64(s.EventLoops))
	ch.positive("server.max_connections", int64(s.MaxConnections))
	ch.size("server.max_frame_bytes", s.MaxFrameBytes)
	ch.size("server.max_key_bytes", s.MaxKeyBytes)
	if s.MaxKeyBytes > 0 && s.MaxFrameBytes > 0 && s.MaxFrameBytes < s.MaxKeyBytes {
		ch.fail("server.max_frame_bytes", "must be at least server.max_key_bytes (%s), got %s", s.MaxKeyBytes, s.MaxFrameBytes)
	}
	// PUT|key|value and SET key value need three fields.
	if s.MaxArgs < 3 {
		ch.fail("server.max_args", "must be at least 3, got %d", s.MaxArgs)
	}
	ch.size("server.max_output_bytes", s.MaxOutputBytes)
	ch.size("server.max_input_bytes", s.MaxInputBytes)
	// One client may hold two frames' worth before it is closed; a budget
	// below that would refuse a request of the largest allowed size.
	if s.MaxInputBytes > 0 && s.MaxFrameBytes > 0 && s.MaxInputBytes < 2*s.MaxFrameBytes {
		ch.fail("server.max_input_bytes", "must be at least twice server.max_frame_bytes (%s), got %s", s.MaxFrameBytes, s.MaxInputBytes)
	}
	ch.nonNegative("server.max_total_output_bytes", int64(s.MaxTotalOutputBytes))
	// Below one connection's limit, a single client reading its replies
	// within its own limit would be closed for the total.
	if s.MaxTotalOutputBytes > 0 && s.MaxOutputBytes > 0 && s.MaxTotalOutputBytes < s.MaxOutputBytes {
		ch.fail("server.max_total_output_bytes", "must be 0 or at least server.max_output_bytes (%s), got %s", s.MaxOutputBytes, s.MaxTotalOutputBytes)
	}
	s.validateTLS(&ch)
	ch.positive("server.range_limit", int64(s.RangeLimit))
	if s.IdleTimeout < 0 {
		ch.fail("server.idle_timeout", "must not be negative, got %s", s.IdleTimeout)
	}

	st := c.Storage
	if st.Dir == "" {
		ch.fail("storage.dir", "must not be empty")
	}
	ch.oneOf("storage.sync", st.Sync, SyncAlways, SyncBatch, SyncNone)
	if st.SyncInterval < 0 || (st.Sync == SyncBatch && st.SyncInterval == 0) {
		ch.fail("storage.sync_interval", "must be greater than 0, got %s", st.SyncInterval)
	}
	ch.budget("storage.memtable_bytes", st.MemtableBytes)
	ch.budget("storage.block_cache_bytes", st.BlockCacheBytes)
	ch.positive("storage.max_open_tables", int64(st.MaxOpenTables))
	ch.size("storage.block_bytes", st.BlockBytes)
	if st.BlockBytes > 0 && st.MemtableBytes > 0 && st.BlockBytes > st.MemtableBytes {
		ch.fail("storage.block_bytes", "must not exceed storage.memtable_bytes (%s), got %s", st.MemtableBytes, st.BlockBytes)
	}
	ch.oneOf("storage.compression", st.Compression, CompressionS2, CompressionZstd, CompressionNone)
	ch.positive("storage.l0_compaction_trigger", int64(st.L0CompactionTrigger))
	if st.L0StopWrites <= st.L0CompactionTrigger {
		ch.fail("storage.l0_stop_writes", "must be greater than storage.l0_compaction_trigger (%d), got %d", st.L0CompactionTrigger, st.L0StopWrites)
	}
	ch.size("storage.level_base_bytes", st.LevelBaseBytes)

	if c.Cluster.Enabled {
		c.Cluster.validate(&ch, c.Server.Listen)
	}

	ch.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	ch.oneOf("log.format", c.Log.Format, "text", "json")
	return ch.errs
}

// validateTLS checks the server.tls_* keys and admin_tls: a TLS port or
// an HTTPS admin endpoint needs a certificate and its key, and those mean
// nothing without either.
func (s Server) validateTLS(ch *checker) {
	if s.TLSListen != "" {
		ch.address("server.tls_listen", s.TLSListen)
		if s.TLSListen == s.Listen {
			ch.fail("server.tls_listen", "must differ from server.listen (%q)", s.Listen)
		}
	}
	if s.AdminTLS && s.AdminListen == "" {
		ch.fail("server.admin_tls", "is set but server.admin_listen is off")
	}
	if s.TLSListen == "" && !s.AdminTLS {
		for _, k := range []struct{ key, v string }{
			{"server.tls_cert_file", s.TLSCertFile}, {"server.tls_key_file", s.TLSKeyFile}, {"server.tls_ca_file", s.TLSCAFile},
		} {
			if k.v != "" {
				ch.fail(k.key, "is set but neither server.tls_listen nor server.admin_tls is (what it is for)")
			}
		}
		return
	}
	user := "server.tls_listen"
	if s.TLSListen == "" {
		user = "server.admin_tls"
	}
	if s.TLSCertFile == "" {
		ch.fail("server.tls_cert_file", "must be set when %s is set", user)
	}
	if s.TLSKeyFile == "" {
		ch.fail("server.tls_key_file", "must be set when %s is set", user)
	}
}

// PeerTLS reports whether raft connections use mutual TLS: all three
// cluster.tls_* files are set.
func (cl Cluster) PeerTLS() bool {
	return cl.TLSCertFile != "" && cl.TLSKeyFile != "" && cl.TLSCAFile != ""
}

// validate checks the cluster section; listen is server.listen, which a
// joining node tells the cluster as its client address unless
// cluster.client_address says otherwise.
func (cl Cluster) validate(ch *checker, listen string) {
	if cl.NodeID == 0 {
		ch.fail("cluster.node_id", "must be set (greater than 0) when cluster.enabled is true")
	}
	ch.address("cluster.raft_address", cl.RaftAddress)
	if cl.ClientAddress != "" {
		ch.address("cluster.client_address", cl.ClientAddress)
	} else if len(cl.Join) > 0 && !dialable(listen) {
		// CLUSTER_NODES and CLUSTER_LEADER hand this address to clients.
		ch.fail("cluster.client_address", "must be set when cluster.join is set and server.listen (%q) names no host clients can dial", listen)
	}
	if cl.Shards < 1 || cl.Shards > maxShards {
		ch.fail("cluster.shards", "must be between 1 and %d, got %d", maxShards, cl.Shards)
	}
	ch.positive("cluster.rtt_ms", int64(cl.RTTMillis))
	ch.positive("cluster.heartbeat_rtt", int64(cl.HeartbeatRTT))
	// Raft needs several heartbeats per election timeout, or followers
	// start elections against a healthy leader; dragonboat refuses
	// election_rtt <= 2 * heartbeat_rtt.
	if cl.ElectionRTT <= 2*cl.HeartbeatRTT {
		ch.fail("cluster.election_rtt", "must be greater than 2 * cluster.heartbeat_rtt (%d), got %d", 2*cl.HeartbeatRTT, cl.ElectionRTT)
	}
	ch.oneOf("cluster.read_consistency", cl.ReadConsistency, ReadLinearizable, ReadStale)
	for i, a := range cl.Join {
		ch.address(fmt.Sprintf("cluster.join[%d]", i), a)
	}
	ch.nonNegative("cluster.snapshot_entries", int64(cl.SnapshotEntries))
	if cl.MaxRaftLogBytes < MiB {
		ch.fail("cluster.max_raft_log_bytes", "must be at least 1MiB, got %s", cl.MaxRaftLogBytes)
	}
	if cl.RequestTimeout <= 0 {
		ch.fail("cluster.request_timeout", "must be greater than 0, got %s", cl.RequestTimeout)
	}
	ch.nonNegative("cluster.min_free_bytes", int64(cl.MinFreeBytes))
	if set := cl.PeerTLS(); !set && (cl.TLSCertFile != "" || cl.TLSKeyFile != "" || cl.TLSCAFile != "") {
		for _, k := range []struct{ key, v string }{
			{"cluster.tls_cert_file", cl.TLSCertFile}, {"cluster.tls_key_file", cl.TLSKeyFile}, {"cluster.tls_ca_file", cl.TLSCAFile},
		} {
			if k.v == "" {
				ch.fail(k.key, "must be set with the other cluster.tls_* keys (mutual TLS needs a certificate, its key and the CA)")
			}
		}
	}

	ids := map[uint64]int{}
	rafts := map[string]int{}
	clients := map[string]int{}
	self := false
	for i, m := range cl.Members {
		key := fmt.Sprintf("cluster.members[%d]", i)
		if m.ID == 0 {
			ch.fail(key+".id", "must be greater than 0")
		} else if j, dup := ids[m.ID]; dup {
			ch.fail(key+".id", "duplicates cluster.members[%d].id (%d)", j, m.ID)
		} else {
			ids[m.ID] = i
		}
		ch.address(key+".raft", m.Raft)
		if j, dup := rafts[m.Raft]; dup && m.Raft != "" {
			ch.fail(key+".raft", "duplicates cluster.members[%d].raft (%q)", j, m.Raft)
		} else {
			rafts[m.Raft] = i
		}
		ch.address(key+".client", m.Client)
		if j, dup := clients[m.Client]; dup && m.Client != "" {
			ch.fail(key+".client", "duplicates cluster.members[%d].client (%q)", j, m.Client)
		} else {
			clients[m.Client] = i
		}
		if m.ID == cl.NodeID && cl.NodeID != 0 {
			self = true
			if m.Raft != cl.RaftAddress {
				ch.fail(key+".raft", "is this node (id %d) but differs from cluster.raft_address (%q), got %q", m.ID, cl.RaftAddress, m.Raft)
			}
			if cl.ClientAddress != "" && m.Client != cl.ClientAddress {
				ch.fail(key+".client", "is this node (id %d) but differs from cluster.client_address (%q), got %q", m.ID, cl.ClientAddress, m.Client)
			}
		}
	}
	if len(cl.Join) == 0 && cl.NodeID != 0 && !self {
		if len(cl.Members) == 0 {
			ch.fail("cluster.members", "must list the initial members (including this node, id %d) unless cluster.join is set", cl.NodeID)
		} else {
			ch.fail("cluster.members", "must include this node (cluster.node_id = %d) unless cluster.join is set", cl.NodeID)
		}
	}
}
