package client

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// fakeCluster starts n fake servers playing the members of one cluster
// whose shard i+1 is led by the server leaders[i] (-1: no leader), and
// returns them with the layout they were given.
func fakeCluster(t *testing.T, n int, leaders ...int) ([]*fakeServer, fakeLayout) {
	t.Helper()
	s := make([]*fakeServer, n)
	var l fakeLayout
	for i := range s {
		s[i] = newFakeServer(t, "")
		l.nodes = append(l.nodes, s[i].addr())
	}
	for _, k := range leaders {
		addr := ""
		if k >= 0 {
			addr = s[k].addr()
		}
		l.leaders = append(l.leaders, addr)
	}
	setLayout(s, l)
	return s, l
}

// setLayout gives every server of s the layout l.
func setLayout(s []*fakeServer, l fakeLayout) {
	for _, srv := range s {
		srv.setLayout(l)
	}
}

// TestShardLeaders: eight shards over three nodes, asked of each node in
// turn; every node gives the same map, with each shard's leader where the
// layout puts it, and the replies it parsed are the real CLUSTER_* shapes.
func TestShardLeaders(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, 1, 2, 0, 1, 2, 2, 1)
	ctx := context.Background()
	for i, srv := range s {
		c := dialT(t, srv, Options{})
		got, err := c.ShardLeaders(ctx)
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		if !slices.Equal(got, l.leaders) {
			t.Errorf("node %d: ShardLeaders = %q, want %q", i+1, got, l.leaders)
		}
		st, err := c.ClusterStatus(ctx)
		if err != nil || st.Get("mode") != "cluster" || st.Get("shards") != "8" || st.Get("node_id") != string(rune('1'+i)) {
			t.Errorf("node %d: ClusterStatus = %v, %v", i+1, st.Fields(), err)
		}
		nodes, err := c.ClusterNodes(ctx)
		if err != nil || len(nodes) != 3 || !strings.Contains(nodes[2], "client="+s[2].addr()) {
			t.Errorf("node %d: ClusterNodes = %q, %v", i+1, nodes, err)
		}
	}
	if n := s[0].received("CLUSTER_LEADER"); n != 8 {
		t.Errorf("node 1 got %d CLUSTER_LEADER requests, want one per shard (8)", n)
	}
}

// TestShardLeadersNoLeader: a shard whose leader is unknown ("cluster
// unavailable: no leader for shard S") is "", the others are reported.
func TestShardLeadersNoLeader(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, -1, 2, -1, 1)
	c := dialT(t, s[1], Options{})
	got, err := c.ShardLeaders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, l.leaders) || got[1] != "" || got[3] != "" {
		t.Fatalf("ShardLeaders = %q, want %q", got, l.leaders)
	}
}

// TestShardLeadersStandalone: a standalone server is one shard it leads.
func TestShardLeadersStandalone(t *testing.T) {
	s := newFakeServer(t, "")
	s.setLayout(fakeLayout{standalone: true, leaders: []string{s.addr()}, nodes: []string{s.addr()}})
	c := dialT(t, s, Options{})
	got, err := c.ShardLeaders(context.Background())
	if err != nil || !slices.Equal(got, []string{s.addr()}) {
		t.Fatalf("ShardLeaders = %q, %v; want [%s]", got, err, s.addr())
	}
}

// TestShardLeadersBadShards: a status without a usable shard count is an
// error naming the field, and no CLUSTER_LEADER is sent.
func TestShardLeadersBadShards(t *testing.T) {
	s, l := fakeCluster(t, 1, 0)
	c := dialT(t, s[0], Options{})
	for _, status := range []string{
		"CLUSTER_STATUS|mode=cluster|state=healthy|node_id=1|nodes=1|nodes_up=1|shards=0|shards_with_leader=0",
		"CLUSTER_STATUS|mode=cluster|state=healthy|node_id=1|nodes=1|nodes_up=1|shards=-2|shards_with_leader=0",
		"CLUSTER_STATUS|mode=cluster|state=healthy|node_id=1|nodes=1|nodes_up=1|shards=eight|shards_with_leader=8",
		"CLUSTER_STATUS|mode=cluster|state=healthy|node_id=1|nodes=1|nodes_up=1",
	} {
		l.raw = map[string]string{"CLUSTER_STATUS": status}
		s[0].setLayout(l)
		got, err := c.ShardLeaders(context.Background())
		if err == nil || !strings.Contains(err.Error(), "is not a shard count") {
			t.Errorf("status %q: ShardLeaders = %q, %v; want a shard count error", status, got, err)
		}
	}
	if n := s[0].received("CLUSTER_LEADER"); n != 0 {
		t.Errorf("%d CLUSTER_LEADER requests sent after a bad status", n)
	}
}

// TestShardLeadersBadLeaderReply: a CLUSTER_LEADER reply of the wrong
// shape is a *ReplyError; an ERROR other than "cluster unavailable" is
// returned, as a *ServerError, not taken for "no leader". Either way the
// client stays usable.
func TestShardLeadersBadLeaderReply(t *testing.T) {
	s, l := fakeCluster(t, 2, 0, 1, 0)
	c := dialT(t, s[0], Options{})
	ctx := context.Background()
	for _, raw := range []string{"CLUSTER_LEADER|id=2", "CLUSTER_LEADER|id=2,client=", "CLUSTER_LEADER", "OK", "CLUSTER_LEADER|id=1,client=a|extra"} {
		l.raw = map[string]string{"CLUSTER_LEADER": raw}
		s[0].setLayout(l)
		got, err := c.ShardLeaders(ctx)
		if _, ok := errorsAs[*ReplyError](err); !ok || got != nil {
			t.Errorf("reply %q: ShardLeaders = %q, %v; want a *ReplyError", raw, got, err)
		}
	}
	for _, raw := range []string{"ERROR|NOAUTH authentication required", "ERROR|unknown command 'CLUSTER_LEADER'"} {
		l.raw = map[string]string{"CLUSTER_LEADER": raw}
		s[0].setLayout(l)
		got, err := c.ShardLeaders(ctx)
		se, ok := errorsAs[*ServerError](err)
		if !ok || got != nil || se.Msg != strings.TrimPrefix(raw, "ERROR|") || !strings.Contains(err.Error(), "shard 1") {
			t.Errorf("reply %q: ShardLeaders = %q, %v; want the *ServerError, naming the shard", raw, got, err)
		}
		if errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("reply %q: %v matches ErrOutcomeUnknown", raw, err)
		}
	}
	l.raw = nil
	s[0].setLayout(l)
	if got, err := c.ShardLeaders(ctx); err != nil || !slices.Equal(got, l.leaders) {
		t.Fatalf("after the bad replies: ShardLeaders = %q, %v; want %q", got, err, l.leaders)
	}
}
