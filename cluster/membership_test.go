package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"

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
	// Like a real new node, it knows the cluster only through join. It
	// listens on every interface (nothing binds it here) and tells the
	// cluster the address clients reach it at.
	_, port, _ := net.SplitHostPort(addrs[1])
	cfg.Server.Listen = "0.0.0.0:" + port
	cfg.Cluster.ClientAddress = addrs[1]
	cfg.Cluster.Members = nil
	cfg.Cluster.Join = []string{"127.0.0.1:1", tc.cfgs[0].Server.Listen} // the first is unreachable
	n4, err := open(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest())
	if err != nil {
		t.Fatal(err)
	}
	defer n4.Close()
	if n4.Deployment() != n1.Deployment() || n1.Deployment() == 0 {
		t.Fatalf("joined node's deployment id %d, the cluster's %d", n4.Deployment(), n1.Deployment())
	}
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
	recovered := recoveredSnapshots(n4)
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
		// Once the node knows it was removed, its writes fail at once.
		return err == nil || !strings.Contains(err.Error(), "not hosted") && !strings.Contains(err.Error(), "was removed")
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
	live := n.probeMembers([]*dragonboat.Membership{m}) // as remove() does, before the cut
	// The requester can still send (its forwarded config change reaches
	// the leader) but hears nothing back.
	for j := range 3 {
		if j != req {
			tc.cutOneWay(j, req)
		}
	}
	start := time.Now()
	// remove() runs exactly this for each shard after reading memberships.
	err = n.deleteReplica(ctx, 1, uint64(victim+1), m, live)
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

// TestJoinRefusesBadAddresses: CLUSTER_JOIN with an address that is not
// host:port (or whose port is out of range), or whose raft address does not
// answer, is refused before anything is proposed: no member record, no
// replica, and the cluster keeps serving. The audit's sequence (ids 100-102
// with dead raft addresses, the first with a garbage client address) used
// to add three voters that never come up to every shard: no quorum, and no
// way to remove them.
func TestJoinRefusesBadAddresses(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	n1 := tc.nodes[0]
	live := fakeRaftPeer(t) // answers liveness probes like a node's raft port
	dead := freeAddrs(t, 3) // nothing listens there
	for _, tt := range []struct {
		id           uint64
		raft, client string
		want         string
	}{
		{104, "x", "127.0.0.1:9104", "invalid raft address"},
		{105, "not an address", "127.0.0.1:9105", "invalid raft address"},
		{106, strings.Repeat("z", 1000), "127.0.0.1:9106", "invalid raft address"},
		{107, "127.0.0.1:70000", "127.0.0.1:9107", "invalid raft address"},
		{108, "127.0.0.1:0", "127.0.0.1:9108", "invalid raft address"},
		{109, ":7001", "127.0.0.1:9109", "invalid raft address"},
		{110, "bad host:7001", "127.0.0.1:9110", "invalid raft address"},
		{111, live, "not an address", "invalid client address"},
		{112, live, "127.0.0.1:99999", "invalid client address"},
		{113, live, "", "invalid client address"},
		{100, "127.0.0.1:1", "garbage", "invalid client address"},
		{101, dead[0], "127.0.0.1:9101", "does not answer"},
		{102, dead[1], "127.0.0.1:9102", "does not answer"},
		{103, dead[2], "127.0.0.1:9103", "does not answer"},
	} {
		start := time.Now()
		err := join(n1, tt.id, tt.raft, tt.client)
		if err == nil {
			// Every further request could wait out a lost quorum.
			t.Fatalf("join %d (raft %.40q, client %.40q) accepted, want a refusal saying %q", tt.id, tt.raft, tt.client, tt.want)
		}
		if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "applied") {
			t.Errorf("join %d (raft %.40q, client %.40q): %v, want a refusal saying %q", tt.id, tt.raft, tt.client, err, tt.want)
		} else if len(err.Error()) > 400 {
			t.Errorf("join %d: a %d-byte error", tt.id, len(err.Error()))
		}
		t.Logf("join %d refused after %v: %v", tt.id, time.Since(start).Round(time.Millisecond), err)
	}
	// Nothing was proposed: no member record (the first join would also
	// have recorded the initial members'), every shard has its three voters.
	if ms := n1.registeredMembers(); len(ms) != 0 {
		t.Errorf("member records after refused joins: %+v", ms)
	}
	assertVoters(t, n1, 2, 1, 2, 3)
	for i, n := range tc.nodes {
		if err := put(n, fmt.Sprintf("after-refusals-%d", i), "ok"); err != nil {
			t.Fatalf("write through node %d after the refused joins: %v", i+1, err)
		}
	}
}

