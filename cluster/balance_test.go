package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
)

// shardsLedBy builds a ShardInfo list: leaders[i] leads shard i+1, every
// shard has the replicas ids.
func shardsLedBy(leaders []uint64, ids ...uint64) []dragonboat.ShardInfo {
	var out []dragonboat.ShardInfo
	for i, l := range leaders {
		reps := make(map[uint64]string)
		for _, id := range ids {
			reps[id] = fmt.Sprintf("127.0.0.1:%d", 7000+id)
		}
		out = append(out, dragonboat.ShardInfo{ShardID: uint64(i + 1), LeaderID: l, Replicas: reps})
	}
	return out
}

func TestPickTransfer(t *testing.T) {
	cases := []struct {
		name          string
		me            uint64
		shards        []dragonboat.ShardInfo
		shard, target uint64 // 0: no transfer
	}{
		{"all on me: lowest shard to the lowest id", 1, shardsLedBy([]uint64{1, 1, 1, 1, 1, 1, 1, 1}, 1, 2, 3), 1, 2},
		{"one over the share", 1, shardsLedBy([]uint64{2, 1, 1, 3, 1, 1, 2, 3}, 1, 2, 3), 2, 2},
		{"to the one leading fewest", 1, shardsLedBy([]uint64{1, 1, 1, 1, 1, 2, 2, 2}, 1, 2, 3), 1, 3},
		{"at the share", 1, shardsLedBy([]uint64{1, 1, 1, 2, 2, 2, 3, 3}, 1, 2, 3), 0, 0},
		{"others over the share are theirs to move", 3, shardsLedBy([]uint64{1, 1, 1, 1, 1, 1, 1, 1}, 1, 2, 3), 0, 0},
		{"no one below the share", 1, shardsLedBy([]uint64{1, 1, 1, 1, 2, 2, 2, 2}, 1, 2), 0, 0},
		{"election under way", 1, shardsLedBy([]uint64{1, 1, 1, 1, 1, 1, 1, 0}, 1, 2, 3), 0, 0},
		{"single voter", 1, shardsLedBy([]uint64{1, 1, 1, 1}, 1), 0, 0},
	}
	idle := map[uint64]uint64{1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			shard, target, ok := pickTransfer(tc.me, tc.shards, idle)
			if !ok {
				shard, target = 0, 0
			}
			if shard != tc.shard || target != tc.target {
				t.Fatalf("pickTransfer = shard %d to %d, want shard %d to %d", shard, target, tc.shard, tc.target)
			}
		})
	}

	// A shard whose fewest-leading voter is not one of its replicas goes
	// to another that is.
	shards := shardsLedBy([]uint64{1, 1, 1, 2}, 1, 2, 3)
	delete(shards[0].Replicas, 3)
	if shard, target, ok := pickTransfer(1, shards, idle); !ok || shard != 1 || target != 2 {
		t.Fatalf("pickTransfer = shard %d to %d (%v), want shard 1 to 2", shard, target, ok)
	}
	// The least busy shard moves first; one not measured yet counts as
	// busiest.
	shards = shardsLedBy([]uint64{1, 1, 1, 1, 1, 2, 2, 3}, 1, 2, 3)
	busy := map[uint64]uint64{1: 900, 2: 40, 3: 7, 4: 7, 6: 0}
	if shard, target, ok := pickTransfer(1, shards, busy); !ok || shard != 3 || target != 3 {
		t.Fatalf("pickTransfer = shard %d to %d (%v), want the least busy shard, 3, to 3", shard, target, ok)
	}
	if shard, _, ok := pickTransfer(1, shards, map[uint64]uint64{1: 5}); !ok || shard != 1 {
		t.Fatalf("pickTransfer = shard %d (%v), want shard 1, the only one measured", shard, ok)
	}
	shards[3].Pending = true
	if _, _, ok := pickTransfer(1, shards, idle); ok {
		t.Fatal("pickTransfer moved a leader while a shard was starting")
	}
}

// ledCounts returns how many shards each node leads, as node from sees it.
func ledCounts(from *Cluster, nodes int) []int {
	led := make([]int, nodes)
	for s := uint64(1); s <= uint64(from.shards); s++ {
		if id, _, ok, err := from.nh.GetLeaderID(s); err == nil && ok && id >= 1 && int(id) <= nodes {
			led[id-1]++
		}
	}
	return led
}

// gatherLeaders moves every shard's leadership to node i.
func (tc *testCluster) gatherLeaders(i int) {
	tc.t.Helper()
	to := tc.nodes[i]
	waitFor(tc.t, 30*time.Second, fmt.Sprintf("node %d leading every shard", i+1), func() bool {
		for s := uint64(1); s <= uint64(to.shards); s++ {
			if l := tc.leaderOf(to, s); l != i {
				_ = tc.nodes[l].nh.RequestLeaderTransfer(s, uint64(i+1))
			}
		}
		return ledCounts(to, len(tc.nodes))[i] == to.shards
	})
}

