package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestJoinReplyLost: a member carries out the first CLUSTER_JOIN and closes
// the connection without a reply. The joiner's retry gets "already a
// member", which is its own earlier request's success: it starts, non-voting,
// and promotes itself. Before, it refused that answer on a first start and
// deleted its marker, so every later start failed the same way.
func TestJoinReplyLost(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	var joins atomic.Int32
	serveFakeMember(t, tc.cfgs[0].Server.Listen, tc.nodes[0], fakeMember{
		join: func(id uint64, raft, client string) (bool, error) {
			err := join(tc.nodes[0], id, raft, client)
			return joins.Add(1) == 1, err
		},
	})
	addrs := freeAddrs(t, 2)
	cfg := baseConfig(t, 4, addrs[0], addrs[1], 2)
	cfg.Cluster.Members = nil
	cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
	n4, err := open(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest())
	if err != nil {
		t.Fatalf("open after a lost join reply: %v", err)
	}
	defer func() { n4.Close() }()
	if got := joins.Load(); got < 2 {
		t.Fatalf("the member saw %d CLUSTER_JOINs, want the lost one and a retry", got)
	}
	if !n4.nonVoting {
		t.Fatal("joined through a member that adds non-voting replicas, but the replicas started as voters")
	}
	waitFor(t, 20*time.Second, "node 4 to promote itself", func() bool { return isVoterEverywhere(tc.nodes[1], 2, 4) })
}

// TestJoinAlreadyMemberFirstAttempt: a node asking to join for the first
// time (no marker, no request of its own sent) whose id is a member at its
// address is refused, and its marker is removed: it is not the node that
// joined (its data directory is new), so it must not start in its place.
func TestJoinAlreadyMemberFirstAttempt(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 1})
	serveMembership(t, tc.cfgs[0].Server.Listen, tc.nodes[0])
	addrs := freeAddrs(t, 2)
	n1 := tc.nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := n1.membership(ctx, 1)
	if err == nil {
		err = n1.addNonVoting(ctx, 1, 4, addrs[0], m)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, 4, addrs[0], addrs[1], 1)
	cfg.Cluster.Members = nil
	cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
	_, err = open(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest())
	if err == nil || !strings.Contains(err.Error(), "node 4 is already a member") {
		t.Fatalf("open of a new node under a member's id: %v, want already a member", err)
	}
	if _, err := fsForTest().Stat(fsForTest().PathJoin(cfg.Storage.Dir, joinMarkerFile)); err == nil {
		t.Error("the join marker stayed after a refusal")
	}
}

// TestJoinRetryIdHeldElsewhere: a restarted joiner (its marker says it
// asked before) whose id is a member at another raft address must not take
// that refusal as its own join's success.
func TestJoinRetryIdHeldElsewhere(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 1})
	serveMembership(t, tc.cfgs[0].Server.Listen, tc.nodes[0])
	held := freeAddrs(t, 1)[0]
	n1 := tc.nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := n1.membership(ctx, 1)
	if err == nil {
		err = n1.addNonVoting(ctx, 1, 4, held, m)
	}
	if err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 2)
	cfg := baseConfig(t, 4, addrs[0], addrs[1], 1)
	cfg.Cluster.Members = nil
	cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
	fs := fsForTest()
	if err := fs.MkdirAll(cfg.Storage.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(fs, cfg.Storage.Dir, joinMarkerFile, []byte(joinNonVoting)); err != nil {
		t.Fatal(err)
	}
	n4, err := open(context.Background(), cfg, testLogger(t).With("node", 4), fs)
	if err == nil {
		n4.Close()
		t.Fatal("a restarted joiner started as node 4, which is a member at another raft address")
	}
	if !strings.Contains(err.Error(), "(raft address "+held+")") {
		t.Fatalf("open: %v, want the refusal naming the other address", err)
	}
}

func TestParseAlreadyMember(t *testing.T) {
	for _, tt := range []struct {
		msg               string
		member, nonVoting bool
	}{
		{alreadyMemberMsg(4, 0, 3), true, false},
		{alreadyMemberMsg(4, 2, 3), true, true},
		{"node 4 is already a member", true, false}, // an earlier build's
		{"node 4 is already a member (raft address 127.0.0.1:7004)", false, false},
		{"node 40 is already a member", false, false},
		{alreadyMemberMsg(5, 0, 3), false, false},
		{"raft address 127.0.0.1:7004 is already used by node 3", false, false},
	} {
		member, nonVoting := parseAlreadyMember(tt.msg, 4)
		if member != tt.member || nonVoting != tt.nonVoting {
			t.Errorf("parseAlreadyMember(%q, 4) = %v, %v; want %v, %v", tt.msg, member, nonVoting, tt.member, tt.nonVoting)
		}
	}
}

// TestJoinViaEarlierBuildMember: a member of an earlier build adds a joiner
// as a voter of every shard (SyncRequestAddReplica), and answers OK as this
// build does. The joiner must start its replicas as voters: started
// non-voting, dragonboat never turns them into voters (an addition that is
// no promotion), and the node could never lead.
func TestJoinViaEarlierBuildMember(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 1})
	n1 := tc.nodes[0]
	serveFakeMember(t, tc.cfgs[0].Server.Listen, n1, fakeMember{
		earlierBuild: true,
		join: func(id uint64, raft, _ string) (bool, error) {
			for s := uint64(1); s <= uint64(n1.shards); s++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				m, err := n1.membership(ctx, s)
				if err == nil {
					err = n1.nh.SyncRequestAddReplica(ctx, s, id, raft, m.ConfigChangeID)
				}
				cancel()
				if err != nil {
					return false, err
				}
			}
			return false, nil
		},
	})
	for i := range 10 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("p%03d", i), "v")
	}
	addrs := freeAddrs(t, 2)
	cfg := baseConfig(t, 4, addrs[0], addrs[1], 1)
	cfg.Cluster.Members = nil
	cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
	n4, err := open(context.Background(), cfg, testLogger(t).With("node", 4), fsForTest())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { n4.Close() }()
	if n4.nonVoting {
		t.Error("added as a voter, but the replicas started non-voting")
	}
	assertVoters(t, tc.nodes[1], 1, 1, 2, 3, 4)
	waitFor(t, 10*time.Second, "node 4 to apply", func() bool {
		op := &readOp{key: []byte("p009")}
		_, err := n4.nh.StaleRead(1, &readBatch{ops: []*readOp{op}})
		return err == nil && string(op.val) == "v"
	})
	led := poll(15*time.Second, func() bool {
		if leader, _, ok, err := n4.nh.GetLeaderID(1); err == nil && ok && leader == 4 {
			return true
		}
		n4.nh.RequestLeaderTransfer(1, 4)
		time.Sleep(200 * time.Millisecond)
		return false
	})
	if !led {
		t.Error("node 4 is a voter but never takes the lead: its raft runs non-voting")
	}
}
