package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
)

// TestJoinCatchUpBySnapshotAndRemove joins a fresh node through a member's
// client port after the log was compacted (so it catches up by snapshot),
// checks refusals of reused ids, then removes it.
func TestJoinCatchUpBySnapshotAndRemove(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{snapshotEntries: 5})
	n1 := tc.nodes[0]
	serveMembership(t, tc.cfgs[0].Server.Listen, n1)
	for i := range 80 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("j%03d", i), fmt.Sprintf("v%d", i))
	}

	addrs := freeAddrs(t, 2)
	cfg := baseConfig(t, 4, addrs[0], addrs[1], 4)
	cfg.Cluster.SnapshotEntries = 5
	// Like a real new node, it knows the cluster only through join.
	cfg.Cluster.Members = nil
	cfg.Cluster.Join = []string{"127.0.0.1:1", tc.cfgs[0].Server.Listen} // the first is unreachable
	n4, err := open(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest())
	if err != nil {
		t.Fatal(err)
	}
	defer n4.Close()
	tc.waitLeaders(n4)

	// The new node holds every key locally (it recovered a snapshot: the
	// log below the members' snapshots is gone).
	waitFor(t, 20*time.Second, "node 4 to catch up", func() bool {
		for i := range 80 {
			op := &readOp{key: []byte(fmt.Sprintf("j%03d", i))}
			if _, err := n4.nh.StaleRead(shardOf(op.key, 4), &readBatch{ops: []*readOp{op}}); err != nil || string(op.val) != fmt.Sprintf("v%d", i) {
				return false
			}
		}
		return true
	})
	recovered := 0
	n4.smMu.Lock()
	for _, s := range n4.sms {
		s.mu.RLock()
		if s.current != dbDirName(1) {
			recovered++
		}
		s.mu.RUnlock()
	}
	n4.smMu.Unlock()
	if recovered == 0 {
		t.Fatal("node 4 caught up without recovering a snapshot; the test should exercise that path")
	}
	if err := put(n4, "from4", "x"); err != nil {
		t.Fatal(err)
	}
	if v, err := get(tc.nodes[1], "from4"); err != nil || v != "x" {
		t.Fatalf("write through the joined node: %q, %v", v, err)
	}
	// Every member, the new one included, lists every node with its
	// client address.
	clients := map[uint64]string{4: addrs[1]}
	for i, cfg := range tc.cfgs {
		clients[uint64(i+1)] = cfg.Server.Listen
	}
	for _, n := range append(tc.live(), n4) {
		waitFor(t, 5*time.Second, "every node with its client address", func() bool {
			ns := n.Nodes()
			if len(ns) != 4 || ns[3].ID != 4 || ns[3].Raft != addrs[0] || !ns[3].Up {
				return false
			}
			for _, node := range ns {
				if node.Client != clients[node.ID] {
					return false
				}
			}
			return true
		})
	}

	// Ids that are members are refused.
	if err := join(n1, 2, tc.cfgs[1].Cluster.RaftAddress, "x"); err == nil || !strings.Contains(err.Error(), "already a member") {
		t.Fatalf("join of member 2: %v", err)
	}
	if err := join(n1, 5, addrs[0], "x"); err == nil || !strings.Contains(err.Error(), "already used by node 4") {
		t.Fatalf("join with node 4's address: %v", err)
	}

	if err := remove(tc.nodes[1], 4); err != nil {
		t.Fatal(err)
	}
	for _, n := range tc.live() {
		waitFor(t, 5*time.Second, "node 4 gone from the member list", func() bool { return len(n.Nodes()) == 3 })
	}
	if err := remove(n1, 4); err == nil || !strings.Contains(err.Error(), "already removed") {
		t.Fatalf("second remove: %v", err)
	}
	if err := remove(n1, 9); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("remove of a stranger: %v", err)
	}
	// A removed id can never come back.
	if err := join(n1, 4, addrs[0], addrs[1]); err == nil || !strings.Contains(err.Error(), "cannot be reused") {
		t.Fatalf("rejoin of a removed id: %v", err)
	}
	// The three remaining members still serve.
	if err := put(tc.nodes[2], "after-remove", "ok"); err != nil {
		t.Fatal(err)
	}
	if st := n1.Status(); st.Nodes != 3 {
		t.Fatalf("status after remove: %+v", st)
	}
}

// TestJoinRefusedAtOpen: a node whose join is refused does not start.
func TestJoinRefusedAtOpen(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	serveMembership(t, tc.cfgs[0].Server.Listen, tc.nodes[0])
	cfg := baseConfig(t, 2, freeAddrs(t, 1)[0], "127.0.0.1:1", 2)
	cfg.Cluster.Members = tc.cfgs[0].Cluster.Members
	cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
	_, err := open(context.Background(), cfg, testLogger(t), fsForTest())
	if err == nil || !strings.Contains(err.Error(), "node 2 is already a member") {
		t.Fatalf("open: %v", err)
	}
}

// TestOpenWithoutMembership: a node with no data, no join and not in the
// member list cannot start.
func TestOpenWithoutMembership(t *testing.T) {
	addrs := freeAddrs(t, 2)
	cfg := baseConfig(t, 7, addrs[0], addrs[1], 2)
	cfg.Cluster.Members = []conf.Member{{ID: 1, Raft: addrs[1], Client: "127.0.0.1:1"}}
	if _, err := open(context.Background(), cfg, testLogger(t), fsForTest()); err == nil || !strings.Contains(err.Error(), "not in cluster.members") {
		t.Fatalf("open: %v", err)
	}
}
