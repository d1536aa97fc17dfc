package cluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/kvstore/kv/lsm"
)

// TestClusterVerify: a node verifies each local replica's engine while it
// serves, one report per shard in order, sound after writes and flushes.
func TestClusterVerify(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	for i := range 200 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("vk%03d", i), "v")
	}
	var names []string
	var entries int64
	err := tc.nodes[0].Verify(context.Background(), func(name string, rep lsm.VerifyReport, err error) {
		if err != nil || len(rep.Problems) > 0 {
			t.Errorf("%s: %+v, %v", name, rep, err)
		}
		names = append(names, name)
		entries += rep.Entries
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names) != "[shard 1 shard 2]" {
		t.Fatalf("reports for %v", names)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tc.nodes[0].Verify(ctx, func(string, lsm.VerifyReport, error) {}); err == nil {
		t.Fatal("Verify with a canceled context returned nil")
	}
}