// TestDeadJoinerLeavesQuorumUnchanged: nodes that answered at join time
// and died before catching up stay non-voting replicas, which count for no
// quorum: with one of the three voters down as well, the other two still
// make progress (as voters at once, 2 of 5 could not). Non-voting nodes are
// removed whatever is down, voters only while the rest keep a quorum.
func TestDeadJoinerLeavesQuorumUnchanged(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	n1 := tc.nodes[0]
	for _, id := range []uint64{4, 5} {
		peer := newFakeRaftPeer(t)
		if err := join(n1, id, peer.addr, fmt.Sprintf("127.0.0.1:%d", 9000+id)); err != nil {
			t.Fatalf("join %d: %v", id, err)
		}
		peer.close() // the new node dies before it catches up
	}
	assertVoters(t, n1, 2, 1, 2, 3)
	assertNonVoting(t, n1, 2, 4, 5)
	waitFor(t, 5*time.Second, "status with two down non-voting members", func() bool {
		st := n1.Status()
		return st.Nodes == 5 && st.NodesUp == 3 && st.NodesNonVoting == 2 && st.State == "degraded"
	})
	for _, n := range n1.Nodes() {
		if n.NonVoting != (n.ID >= 4) {
			t.Errorf("node %d listed with NonVoting %v", n.ID, n.NonVoting)
		}
	}

	tc.stop(2)
	for i, n := range tc.live() {
		if err := put(n, fmt.Sprintf("one-voter-down-%d", i), "ok"); err != nil {
			t.Fatalf("write through node %d with node 3 and both joiners down: %v", i+1, err)
		}
	}
	// A non-voting node goes even while a voter is down.
	if err := remove(n1, 5); err != nil {
		t.Fatalf("remove non-voting node 5: %v", err)
	}
	assertNonVoting(t, n1, 2, 4)
	// A live voter may not go while the rest would lack a quorum (1 of 1,
	// 3); the dead one may.
	if err := remove(n1, 2); err == nil || !strings.Contains(err.Error(), "quorum") || strings.Contains(err.Error(), "applied") {
		t.Fatalf("remove live node 2 of 1-3 (3 down): %v, want a refusal for the quorum", err)
	}
	if err := remove(tc.nodes[1], 4); err != nil {
		t.Fatalf("remove non-voting node 4: %v", err)
	}
	if err := remove(n1, 3); err != nil {
		t.Fatalf("remove dead node 3: %v", err)
	}
	assertVoters(t, n1, 2, 1, 2)
	assertNonVoting(t, n1, 2)
	if err := put(n1, "after-removals", "ok"); err != nil {
		t.Fatalf("write after the removals: %v", err)
	}
	waitFor(t, 5*time.Second, "status of the two voters left", func() bool {
		st := n1.Status()
		return st.Nodes == 2 && st.NodesUp == 2 && st.NodesNonVoting == 0 && st.State == "healthy"
	})
}

// TestJoinNonVotingThenPromoted: a joining node lands as a non-voting
// replica of every shard and stays one while it cannot catch up (its links
// to the members are cut); restarted, with the member that granted its
// join down, it catches up and promotes itself to a voter of every shard.
// Restarted again (its replicas start non-voting, as always), it is a voter
// at the raft level too: it can take over a shard's leadership. Dragonboat
// turns it into one by two paths, both run: recovering a snapshot that has
// the promotion (it caught up by snapshot), and replaying the promotion
// from the log (it caught up by log, no snapshot anywhere).
func TestJoinNonVotingThenPromoted(t *testing.T) {
	t.Run("by snapshot", func(t *testing.T) { testJoinNonVotingThenPromoted(t, true) })
	t.Run("by log", func(t *testing.T) { testJoinNonVotingThenPromoted(t, false) })
}

