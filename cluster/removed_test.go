package cluster

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
	"github.com/lni/dragonboat/v4"

	"github.com/lni/dragonboat/v4/raftio"
)

// TestRemovedNodeRefusesRequestsAndRestart: once a replica of a node applies
// the node's removal, the node answers every request with an error that
// says so, /healthz (Health) reports it, and the node refuses to start
// again on its directory, whose id can never come back.
func TestRemovedNodeRefusesRequestsAndRestart(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	n1, n3 := tc.nodes[0], tc.nodes[2]
	mustPut(t, n1, "k", "v")

	// Another replica's removal is not this node's.
	systemListener{n3}.NodeDeleted(raftio.NodeInfo{ShardID: 1, ReplicaID: 2})
	if n3.removed.Load() {
		t.Fatal("node 3 took node 2's removal for its own")
	}

	if err := remove(n1, 3); err != nil {
		t.Fatal(err)
	}
	// The remover's view shows the change as soon as it is acknowledged.
	if ns := n1.Nodes(); len(ns) != 2 {
		t.Fatalf("nodes right after the remove: %+v", ns)
	}
	// Raft tells a removed replica of its removal only if the commit reaches
	// it before the leader drops it; dragonboat then reports NodeDeleted.
	// Where it did not, deliver the event as dragonboat would.
	if !poll(5*time.Second, n3.removed.Load) {
		t.Log("node 3 did not learn of its removal from raft; delivering the event")
		systemListener{n3}.NodeDeleted(raftio.NodeInfo{ShardID: 2, ReplicaID: 3})
	}
	wantRemoved := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "node 3 was removed from the cluster") {
			t.Fatalf("%s on the removed node: %v", what, err)
		}
	}
	wantRemoved("put", put(n3, "k", "x"))
	_, err := get(n3, "k")
	wantRemoved("get", err)
	_, err = scan(n3, "", "", 10)
	wantRemoved("range", err)
	wantRemoved("clear", clearAll(n3))
	wantRemoved("health", n3.Health())
	waitFor(t, 10*time.Second, "node 3's replicas to stop", func() bool { return len(localShards(n3)) == 0 })
	if _, err := os.Stat(n3.fs.PathJoin(n3.dir, removedFile)); err != nil {
		t.Fatalf("removed mark: %v", err)
	}

	tc.stop(2)
	_, err = open(context.Background(), tc.cfgs[2], testLogger(t), fsForTest())
	if err == nil || !strings.Contains(err.Error(), "node 3 was removed from the cluster") {
		t.Fatalf("restart of the removed node: %v", err)
	}
	if errors.Is(err, errClosed) {
		t.Fatal(err)
	}
	// The two others serve on.
	mustPut(t, tc.nodes[1], "after", "ok")
}

// TestNodeRemovedWhileDownLearnsFromPeers: raft never tells a node removed
// while it was down; when it comes back, its replicas' messages reach
// members that know it removed, whose transports say so, and the node then
// refuses requests as any removed node does.
func TestNodeRemovedWhileDownLearnsFromPeers(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	n1 := tc.nodes[0]
	mustPut(t, n1, "k", "v")
	tc.stop(2)
	if err := remove(n1, 3); err != nil {
		t.Fatal(err)
	}
	tc.start(2)
	n3 := tc.nodes[2]
	waitFor(t, 20*time.Second, "node 3 to learn it was removed", n3.removed.Load)
	if err := put(n3, "k", "x"); err == nil || !strings.Contains(err.Error(), "node 3 was removed from the cluster") {
		t.Fatalf("put on the removed node: %v", err)
	}
	if _, err := os.Stat(n3.fs.PathJoin(n3.dir, removedFile)); err != nil {
		t.Fatalf("removed mark: %v", err)
	}
	// Its replicas stop: left running, they would campaign for ever.
	waitFor(t, 10*time.Second, "node 3's replicas to stop", func() bool { return len(localShards(n3)) == 0 })
	mustPut(t, tc.nodes[1], "after", "ok")
}

// localShards lists the shards n runs a replica of.
func localShards(n *Cluster) []uint64 {
	var shards []uint64
	if info := n.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}); info != nil {
		for _, si := range info.ShardInfoList {
			shards = append(shards, si.ShardID)
		}
	}
	return shards
}

// TestRemovalNoticeOfAnotherClusterIgnored: node and shard ids repeat from
// cluster to cluster. Cluster A removed its node 2; cluster B lists, as its
// (never started) node 3, the raft address of A's node 1. B's node 2, which
// leads B's shards, sends there; A's node 1 must not answer with a removal
// notice about "node 2", and B's node 2 must not take one for its own
// (found by review: it marked itself removed and refused to restart).
func TestRemovalNoticeOfAnotherClusterIgnored(t *testing.T) {
	a := newTestCluster(t, clusterOpts{shards: 2})
	if err := remove(a.nodes[0], 2); err != nil {
		t.Fatal(err)
	}
	a1Raft := a.cfgs[0].Cluster.RaftAddress

	addrs := freeAddrs(t, 5)
	members := []conf.Member{
		{ID: 1, Raft: addrs[0], Client: addrs[1]},
		{ID: 2, Raft: addrs[2], Client: addrs[3]},
		{ID: 3, Raft: a1Raft, Client: addrs[4]},
	}
	var cfgs []conf.Config
	for i := range 2 {
		cfg := baseConfig(t, uint64(i+1), members[i].Raft, members[i].Client, 2)
		cfg.Cluster.Members = members
		cfgs = append(cfgs, cfg)
	}
	b := make([]*Cluster, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b[i], errs[i] = openWithFaults(context.Background(), cfgs[i], testLogger(t).With("cluster", "B", "node", i+1), fsForTest(), nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("B node %d: %v", i+1, err)
		}
		defer b[i].Close()
	}
	if b[0].deploymentID == a.nodes[0].deploymentID {
		t.Fatal("same deployment")
	}
	// B's node 2 is a healthy voter of B, never removed from it; as the
	// leader of B's shards it sends heartbeats to B's node 3 (at a1Raft).
	waitFor(t, 20*time.Second, "B leaders", func() bool { return haveLeaders(b...) })
	for s := uint64(1); s <= 2; s++ {
		b[1].nh.RequestLeaderTransfer(s, 2)
	}
	if poll(5*time.Second, b[1].removed.Load) {
		perr := put(b[1], "k", "v")
		b[1].Close()
		_, oerr := open(context.Background(), cfgs[1], testLogger(t), fsForTest())
		t.Fatalf("B's node 2, never removed from B, marked itself removed (a notice from cluster A, deployment %d, about A's node 2)\nput: %v\nrestart: %v", a.nodes[0].deploymentID, perr, oerr)
	}
}
