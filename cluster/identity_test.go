package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
)

// TestIdentityGuardsDataDir: a node's data directory refuses another
// node_id or shard count, and keeps its data through the refusals.
func TestIdentityGuardsDataDir(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	for i := range 20 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("id%02d", i), "v")
	}
	tc.stop(2)
	reopen := func(mutate func(*conf.Config)) error {
		cfg := tc.cfgs[2]
		cfg.Cluster.Members = append([]conf.Member(nil), cfg.Cluster.Members...)
		mutate(&cfg)
		n, err := open(context.Background(), cfg, testLogger(t).With("node", 3), fsForTest())
		if err == nil {
			n.Close()
		}
		return err
	}
	if err := reopen(func(c *conf.Config) { c.Cluster.Shards = 3 }); err == nil || !strings.Contains(err.Error(), "shards are fixed") {
		t.Fatalf("open with another shard count: %v", err)
	}
	if err := reopen(func(c *conf.Config) { c.Cluster.NodeID = 9; c.Cluster.Join = []string{"127.0.0.1:1"} }); err == nil || !strings.Contains(err.Error(), "belongs to node 3") {
		t.Fatalf("open under another node id: %v", err)
	}
	// Without the identity file (as a directory of a build before it), the
	// shard directories tell. (Such a build ran raft under deployment id 0,
	// which this directory does not: dragonboat may refuse it first.)
	fs := tc.nodes[0].fs
	idPath := fs.PathJoin(tc.cfgs[2].Storage.Dir, identityFile)
	saved, found, err := readIdentity(fs, tc.cfgs[2].Storage.Dir)
	if err != nil || !found {
		t.Fatalf("identity of node 3: %v", err)
	}
	if err := fs.Remove(idPath); err != nil {
		t.Fatal(err)
	}
	refused := func(err error, want string) bool {
		return err != nil && (strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "deployment ID changed"))
	}
	if err := reopen(func(c *conf.Config) { c.Cluster.NodeID = 9; c.Cluster.Join = []string{"127.0.0.1:1"} }); !refused(err, "belongs to another node id") {
		t.Fatalf("open of an old directory under another node id: %v", err)
	}
	if err := reopen(func(c *conf.Config) { c.Cluster.Shards = 1 }); !refused(err, "holds data of shard 2") {
		t.Fatalf("open of an old directory with fewer shards: %v", err)
	}
	if saved.Raft != tc.cfgs[2].Cluster.RaftAddress {
		t.Fatalf("identity records raft address %q, want %q", saved.Raft, tc.cfgs[2].Cluster.RaftAddress)
	}
	if err := writeIdentity(fs, tc.cfgs[2].Storage.Dir, saved); err != nil {
		t.Fatal(err)
	}
	moved := freeAddrs(t, 1)[0]
	if err := reopen(func(c *conf.Config) { c.Cluster.RaftAddress = moved; c.Cluster.Members[2].Raft = moved }); err == nil || !strings.Contains(err.Error(), "raft address cannot change") {
		t.Fatalf("open with another raft address: %v", err)
	}
	// An earlier build's identity has no raft address: it is added once
	// raft has accepted the address.
	old := saved
	old.Raft = ""
	if err := writeIdentity(fs, tc.cfgs[2].Storage.Dir, old); err != nil {
		t.Fatal(err)
	}
	// Node 3 starts as itself and still has every key.
	tc.start(2)
	tc.waitLeaders(tc.nodes[2])
	for i := range 20 {
		waitFor(t, 10*time.Second, "node 3's data", func() bool {
			op := &readOp{key: []byte(fmt.Sprintf("id%02d", i))}
			_, err := tc.nodes[2].nh.StaleRead(shardOf(op.key, 2), &readBatch{ops: []*readOp{op}})
			return err == nil && string(op.val) == "v"
		})
	}
	if have, found, err := readIdentity(tc.nodes[2].fs, tc.cfgs[2].Storage.Dir); !found || err != nil || have != saved {
		t.Fatalf("identity after the refusals: %+v, %v, want %+v", have, err, saved)
	}
}

