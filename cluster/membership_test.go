package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/store"
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

// TestRemovedNodeReportsNoFalseFailure: writers on a follower keep writing
// unique keys while the leader removes that follower. A write whose attempt
// was forwarded to the leader, and was still unanswered when the follower
// applied its own removal, may commit on the others: re-sent, it is
// refused ("not hosted on this node"), and it must then be reported as an
// unknown outcome, never as a failure; every write reported failed must be
// absent.
func TestRemovedNodeReportsNoFalseFailure(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 1, requestTimeout: 3 * time.Second})
	// a follower, so its writes are forwarded to the leader
	leader := tc.leaderOf(tc.nodes[0], 1)
	victim, remover := (leader+1)%3, leader
	n3 := tc.nodes[victim]
	type res struct {
		key string
		err error
	}
	var mu sync.Mutex
	var results []res
	stop := make(chan struct{})
	wait := loopWriters(16, stop, func(w, i int) bool {
		k := fmt.Sprintf("r/%d/%d", w, i)
		err := put(n3, k, "x")
		mu.Lock()
		results = append(results, res{k, err})
		mu.Unlock()
		return err == nil || !strings.Contains(err.Error(), "not hosted")
	})
	time.Sleep(300 * time.Millisecond)
	if err := remove(tc.nodes[remover], uint64(victim+1)); err != nil {
		t.Fatalf("remove: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wait()
	byErr := map[string]int{}
	for _, r := range results {
		kind := "ok"
		if r.err != nil {
			kind = r.err.Error()
		}
		byErr[kind]++
		if r.err == nil || errors.Is(r.err, store.ErrTimeout) {
			continue
		}
		v, err := get(tc.nodes[remover], r.key)
		if err == nil && v == "x" {
			t.Errorf("write of %s failed definitely (%q) but is applied", r.key, r.err)
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("read %s: %v", r.key, err)
		}
	}
	t.Logf("%d writes through node %d: %v", len(results), victim+1, byErr)
}

// TestMembershipChangeWithoutAnswerIsUnknown: a node that can send but
// hears nothing asks to remove a node; the change reaches the leader and
// commits, the requester never learns it and loses its leader. Its error
// must say the outcome is unknown, not that nothing happened.
func TestMembershipChangeWithoutAnswerIsUnknown(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 1, requestTimeout: time.Second})
	leader := tc.leaderOf(tc.nodes[0], 1)
	req, victim := -1, -1
	for i := range 3 {
		if i != leader {
			if req < 0 {
				req = i
			} else {
				victim = i
			}
		}
	}
	n := tc.nodes[req]
	ctx, cancel := context.WithTimeout(n.stopCtx, 3*time.Second)
	defer cancel()
	m, err := n.membership(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The requester can still send (its forwarded config change reaches
	// the leader) but hears nothing back.
	for j := range 3 {
		if j != req {
			tc.cutOneWay(j, req)
		}
	}
	start := time.Now()
	// remove() runs exactly this for each shard after reading memberships.
	err = n.deleteReplica(ctx, 1, uint64(victim+1), m)
	t.Logf("node %d: remove node %d from shard 1 after %v: %v", req+1, victim+1, time.Since(start).Round(time.Millisecond), err)
	tc.heal()
	lm, lerr := tc.nodes[leader].membership(context.Background(), 1)
	if lerr != nil {
		t.Fatal(lerr)
	}
	_, stillMember := lm.Nodes[uint64(victim+1)]
	_, removed := lm.Removed[uint64(victim+1)]
	t.Logf("membership at leader node %d: nodes=%v removed=%v", leader+1, lm.Nodes, lm.Removed)
	if err != nil && !strings.HasPrefix(err.Error(), "timeout: outcome unknown") && !stillMember && removed {
		t.Errorf("membership change reported as definite failure %q, but it was applied", err)
	}
}