// TestBalanceLeaders gathers every leader on one node, then runs the
// balancer on all three: nothing moves before the cluster settled, then,
// under writes to every shard, the leaders spread out to at most the share
// (ceil(4/3) = 2) each while every write succeeds.
func TestBalanceLeaders(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 4})
	n1 := tc.nodes[0]
	tc.gatherLeaders(0)
	mustPut(t, n1, "before", "1")

	// Unsettled (settle not reached): nothing moves.
	bs := make([]*balancer, 3)
	for i := range bs {
		bs[i] = &balancer{interval: 50 * time.Millisecond, settle: time.Hour}
	}
	for range 5 {
		for i, n := range tc.nodes {
			n.balanceOnce(bs[i], time.Now())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if led := ledCounts(n1, 3); led[0] != 4 {
		t.Fatalf("leaders moved before the cluster settled: %v", led)
	}

	// Settled, with writers on every shard: the leaders spread all the
	// same, and every write succeeds meanwhile.
	for i := range bs {
		bs[i] = &balancer{interval: 50 * time.Millisecond}
	}
	stop := make(chan struct{})
	failed := make(chan error, 4) // one per writer, which stops at its first
	wait := loopWriters(4, stop, func(w, i int) bool {
		if err := put(n1, fmt.Sprintf("busy-%d-%d", w, i%64), "v"); err != nil {
			failed <- err
			return false
		}
		return true
	})
	waitFor(t, 60*time.Second, "leaders spread to at most 2 per node", func() bool {
		for i, n := range tc.nodes {
			n.balanceOnce(bs[i], time.Now())
		}
		led := ledCounts(n1, 3)
		return led[0] <= 2 && led[1] <= 2 && led[2] <= 2 && led[0]+led[1]+led[2] == 4
	})
	close(stop)
	wait()
	close(failed)
	if err := <-failed; err != nil {
		t.Fatalf("write during the moves: %v", err)
	}
	var moves uint64
	for _, n := range tc.nodes {
		moves += n.Status().LeaderMoves
	}
	t.Logf("leaders per node: %v after %d moves", ledCounts(n1, 3), moves)
	if moves < 2 {
		t.Fatalf("%d leader moves counted, want at least the 2 that 4/0/0 -> 2/1/1 takes", moves)
	}
	for i, n := range tc.nodes {
		mustPut(t, n, fmt.Sprintf("after%d", i), "1")
		if v, err := get(n, "before"); err != nil || v != "1" {
			t.Fatalf("node %d: get before = %q, %v", i+1, v, err)
		}
	}
}

// assertNoMoves runs ten looks of b on n, which leads all 4 shards, and
// fails if any leader moved.
func assertNoMoves(t *testing.T, n *Cluster, b *balancer, when string) {
	t.Helper()
	for range 10 {
		n.balanceOnce(b, time.Now())
		time.Sleep(50 * time.Millisecond)
	}
	if led := ledCounts(n, 3); led[n.nodeID-1] != 4 {
		t.Fatalf("leaders moved %s: %v", when, led)
	}
}

// TestBalanceWaitsForHealthy: with a member down, a node leading every
// shard keeps them all.
func TestBalanceWaitsForHealthy(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 4})
	n1 := tc.nodes[0]
	tc.gatherLeaders(0)
	tc.stop(2)
	waitFor(t, 20*time.Second, "node 1 to see node 3 down", func() bool { return n1.Status().State == "degraded" })
	assertNoMoves(t, n1, &balancer{interval: 50 * time.Millisecond}, "on a degraded cluster")
}

// TestBalanceSkipsLeavingMembers: a member handing its leaderships over to
// stop says so in its probe answers; the others then move nothing (it
// would be the natural target, leading nothing) and hand-offs skip it.
func TestBalanceSkipsLeavingMembers(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 4})
	n1 := tc.nodes[0]
	tc.gatherLeaders(0)
	tc.nodes[2].leaving.Store(true)
	waitFor(t, 20*time.Second, "node 1 to hear that node 3 is stopping", func() bool {
		v := n1.view.Load()
		return v != nil && v.leaving[3]
	})
	if got := n1.handOffTargets()[1]; len(got) != 1 || got[0] != 2 {
		t.Fatalf("hand-off targets of shard 1: %v, want only node 2", got)
	}
	b := &balancer{interval: 50 * time.Millisecond}
	assertNoMoves(t, n1, b, "while a member was stopping")
	tc.nodes[2].leaving.Store(false)
	waitFor(t, 60*time.Second, "leaders spread once no member is stopping", func() bool {
		n1.balanceOnce(b, time.Now())
		return ledCounts(n1, 3)[0] <= 2
	})
}
