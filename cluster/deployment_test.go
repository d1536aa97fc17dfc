package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
)

func TestDeriveDeployment(t *testing.T) {
	a := []conf.Member{{ID: 1, Raft: "127.0.0.1:7001"}, {ID: 2, Raft: "127.0.0.1:7002"}, {ID: 3, Raft: "127.0.0.1:7003"}}
	b := []conf.Member{a[2], a[0], a[1]}
	if deriveDeployment(8, a) != deriveDeployment(8, b) {
		t.Fatal("the member order changes the deployment id")
	}
	other := []conf.Member{a[0], a[1], {ID: 3, Raft: "127.0.0.1:7004"}}
	if deriveDeployment(8, a) == deriveDeployment(8, other) || deriveDeployment(8, a) == deriveDeployment(4, a) {
		t.Fatal("other members or another shard count give the same deployment id")
	}
	if deriveDeployment(8, a) == 0 {
		t.Fatal("deployment id 0 is dragonboat's default")
	}
}

// TestForeignClusterIsIgnored: the nodes of another cluster whose member
// list names one of this cluster's raft addresses (an old cluster still
// listing an address this one now uses) send it raft messages from replica
// ids this cluster knows at other addresses. They used to crash the
// receiving process (dragonboat's registry panics on the inconsistent
// address); now their deployment differs and the messages are dropped.
func TestForeignClusterIsIgnored(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	addrs := freeAddrs(t, 4)
	members := []conf.Member{
		{ID: 1, Raft: addrs[0], Client: addrs[1]},
		{ID: 2, Raft: tc.cfgs[1].Cluster.RaftAddress, Client: "127.0.0.1:1"}, // this cluster's node 2
		{ID: 3, Raft: addrs[2], Client: addrs[3]},
	}
	for i, m := range []conf.Member{members[0], members[2]} {
		cfg := baseConfig(t, m.ID, m.Raft, m.Client, 2)
		cfg.Cluster.Members = members
		n, err := Open(context.Background(), cfg, testLogger(t).With("foreign", i))
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
	}
	time.Sleep(2 * time.Second) // elections and heartbeats towards node 2
	for i, n := range tc.nodes {
		mustPut(t, n, "after-foreign-traffic", "ok")
		if v, err := get(n, "after-foreign-traffic"); err != nil || v != "ok" {
			t.Fatalf("node %d after the foreign cluster's traffic: %q, %v", i+1, v, err)
		}
	}
}
