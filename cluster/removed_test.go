package cluster

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

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
	mustPut(t, tc.nodes[1], "after", "ok")
}
