package cluster

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/internal/loopback"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// testLogger logs to the test's output when -v and KV_TEST_LOG are set,
// and is silent otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("KV_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fsForTest is the filesystem of the cluster tests: the real one, since
// dragonboat's LogDB and the lsm must agree on it.
func fsForTest() vfs.FS { return vfs.Default }

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago (dragonboat needs a real port number, not :0).
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	for len(addrs) < n {
		p, err := loopback.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
	}
	return addrs
}

// testCluster is n Cluster nodes in this process on loopback.
type testCluster struct {
	t     *testing.T
	cfgs  []conf.Config
	nodes []*Cluster // nil while a node is stopped
	// faults[i] cuts node i's raft links (see partition and heal).
	faults []*linkFaults
}

type clusterOpts struct {
	nodes           int
	shards          int
	snapshotEntries int
	stale           bool
	requestTimeout  time.Duration // 0: baseConfig's
	maxFrameBytes   conf.ByteSize // 0: baseConfig's
	electionRTT     int           // 0: baseConfig's
	// configure, if set, adjusts node i's configuration last.
	configure func(i int, cfg *conf.Config)
}

func baseConfig(t testing.TB, id uint64, raft, client string, shards int) conf.Config {
	cfg := conf.Default()
	cfg.Server.Listen = client
	cfg.Storage.Dir = t.TempDir()
	cfg.Storage.MemtableBytes = 4 << 20
	cfg.Storage.BlockCacheBytes = 8 << 20
	cfg.Cluster.Enabled = true
	cfg.Cluster.NodeID = id
	cfg.Cluster.RaftAddress = raft
	cfg.Cluster.Shards = shards
	cfg.Cluster.RTTMillis = 10
	cfg.Cluster.ElectionRTT = 10
	cfg.Cluster.HeartbeatRTT = 1
	// The election timeout grows with the largest request (electionTicks):
	// 8 MiB keeps it near the configured 100 ms, so failovers stay quick.
	// TestLargeWritesKeepLeaders runs with the default.
	cfg.Server.MaxFrameBytes = 8 << 20
	// Generous: under the race detector on two loaded cores a 5 MiB
	// proposal replicated to three in-process nodes once took over 5 s, and a
	// test must not fail on speed. Tests of the timeout path set their own.
	cfg.Cluster.RequestTimeout = conf.Duration(30 * time.Second)
	// The free-space guard runs, but a test does not depend on how full
	// the machine's disk is; space_test.go injects the free space.
	cfg.Cluster.MinFreeBytes = 1 << 20
	// Tests that look for a shard's leader must not have it moved under
	// them; balance_test.go runs the balancer.
	cfg.Cluster.BalanceLeaders = false
	return cfg
}

func newTestCluster(t *testing.T, o clusterOpts) *testCluster {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 3
	}
	if o.shards == 0 {
		o.shards = 4
	}
	addrs := freeAddrs(t, 2*o.nodes)
	var members []conf.Member
	for i := range o.nodes {
		members = append(members, conf.Member{ID: uint64(i + 1), Raft: addrs[2*i], Client: addrs[2*i+1]})
	}
	tc := &testCluster{t: t}
	for i := range o.nodes {
		cfg := baseConfig(t, uint64(i+1), addrs[2*i], addrs[2*i+1], o.shards)
		cfg.Cluster.Members = members
		if o.snapshotEntries > 0 {
			cfg.Cluster.SnapshotEntries = o.snapshotEntries
		}
		if o.stale {
			cfg.Cluster.ReadConsistency = conf.ReadStale
		}
		if o.requestTimeout > 0 {
			cfg.Cluster.RequestTimeout = conf.Duration(o.requestTimeout)
		}
		if o.maxFrameBytes > 0 {
			cfg.Server.MaxFrameBytes = o.maxFrameBytes
		}
		if o.electionRTT > 0 {
			cfg.Cluster.ElectionRTT = o.electionRTT
		}
		if o.configure != nil {
			o.configure(i, &cfg)
		}
		tc.cfgs = append(tc.cfgs, cfg)
		tc.nodes = append(tc.nodes, nil)
		tc.faults = append(tc.faults, new(linkFaults))
	}
	var wg sync.WaitGroup
	errs := make([]error, o.nodes)
	for i := range o.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc.nodes[i], errs[i] = openWithFaults(context.Background(), tc.cfgs[i], testLogger(t).With("node", i+1), fsForTest(), tc.faults[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tc.closeAll()
			t.Fatal(err)
		}
	}
	t.Cleanup(tc.closeAll)
	tc.waitLeaders(tc.live()...)
	return tc
}

