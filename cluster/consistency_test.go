package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kvstore/kv/store"
)

// TestConsistencyCheck: every shard's replicas hash alike at the check's
// entry while writes go on; a replica whose data was changed behind raft's
// back (here a key written into its engine directly) is found, and named.
func TestConsistencyCheck(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	for i, n := range tc.nodes {
		serveMembership(t, tc.cfgs[i].Server.Listen, n)
	}
	for i := range 100 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("ck%03d", i), "v")
	}

	// While a member runs a version without cmdHash, which would stop
	// applying at the check's entry, the check is refused up front.
	tc.faults[2].olderKind.Store(uint32(cmdForget))
	tc.nodes[0].refresh()
	if _, err := tc.nodes[0].CheckConsistency(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "node 3 runs an older version") {
		t.Fatalf("check with node 3 on an older version: %v", err)
	}
	tc.faults[2].olderKind.Store(0)
	tc.nodes[0].refresh()

	stop := make(chan struct{})
	wait := loopWriters(4, stop, func(w, i int) bool {
		return put(tc.nodes[w%3], fmt.Sprintf("w%d-%d", w, i%50), fmt.Sprint(i)) == nil
	})
	checks, err := tc.nodes[1].CheckConsistency(context.Background())
	close(stop)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != 2 {
		t.Fatalf("%d shard checks", len(checks))
	}
	for _, c := range checks {
		if c.State != "consistent" || len(c.Replicas) != 3 || c.Replicas[0].Hash == "" || c.Replicas[0].Keys == 0 {
			t.Fatalf("shard %d: %+v", c.Shard, c)
		}
	}

	// Node 3's replica of shard 1 gains a key no entry wrote.
	tc.nodes[2].smMu.Lock()
	s := tc.nodes[2].sms[1]
	tc.nodes[2].smMu.Unlock()
	s.mu.RLock()
	err = s.db.Put(userKey(nil, []byte("rogue")), []byte("x"))
	s.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	checks, err = tc.nodes[0].CheckConsistency(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var c1, c2 store.ShardCheck
	for _, c := range checks {
		if c.Shard == 1 {
			c1 = c
		} else {
			c2 = c
		}
	}
	if c1.State != "inconsistent" || c1.Replicas[0].Hash != c1.Replicas[1].Hash || c1.Replicas[2].Hash == c1.Replicas[0].Hash {
		t.Fatalf("shard 1 after node 3's replica diverged: %+v", c1)
	}
	if c2.State != "consistent" {
		t.Fatalf("shard 2: %+v", c2)
	}
}