// TestJoinRefusesOtherShardCount: a new node configured with another shard
// count than the cluster's is refused before it is added anywhere.
func TestJoinRefusesOtherShardCount(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	serveMembership(t, tc.cfgs[0].Server.Listen, tc.nodes[0])
	addrs := freeAddrs(t, 2)
	cfg := baseConfig(t, 4, addrs[0], addrs[1], 3)
	cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
	_, err := open(context.Background(), cfg, testLogger(t), fsForTest())
	if err == nil || !strings.Contains(err.Error(), "the cluster has 2 shards") {
		t.Fatalf("open: %v", err)
	}
	if n := len(tc.nodes[0].Nodes()); n != 3 {
		t.Fatalf("members after the refused join: %d", n)
	}
	// The refusal left nothing that stops the corrected configuration.
	cfg.Cluster.Shards = 2
	n, err := open(context.Background(), cfg, testLogger(t), fsForTest())
	if err != nil {
		t.Fatalf("open with the cluster's shard count after a refused join: %v", err)
	}
	n.Close()
}

// TestMissingRaftStateRefused: a member's directory whose raft directory was
// removed by hand is refused, and its shard data is left alone; before, the
// node bootstrapped every shard afresh, wiped the shard directories and
// then panicked on the leader's first heartbeat.
func TestMissingRaftStateRefused(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	for i := range 20 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("rs%02d", i), "v")
	}
	tc.stop(2)
	fs := fsForTest()
	dir := tc.cfgs[2].Storage.Dir
	before, err := shardDirs(fs, dir)
	if err != nil || len(before) != 2 {
		t.Fatalf("shard dirs of node 3: %v %v", before, err)
	}
	if err := fs.RemoveAll(fs.PathJoin(dir, RaftDir)); err != nil {
		t.Fatal(err)
	}
	n, err := open(context.Background(), tc.cfgs[2], testLogger(t).With("node", 3), fs)
	if err == nil {
		n.Close()
		t.Fatal("node 3 started without its raft state")
	}
	if !strings.Contains(err.Error(), "raft state") || !strings.Contains(err.Error(), "join with a new cluster.node_id") {
		t.Fatalf("refusal does not say what is wrong and what to do: %v", err)
	}
	for _, s := range before {
		if _, err := fs.Stat(fs.PathJoin(dir, fmt.Sprintf("shard-%d", s), "CURRENT")); err != nil {
			t.Fatalf("shard %d's data was touched: %v", s, err)
		}
	}
}

// TestMissingShardDirRefused: a member whose shard directory (or the lsm
// directory its CURRENT names) was removed after snapshots had truncated
// the raft log is refused with what to do; dragonboat panicked at every
// start before ("ss.OnDiskIndex > s.onDiskInitIndex").
func TestMissingShardDirRefused(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2, snapshotEntries: 10})
	for i := range 100 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("sd%02d", i), "v")
	}
	tc.stop(2)
	fs := fsForTest()
	dir := tc.cfgs[2].Storage.Dir
	shard1 := fs.PathJoin(dir, "shard-1")
	name, err := readCurrent(fs, shard1)
	if err != nil || name == "" {
		t.Fatalf("CURRENT of shard 1: %q %v", name, err)
	}
	for _, removed := range []string{fs.PathJoin(shard1, name), shard1} {
		if err := fs.RemoveAll(removed); err != nil {
			t.Fatal(err)
		}
		n, err := open(context.Background(), tc.cfgs[2], testLogger(t).With("node", 3), fs)
		if err == nil {
			n.Close()
			t.Fatalf("node 3 started without %s", removed)
		}
		if !strings.Contains(err.Error(), "shard 1's state") || !strings.Contains(err.Error(), "kvcli cluster remove 3") {
			t.Fatalf("refusal does not say what is wrong and what to do: %v", err)
		}
	}
	if _, err := fs.Stat(fs.PathJoin(dir, "shard-2", "CURRENT")); err != nil {
		t.Fatalf("shard 2's data was touched: %v", err)
	}
}