func (tc *testCluster) closeAll() {
	for i, n := range tc.nodes {
		if n != nil {
			n.Close()
			tc.nodes[i] = nil
		}
	}
}

// partition cuts the raft links between nodes of different sides, both
// ways; nodes in no side keep their links.
func (tc *testCluster) partition(sides ...[]int) {
	for a, side := range sides {
		for b, other := range sides {
			if a == b {
				continue
			}
			for _, i := range side {
				for _, j := range other {
					tc.faults[i].set(true, tc.cfgs[j].Cluster.RaftAddress)
				}
			}
		}
	}
}

// cutOneWay cuts what node from sends to node to, and nothing else.
func (tc *testCluster) cutOneWay(from, to int) {
	tc.faults[from].set(true, tc.cfgs[to].Cluster.RaftAddress)
}

// heal restores every raft link.
func (tc *testCluster) heal() {
	for i := range tc.faults {
		for j := range tc.cfgs {
			tc.faults[i].set(false, tc.cfgs[j].Cluster.RaftAddress)
		}
	}
}

// live returns the running nodes.
func (tc *testCluster) live() []*Cluster {
	var ns []*Cluster
	for _, n := range tc.nodes {
		if n != nil {
			ns = append(ns, n)
		}
	}
	return ns
}

func (tc *testCluster) stop(i int) {
	tc.t.Helper()
	if err := tc.nodes[i].Close(); err != nil {
		tc.t.Fatal(err)
	}
	tc.nodes[i] = nil
}

func (tc *testCluster) start(i int) {
	tc.t.Helper()
	n, err := openWithFaults(context.Background(), tc.cfgs[i], testLogger(tc.t).With("node", i+1), fsForTest(), tc.faults[i])
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.nodes[i] = n
}

// waitLeaders waits until every given node knows a leader for every shard.
func (tc *testCluster) waitLeaders(nodes ...*Cluster) {
	tc.t.Helper()
	waitFor(tc.t, 20*time.Second, "leaders on every shard", func() bool { return haveLeaders(nodes...) })
}

// haveLeaders reports whether every given node knows a leader for every
// shard.
func haveLeaders(nodes ...*Cluster) bool {
	for _, n := range nodes {
		for s := uint64(1); s <= uint64(n.shards); s++ {
			if _, _, ok, err := n.nh.GetLeaderID(s); err != nil || !ok {
				return false
			}
		}
	}
	return true
}

// others returns the node indexes 0..n-1 but i.
func others(n, i int) []int {
	var o []int
	for j := range n {
		if j != i {
			o = append(o, j)
		}
	}
	return o
}

