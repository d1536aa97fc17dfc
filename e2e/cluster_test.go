package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kv/client"
)

// testCluster is a set of kvserver processes forming one raft cluster on
// loopback ports.
type testCluster struct {
	t       *testing.T
	dir     string
	nodes   map[int]*node
	raft    map[int]string
	members []int
}

// startCluster starts n members (ids 1..n) and waits until every shard has
// a leader.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, dir: t.TempDir(), nodes: map[int]*node{}, raft: map[int]string{}}
	for id := 1; id <= n; id++ {
		c.members = append(c.members, id)
		c.nodes[id] = &node{
			t:     t,
			addr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			dir:   filepath.Join(c.dir, fmt.Sprintf("node%d", id)),
		}
		c.raft[id] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	for _, id := range c.members {
		c.writeConfig(id, nil)
	}
	var wg sync.WaitGroup
	for _, id := range c.members {
		wg.Add(1)
		go func(nd *node) {
			defer wg.Done()
			nd.start()
		}(c.nodes[id])
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.kill()
		}
	})
	c.waitState(c.nodes[1], "healthy", 30*time.Second)
	return c
}

// writeConfig writes node id's TOML; join lists client addresses to join
// through (a new node), nil for an initial member.
func (c *testCluster) writeConfig(id int, join []string) {
	nd := c.nodes[id]
	var b strings.Builder
	fmt.Fprintf(&b, "[server]\nlisten = %q\nadmin_listen = %q\nevent_loops = 1\n", nd.addr, nd.admin)
	fmt.Fprintf(&b, "[storage]\ndir = %q\nmemtable_bytes = \"8MiB\"\nblock_cache_bytes = \"16MiB\"\n", nd.dir)
	fmt.Fprintf(&b, "[log]\nlevel = \"warn\"\n")
	// With a raft secret: joins, snapshots and probes authenticate.
	fmt.Fprintf(&b, "[cluster]\nenabled = true\nnode_id = %d\nraft_address = %q\nshards = 4\nrtt_ms = 10\nsnapshot_entries = 200\nsecret = \"e2e-raft\"\n", id, c.raft[id])
	if len(join) > 0 {
		fmt.Fprintf(&b, "join = [%q]\n", join[0])
	}
	for _, m := range c.members {
		if m > 3 && len(join) == 0 {
			continue
		}
		if m == id && len(join) > 0 {
			continue
		}
		fmt.Fprintf(&b, "[[cluster.members]]\nid = %d\nraft = %q\nclient = %q\n", m, c.raft[m], c.nodes[m].addr)
	}
	nd.config = filepath.Join(c.dir, fmt.Sprintf("node%d.toml", id))
	if err := os.WriteFile(nd.config, []byte(b.String()), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// status returns CLUSTER_STATUS fields as a map.
func status(t *testing.T, nd *node) map[string]string {
	p := dialPipe(t, nd.addr)
	reply := p.do("CLUSTER_STATUS")
	p.c.Close()
	m := map[string]string{}
	for _, f := range strings.Split(reply, "|")[1:] {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

func (c *testCluster) waitState(nd *node, state string, timeout time.Duration) map[string]string {
	c.t.Helper()
	return c.waitStatus(nd, timeout, func(st map[string]string) bool { return st["state"] == state })
}

func (c *testCluster) waitStatus(nd *node, timeout time.Duration, ok func(map[string]string) bool) map[string]string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var st map[string]string
	for time.Now().Before(deadline) {
		st = status(c.t, nd)
		if ok(st) {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("node at %s never reached the expected status: last %v", nd.addr, st)
	return nil
}

// TestClusterReplicationFailoverRestart covers the cluster's life in one
// run (each step needs the previous one, and starting clusters is slow):
// replication through every node, kill -9 of a leader with writes going on,
// degraded state, restart and catch-up, and a whole-cluster restart, with
// no acknowledged write lost at any point.
func TestClusterReplicationFailoverRestart(t *testing.T) {
	c := startCluster(t, 3)
	acked := map[string]string{}
	var mu sync.Mutex
	put := func(nd *node, k, v string) bool {
		p := dialPipe(t, nd.addr)
		defer p.c.Close()
		if got := p.do("PUT|" + k + "|" + v); got != "OK" {
			return false
		}
		mu.Lock()
		acked[k] = v
		mu.Unlock()
		return true
	}
	// Writes through every node, reads from every node (linearizable).
	for i := 0; i < 60; i++ {
		if !put(c.nodes[i%3+1], fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)) {
			t.Fatalf("write %d through node %d failed", i, i%3+1)
		}
	}
	for id := 1; id <= 3; id++ {
		p := dialPipe(t, c.nodes[id].addr)
		for i := 0; i < 60; i++ {
			if got := p.do(fmt.Sprintf("GET|k%d", i)); got != fmt.Sprintf("VALUE|v%d", i) {
				t.Fatalf("node %d GET k%d: %q", id, i, got)
			}
		}
		if got := p.do("RANGE|k1|k2"); !strings.HasPrefix(got, "RANGE|11|k1|v1|k10|v10|") {
			t.Fatalf("node %d RANGE: %q", id, got)
		}
		// The replicas' engines are in /metrics, and the key estimate
		// counts user keys only (all 60 are still in memtables, where it is
		// exact).
		if v, ok := metricValue(t, c.nodes[id].admin, "kv_engine_keys_estimate"); !ok || v != 60 {
			t.Fatalf("node %d kv_engine_keys_estimate = %v (present %v), want 60", id, v, ok)
		}
		if v, ok := metricValue(t, c.nodes[id].admin, "kv_engine_memtable_bytes"); !ok || v == 0 {
			t.Fatalf("node %d kv_engine_memtable_bytes = %v (present %v)", id, v, ok)
		}
	}

	checkRouting(t, c)

	// Kill -9 the leader of the empty key's shard while writers run.
	leader := leaderID(t, c.nodes[1])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for id := 1; id <= 3; id++ {
		if id == leader {
			continue
		}
		wg.Add(1)
		go func(nd *node, id int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				put(nd, fmt.Sprintf("f%d-%d", id, i), "x")
			}
		}(c.nodes[id], id)
	}
	// The Go client, given every node, writes through the kill too: a
	// request sent to the killed node may fail with an unknown outcome, and
	// new connections go to the survivors; it never fails to find a node.
	gc, err := client.Dial(c.nodes[1].addr+","+c.nodes[2].addr+","+c.nodes[3].addr, client.Options{PoolSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	var gcAfterKill int
	var gcErr error
	killed := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("g%d", i)
			err := gc.Put(context.Background(), []byte(k), []byte("x"))
			var se *client.ServerError
			switch {
			case err == nil:
				mu.Lock()
				acked[k] = "x"
				mu.Unlock()
				select {
				case <-killed:
					gcAfterKill++
				default:
				}
			case !errors.Is(err, client.ErrOutcomeUnknown) && !errors.As(err, &se) && gcErr == nil:
				gcErr = err
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	c.nodes[leader].kill()
	close(killed)
	killedAt := time.Now()
	survivor := c.nodes[leader%3+1]
	// A write through a survivor must succeed within a few seconds.
	deadline := time.Now().Add(10 * time.Second)
	for !put(survivor, "after-failover", "ok") {
		if time.Now().After(deadline) {
			t.Fatal("no write succeeded through a survivor within 10s of killing the leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("first write after kill -9 of leader %d succeeded after %v", leader, time.Since(killedAt))
	c.waitStatus(survivor, 10*time.Second, func(st map[string]string) bool {
		return st["state"] == "degraded" && st["nodes_up"] == "2" && st["shards_with_leader"] == "4"
	})
	close(stop)
	wg.Wait()
	if gcErr != nil || gcAfterKill == 0 {
		t.Fatalf("Go client with every node's address: %d writes after the kill, unexpected error %v", gcAfterKill, gcErr)
	}

	// Restart the killed node: it catches up and the cluster is healthy.
	c.nodes[leader].start()
	c.waitState(c.nodes[leader], "healthy", 30*time.Second)
	checkAcked(t, c.nodes[leader], acked, &mu)

	// Whole-cluster restart keeps every acknowledged write.
	for id := 1; id <= 3; id++ {
		if err := c.nodes[id].terminate(); err != nil {
			t.Fatalf("node %d SIGTERM: %v\n%s", id, err, c.nodes[id].logText())
		}
	}
	var swg sync.WaitGroup
	for id := 1; id <= 3; id++ {
		swg.Add(1)
		go func(nd *node) { defer swg.Done(); nd.start() }(c.nodes[id])
	}
	swg.Wait()
	c.waitState(c.nodes[1], "healthy", 30*time.Second)
	for id := 1; id <= 3; id++ {
		checkAcked(t, c.nodes[id], acked, &mu)
	}
	// After a kill -9, catch-up and a whole-cluster restart, the replicas
	// of every shard hold the same data (each hashed at one raft entry).
	reply := dialPipe(t, c.nodes[2].addr).do("CLUSTER_CHECK")
	t.Logf("%s", reply)
	if !strings.HasPrefix(reply, "CLUSTER_CHECK|") ||
		strings.Count(reply, "state=consistent") != strings.Count(reply, "|shard=") || strings.Count(reply, "|shard=") == 0 {
		t.Fatalf("CLUSTER_CHECK: %q", reply)
	}

	// A stopped (not dead) node counts as down: its raft port still
	// accepts connections, but it does not answer the probe.
	if err := c.nodes[3].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(c.nodes[1], 10*time.Second, func(st map[string]string) bool {
		return st["state"] == "degraded" && st["nodes_up"] == "2"
	})
	if err := c.nodes[3].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.waitState(c.nodes[1], "healthy", 10*time.Second)

	// Two of three down: unavailable.
	c.nodes[2].kill()
	c.nodes[3].kill()
	c.waitState(c.nodes[1], "unavailable", 20*time.Second)
}

func leaderID(t *testing.T, nd *node) int {
	p := dialPipe(t, nd.addr)
	defer p.c.Close()
	reply := p.do("CLUSTER_LEADER")
	var id int
	if _, err := fmt.Sscanf(reply, "CLUSTER_LEADER|id=%d,", &id); err != nil {
		t.Fatalf("CLUSTER_LEADER: %q", reply)
	}
	return id
}

func checkAcked(t *testing.T, nd *node, acked map[string]string, mu *sync.Mutex) {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	p := dialPipe(t, nd.addr)
	defer p.c.Close()
	for k, v := range acked {
		if got := p.do("GET|" + k); got != "VALUE|"+v {
			t.Fatalf("acknowledged %s=%s read %q from %s", k, v, got, nd.addr)
		}
	}
}

// TestClusterJoinAndRemove: a fresh node joins through a member, catches
// up (by snapshot: snapshot_entries is small) and becomes a voter, serves
// reads; then it is removed and its id cannot be reused.
func TestClusterJoinAndRemove(t *testing.T) {
	c := startCluster(t, 3)
	p := dialPipe(t, c.nodes[1].addr)
	for i := 0; i < 600; i++ {
		if got := p.do(fmt.Sprintf("PUT|j%d|%d", i, i)); got != "OK" {
			t.Fatal(got)
		}
	}
	c.members = append(c.members, 4)
	c.nodes[4] = &node{
		t:     t,
		addr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		dir:   filepath.Join(c.dir, "node4"),
	}
	c.raft[4] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.writeConfig(4, []string{c.nodes[2].addr})
	c.nodes[4].start()
	// It joins as a non-voting replica and becomes a voter once caught up:
	// CLUSTER_STATUS counts it in nodes_nonvoting until then.
	c.waitStatus(c.nodes[1], 30*time.Second, func(st map[string]string) bool {
		return st["state"] == "healthy" && st["nodes"] == "4" && st["nodes_nonvoting"] == "0"
	})
	q := dialPipe(t, c.nodes[4].addr)
	for i := 0; i < 600; i += 37 {
		if got := q.do(fmt.Sprintf("GET|j%d", i)); got != fmt.Sprintf("VALUE|%d", i) {
			t.Fatalf("joined node GET j%d: %q", i, got)
		}
	}
	if got := q.do("CLUSTER_NODES"); !strings.HasPrefix(got, "CLUSTER_NODES|4|") || !strings.Contains(got, c.nodes[4].addr) {
		t.Fatalf("CLUSTER_NODES: %q", got)
	}
	if got := p.do("CLUSTER_REMOVE|4"); got != "OK" {
		t.Fatalf("remove: %q", got)
	}
	c.nodes[4].kill()
	c.waitStatus(c.nodes[1], 30*time.Second, func(st map[string]string) bool {
		return st["state"] == "healthy" && st["nodes"] == "3"
	})
	if got := p.do("CLUSTER_JOIN|4|" + c.raft[4] + "|" + c.nodes[4].addr); !strings.HasPrefix(got, "ERROR|") {
		t.Fatalf("re-join with a removed id: %q", got)
	}
}