func testJoinNonVotingThenPromoted(t *testing.T, bySnapshot bool) {
	snapshotEntries := 0 // the default, never reached here
	if bySnapshot {
		snapshotEntries = 5
	}
	tc := newTestCluster(t, clusterOpts{shards: 2, snapshotEntries: snapshotEntries})
	serveMembership(t, tc.cfgs[0].Server.Listen, tc.nodes[0])
	for i := range 40 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("p%03d", i), fmt.Sprintf("v%d", i))
	}
	addrs := freeAddrs(t, 2)
	cfg := baseConfig(t, 4, addrs[0], addrs[1], 2)
	if bySnapshot {
		cfg.Cluster.SnapshotEntries = snapshotEntries
	}
	cfg.Cluster.Members = nil
	cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
	cut := new(linkFaults)
	for _, c := range tc.cfgs {
		cut.set(true, c.Cluster.RaftAddress)
	}
	n4, err := openWithFaults(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest(), cut)
	if err != nil {
		t.Fatal(err)
	}
	// Cut off, it cannot show it caught up, so it is still non-voting.
	assertVoters(t, tc.nodes[1], 2, 1, 2, 3)
	assertNonVoting(t, tc.nodes[1], 2, 4)
	waitFor(t, 5*time.Second, "node 4 listed as a non-voting member", func() bool {
		ns, st := tc.nodes[1].Nodes(), tc.nodes[1].Status()
		return len(ns) == 4 && ns[3].ID == 4 && ns[3].NonVoting && ns[3].Up && st.NodesNonVoting == 1 && st.State == "healthy"
	})
	n4.Close()
	tc.stop(0)

	start := time.Now()
	if n4, err = open(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest()); err != nil {
		t.Fatal(err)
	}
	defer func() { n4.Close() }()
	waitFor(t, 20*time.Second, "node 4 to become a voter", func() bool { return isVoterEverywhere(tc.nodes[1], 2, 4) })
	t.Logf("node 4 caught up and became a voter %v after its restart", time.Since(start).Round(time.Millisecond))
	assertVoters(t, tc.nodes[1], 2, 1, 2, 3, 4)
	assertNonVoting(t, tc.nodes[1], 2)
	for i := range 40 {
		op := &readOp{key: []byte(fmt.Sprintf("p%03d", i))}
		if _, err := n4.nh.StaleRead(shardOf(op.key, 2), &readBatch{ops: []*readOp{op}}); err != nil || string(op.val) != fmt.Sprintf("v%d", i) {
			t.Fatalf("node 4 key p%03d: %q, %v", i, op.val, err)
		}
	}
	waitFor(t, 5*time.Second, "node 4 listed as a voter", func() bool {
		ns, st := tc.nodes[1].Nodes(), tc.nodes[1].Status()
		return len(ns) == 4 && !ns[3].NonVoting && st.NodesNonVoting == 0
	})
	recovered := recoveredSnapshots(n4)
	if bySnapshot != (recovered > 0) {
		t.Fatalf("node 4 recovered %d snapshots; the test should catch up by snapshot: %v", recovered, bySnapshot)
	}

	tc.start(0)
	n4.Close()
	if n4, err = open(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest()); err != nil {
		t.Fatal(err)
	}
	tc.waitLeaders(n4)
	waitFor(t, 20*time.Second, "node 4 to lead shard 1", func() bool {
		if leader, _, ok, err := n4.nh.GetLeaderID(1); err == nil && ok && leader == 4 {
			return true
		}
		n4.nh.RequestLeaderTransfer(1, 4)
		time.Sleep(200 * time.Millisecond)
		return false
	})
	mustPut(t, n4, "led-by-4", "ok")
}

