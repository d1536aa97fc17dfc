package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// leadAll makes node i the leader of every shard.
func (tc *testCluster) leadAll(i int) {
	tc.t.Helper()
	n := tc.nodes[i]
	id := n.nodeID
	for s := uint64(1); s <= uint64(n.shards); s++ {
		waitFor(tc.t, 30*time.Second, fmt.Sprintf("node %d leading shard %d", id, s), func() bool {
			leader := tc.leaderOf(n, s)
			if leader == i {
				return true
			}
			tc.nodes[leader].nh.RequestLeaderTransfer(s, id)
			return poll(time.Second, func() bool {
				l, _, ok, _ := n.nh.GetLeaderID(s)
				return ok && l == id
			})
		})
	}
}

// TestTransferLeadershipBeforeStop: a node leading every shard that is
// stopped gracefully hands each shard to a peer first, under writes, so
// the shards never wait for an election. Checked by what the nodes know of
// the leaders: once TransferLeadership returns, the stopping node already
// follows another leader on every shard, and after it closed the others
// keep exactly that leader and term (an election would bump the term).
// The election timeout is long (2-4 s), so that no election of the
// ordinary kind can make it pass. Without the hand-off the stopped node
// is still the leader when it closes.
func TestTransferLeadershipBeforeStop(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{electionRTT: 200})
	tc.leadAll(0)
	n0 := tc.nodes[0]

	stop := make(chan struct{})
	var writes, failed atomic.Int64
	writers := []*Cluster{tc.nodes[1], tc.nodes[2]}
	wait := loopWriters(4, stop, func(w, i int) bool {
		n := writers[w%2]
		if err := put(n, fmt.Sprintf("k%d-%d", w, i), "v"); err != nil {
			failed.Add(1)
		}
		writes.Add(1)
		return true
	})
	var once sync.Once
	stopWriters := func() { once.Do(func() { close(stop); wait() }) }
	defer stopWriters() // before the cleanup closes the nodes, on a failure too
	time.Sleep(200 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n0.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	type lt struct{ leader, term uint64 }
	handed := make(map[uint64]lt)
	for s := uint64(1); s <= uint64(n0.shards); s++ {
		l, term, ok, err := n0.nh.GetLeaderID(s)
		if err != nil || !ok || l == 0 || l == n0.nodeID {
			t.Fatalf("shard %d: after the hand-off node 1 knows leader %d (ok %v, err %v), want another node", s, l, ok, err)
		}
		handed[s] = lt{l, term}
	}
	tc.stop(0)
	// The others learn of the new leaders (heartbeats), and writes keep
	// going through them.
	for _, n := range tc.live() {
		for s, want := range handed {
			waitFor(t, 20*time.Second, fmt.Sprintf("node %d knowing shard %d's leader", n.nodeID, s), func() bool {
				l, term, ok, _ := n.nh.GetLeaderID(s)
				return ok && l == want.leader && term >= want.term
			})
		}
	}
	before := writes.Load()
	waitFor(t, 20*time.Second, "writes after the stop", func() bool { return writes.Load() > before+20 })
	stopWriters()
	for _, n := range tc.live() {
		for s, want := range handed {
			if l, term, _, _ := n.nh.GetLeaderID(s); l != want.leader || term != want.term {
				t.Errorf("node %d, shard %d: leader %d term %d, want %d term %d as handed over (an election ran)", n.nodeID, s, l, term, want.leader, want.term)
			}
		}
	}
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d writes failed", f, writes.Load())
	}
}

// TestTransferLeadershipPassesOverDownPeer: with one peer down, every
// shard goes to the live one; with both down there is no one to take them
// and the call says so at once rather than waiting out its context.
func TestTransferLeadershipPassesOverDownPeer(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.leadAll(0)
	tc.stop(2)
	n0 := tc.nodes[0]
	// The status view must see node 3 down (probed twice a second).
	waitFor(t, 10*time.Second, "node 3 down in the view", func() bool {
		for _, n := range n0.Nodes() {
			if n.ID == 3 {
				return !n.Up
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n0.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	for s := uint64(1); s <= uint64(n0.shards); s++ {
		if l, _, _, _ := n0.nh.GetLeaderID(s); l != 2 {
			t.Errorf("shard %d: leader %d, want 2", s, l)
		}
	}
}

// TestWaitCaughtUp: a node restarted after missing writes has, once
// WaitCaughtUp returns, applied them on its own replicas (read here
// without ReadIndex, from the local state machine): what kvserver waits
// for before it opens its client port. Right after Open the replicas have
// not heard from their leaders yet.
func TestWaitCaughtUp(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.stop(2)
	const keys = 40
	for i := range keys {
		mustPut(t, tc.nodes[0], fmt.Sprintf("missed-%d", i), "v")
	}
	tc.start(2)
	n := tc.nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		k := fmt.Sprintf("missed-%d", i)
		op := &readOp{key: []byte(k)}
		if _, err := n.nh.StaleRead(shardOf(op.key, n.shards), &readBatch{ops: []*readOp{op}}); err != nil || op.err != nil || string(op.val) != "v" {
			t.Fatalf("%s on the restarted node's replica: %q (%v, %v), want \"v\"", k, op.val, err, op.err)
		}
	}
}

// TestWaitCaughtUpWithoutQuorum: a node that finds most voting members down
// (the first of a cluster started one node at a time) does not wait for a
// catch-up that cannot happen before they start, which may be waiting for
// its client port.
func TestWaitCaughtUpWithoutQuorum(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.stop(1)
	tc.stop(2)
	n := tc.nodes[0]
	n.refresh()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := n.WaitCaughtUp(ctx)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "1 of 3 voting members up") {
		t.Fatalf("WaitCaughtUp with 1 of 3 members up: %v (context %v)", err, ctx.Err())
	}
}