// leaderOf returns the index of the node leading shard, per node from,
// waiting while from knows none (an election after a fault can leave a
// node without a leader for a moment even after waitLeaders saw one).
func (tc *testCluster) leaderOf(from *Cluster, shard uint64) int {
	tc.t.Helper()
	var id uint64
	waitFor(tc.t, 20*time.Second, fmt.Sprintf("a leader of shard %d", shard), func() bool {
		leader, _, ok, err := from.nh.GetLeaderID(shard)
		id = leader
		return err == nil && ok
	})
	return int(id - 1)
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// poll waits until cond holds or timeout passes, and reports whether cond
// held.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Synchronous wrappers over the callback API.

func put(n *Cluster, key, value string) error {
	return write(n, newBatch(key, value))
}

func write(n *Cluster, b *lsm.Batch) error {
	ch := make(chan error, 1)
	n.Write(b, func(err error) { ch <- err })
	return <-ch
}

func get(n *Cluster, key string) (string, error) {
	type res struct {
		v   []byte
		err error
	}
	ch := make(chan res, 1)
	n.Get([]byte(key), func(v []byte, err error) { ch <- res{v, err} })
	r := <-ch
	return string(r.v), r.err
}

func scan(n *Cluster, start, end string, limit int) ([]store.KV, error) {
	type res struct {
		kvs []store.KV
		err error
	}
	ch := make(chan res, 1)
	n.Range([]byte(start), []byte(end), limit, func(kvs []store.KV, err error) { ch <- res{kvs, err} })
	r := <-ch
	return r.kvs, r.err
}

func clearAll(n *Cluster) error {
	ch := make(chan error, 1)
	n.Clear(func(err error) { ch <- err })
	return <-ch
}

func join(n *Cluster, id uint64, raft, client string) error {
	ch := make(chan error, 1)
	n.Join(id, raft, client, func(err error) { ch <- err })
	return <-ch
}

func remove(n *Cluster, id uint64) error {
	ch := make(chan error, 1)
	n.Remove(id, func(err error) { ch <- err })
	return <-ch
}

// mustPut retries a write until it succeeds, failing the test after a
// while; only for setup, never where a failure matters.
func mustPut(t testing.TB, n *Cluster, key, value string) {
	t.Helper()
	mustWrite(t, n, newBatch(key, value), "put "+key)
}

// mustWrite is mustPut for a batch, what names it in the failure.
func mustWrite(t testing.TB, n *Cluster, b *lsm.Batch, what string) {
	t.Helper()
	var err error
	for range 5 {
		if err = write(n, b); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// serveMembership answers AUTH, CLUSTER_STATUS and CLUSTER_JOIN on addr like the server
// does, for the join tests (the real server lives in another package).
func serveMembership(t testing.TB, addr string, n *Cluster) {
	t.Helper()
	serveFakeMember(t, addr, n, fakeMember{})
}

// fakeMember changes what serveFakeMember answers.
type fakeMember struct {
	// earlierBuild answers CLUSTER_STATUS without nodes_nonvoting, as the
	// builds that added joiners as voters did.
	earlierBuild bool
	// join, if set, carries out CLUSTER_JOIN instead of n.Join; drop closes
	// the connection without a reply.
	join func(id uint64, raft, client string) (drop bool, err error)
}

// serveFakeMember is serveMembership as o says.
func serveFakeMember(t testing.TB, addr string, n *Cluster, o fakeMember) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					f := strings.Split(strings.TrimRight(line, "\r\n"), "|")
					var reply string
					switch {
					case f[0] == "PING":
						reply = "PONG"
					case f[0] == "AUTH":
						reply = "OK"
					case f[0] == "CLUSTER_STATUS":
						st := n.Status()
						reply = fmt.Sprintf("CLUSTER_STATUS|mode=cluster|state=%s|node_id=%d|nodes=%d|nodes_up=%d|shards=%d|shards_with_leader=%d",
							st.State, st.NodeID, st.Nodes, st.NodesUp, st.Shards, st.ShardsWithLeader)
						if !o.earlierBuild {
							reply += fmt.Sprintf("|nodes_nonvoting=%d", st.NodesNonVoting)
						}
					case f[0] == "CLUSTER_HASH" && len(f) == 4:
						var a [3]uint64
						for i := range a {
							a[i], _ = strconv.ParseUint(f[i+1], 10, 64)
						}
						rh, err := n.ReplicaHash(context.Background(), a[0], a[1], a[2])
						if err != nil {
							reply = strings.TrimSuffix(string(codec.AppendPipeStrings(nil, "ERROR", err.Error())), "\n")
						} else {
							reply = fmt.Sprintf("HASH|%s|%d", rh.Hash, rh.Keys)
						}
					case f[0] == "CLUSTER_DEPLOYMENT":
						reply = fmt.Sprintf("DEPLOYMENT|%d", n.Deployment())
					case f[0] == "CLUSTER_JOIN" && len(f) == 4:
						id, _ := strconv.ParseUint(f[1], 10, 64)
						var err error
						drop := false
						if o.join == nil {
							err = join(n, id, f[2], f[3])
						} else {
							drop, err = o.join(id, f[2], f[3])
						}
						if drop {
							return
						}
						if err != nil {
							reply = strings.TrimSuffix(string(codec.AppendPipeStrings(nil, "ERROR", err.Error())), "\n")
						} else {
							reply = "OK"
						}
					default:
						reply = fmt.Sprintf("ERROR|unknown command '%s'", f[0])
					}
					if _, err := conn.Write([]byte(reply + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// loopWriters runs n goroutines, each calling write(w, i) for i = 0, 1, ...
// until stop closes or write returns false, and returns a function that
// waits for all of them.
func loopWriters(n int, stop <-chan struct{}, write func(w, i int) bool) (wait func()) {
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if !write(w, i) {
					return
				}
			}
		}()
	}
	return wg.Wait
}
