package client

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/kvstore/kv/shard"
)

// ShardLeaders returns where each shard's leader takes requests, as the
// node at the client's address sees it now: element i is the client
// address of shard i+1's leader, or "" while that shard has no leader. A
// standalone server is one shard it leads itself.
//
// Any node serves any key, forwarding writes and reads to the shard's
// leader; a client that sends each key's requests to its shard's leader
// (shard.Of gives the shard) saves that hop. Leaders move (elections,
// failover, leader balancing), so the answer is a hint to refresh now and
// then, never a condition for correctness.
//
// A node that knows no leader for a shard answers "cluster unavailable:
// ..." about it, which gives "". Any other ERROR reply is an error
// (matching *ServerError): it says nothing about the shard.
func (c *Client) ShardLeaders(ctx context.Context) ([]string, error) {
	st, err := c.ClusterStatus(ctx)
	if err != nil {
		return nil, err
	}
	shards, err := strconv.Atoi(st.Get("shards"))
	if err != nil || shards < 1 {
		return nil, fmt.Errorf("cluster status from %s: shards=%q is not a shard count", c.addr, st.Get("shards"))
	}
	keys := shard.Keys(shards)
	leaders := make([]string, shards)
	build := func(b []byte) []byte {
		for _, k := range keys {
			b = appendRequest(b, "CLUSTER_LEADER", k)
		}
		return b
	}
	err = c.roundTrip(ctx, "CLUSTER_LEADER", build, shards, func(i int, f [][]byte) error {
		if se, ok := replyError(f).(*ServerError); ok {
			// "cluster unavailable: no leader for shard 3" is the answer
			// "none now". Any other refusal (NOAUTH, a command the node
			// does not know) says nothing about the shard: taken for "no
			// leader", it would hide a misconfigured client behind a map
			// of empty entries.
			if strings.HasPrefix(se.Msg, noLeaderPrefix) {
				return nil
			}
			return fmt.Errorf("kv CLUSTER_LEADER %s: shard %d: %w", c.addr, i+1, se)
		}
		if len(f) != 2 || string(f[0]) != "CLUSTER_LEADER" {
			return unexpected("CLUSTER_LEADER", f)
		}
		addr, ok := leaderAddr(string(f[1]))
		if !ok {
			return unexpected("CLUSTER_LEADER", f)
		}
		leaders[i] = addr
		return nil
	})
	if err != nil {
		return nil, err
	}
	return leaders, nil
}

// noLeaderPrefix begins the error a node answers about a shard it knows
// no leader for (PROTOCOL.md: "cluster unavailable: no leader for shard
// 3"); cluster unavailability is the one failure that means "none now".
const noLeaderPrefix = "cluster unavailable"

// leaderAddr takes the client address out of a CLUSTER_LEADER description
// ("id=2,client=127.0.0.1:8081").
func leaderAddr(desc string) (string, bool) {
	for _, f := range strings.Split(desc, ",") {
		if v, ok := strings.CutPrefix(f, "client="); ok && v != "" {
			return v, true
		}
	}
	return "", false
}