// TestPromoteQuorumRule pins the arithmetic of the promotion check: the
// promoted node, caught up, counts as live.
func TestPromoteQuorumRule(t *testing.T) {
	for _, tt := range []struct {
		voters, live, need int
		ok                 bool
	}{
		{1, 1, 2, true}, // growing a one-node cluster
		{1, 0, 2, false},
		{2, 2, 2, true},
		{2, 1, 2, true},
		{3, 3, 3, true},
		{3, 2, 3, true}, // replacing a down member: 4 voters, 3 up
		{3, 1, 3, false},
		{4, 2, 3, true},
		{4, 1, 3, false},
		{5, 3, 4, true},
		{5, 2, 4, false},
		{6, 3, 4, true},
	} {
		need, ok := promoteQuorum(tt.voters, tt.live)
		if need != tt.need || ok != tt.ok {
			t.Errorf("promoteQuorum(%d voters, %d live) = %d, %v; want %d, %v", tt.voters, tt.live, need, ok, tt.need, tt.ok)
		}
	}
}

// assertNonVoting checks that every shard's non-voting replicas, as n
// reads them, are ids.
func assertNonVoting(t *testing.T, n *Cluster, shards int, ids ...uint64) {
	t.Helper()
	assertReplicas(t, n, shards, "non-voting replicas", func(m *dragonboat.Membership) map[uint64]string { return m.NonVotings }, ids)
}

// isVoterEverywhere reports whether node id is a voter of every shard, as n
// reads them.
func isVoterEverywhere(n *Cluster, shards int, id uint64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for s := uint64(1); s <= uint64(shards); s++ {
		m, err := n.membership(ctx, s)
		if err != nil {
			return false
		}
		if _, ok := m.Nodes[id]; !ok {
			return false
		}
	}
	return true
}

// assertVoters checks that every shard's voters, as n reads them, are ids.
func assertVoters(t *testing.T, n *Cluster, shards int, ids ...uint64) {
	t.Helper()
	assertReplicas(t, n, shards, "voters", func(m *dragonboat.Membership) map[uint64]string { return m.Nodes }, ids)
}

// assertReplicas checks that the replicas of every shard that of picks
// from its membership, as n reads it, are ids.
func assertReplicas(t *testing.T, n *Cluster, shards int, what string, of func(*dragonboat.Membership) map[uint64]string, ids []uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for s := uint64(1); s <= uint64(shards); s++ {
		m, err := n.membership(ctx, s)
		if err != nil {
			t.Fatalf("membership of shard %d: %v", s, err)
		}
		got := make([]uint64, 0, len(of(m)))
		for id := range of(m) {
			got = append(got, id)
		}
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			t.Errorf("shard %d %s %v, want %v", s, what, got, ids)
		}
	}
}

// fakeRaftPeer listens on a loopback port and answers the liveness probe
// like a node's raft transport (frameClose -> frameClosed), discarding
// anything else, until the test ends. It returns the address.
func fakeRaftPeer(t *testing.T) string {
	return newFakeRaftPeer(t).addr
}

type fakePeer struct {
	addr string
	ln   net.Listener
	mu   sync.Mutex
	cs   map[net.Conn]bool
	wg   sync.WaitGroup
}

func newFakeRaftPeer(t *testing.T) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{addr: ln.Addr().String(), ln: ln, cs: make(map[net.Conn]bool)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cs == nil {
				p.mu.Unlock()
				c.Close()
				return
			}
			p.cs[c] = true
			p.wg.Add(1)
			p.mu.Unlock()
			go func() {
				defer p.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					kind, _, err := readFrame(r, nil)
					if err != nil {
						return
					}
					if kind == frameClose {
						c.Write(appendFrameHeader(nil, frameClosed, nil))
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(p.close)
	return p
}

// close stops the peer as a killed process would: it no longer accepts,
// and its connections are closed.
func (p *fakePeer) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.cs {
		c.Close()
	}
	p.cs = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// recoveredSnapshots counts n's replicas whose data is no longer the
// directory they started with: they recovered a snapshot.
func recoveredSnapshots(n *Cluster) int {
	recovered := 0
	n.smMu.Lock()
	defer n.smMu.Unlock()
	for _, s := range n.sms {
		s.mu.RLock()
		if s.current != dbDirName(1) {
			recovered++
		}
		s.mu.RUnlock()
	}
	return recovered
}
