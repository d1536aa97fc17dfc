package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/client"
)

// checkRouting holds a healthy cluster to what routing clients rely on: a
// Cluster's leader map names a member for every shard, its requests work,
// and kvbench routes (each client to its shard's leader)
// with every read checked against the last write.
func checkRouting(t *testing.T, c *testCluster) {
	t.Helper()
	addrs := []string{c.nodes[1].addr, c.nodes[2].addr, c.nodes[3].addr}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.DialCluster(ctx, addrs, client.ClusterOptions{})
	if err != nil {
		t.Fatalf("DialCluster: %v", err)
	}
	defer cl.Close()
	leaders := cl.Leaders()
	if len(leaders) != 4 {
		t.Fatalf("map of %d shards, want the cluster's 4: %v", len(leaders), leaders)
	}
	// Every shard of a healthy cluster has a leader, and the map names it
	// by the client address the members were given.
	for s, l := range leaders {
		if !slices.Contains(addrs, l) {
			t.Errorf("shard %d: leader %q is not a member's client address %v", s+1, l, addrs)
		}
	}
	for i := range 50 {
		k, v := []byte("route-"+string(rune('a'+i%26))+string(rune('0'+i/26))), []byte{byte(i)}
		if err := cl.Put(ctx, k, v); err != nil {
			t.Fatalf("Cluster.Put: %v", err)
		}
		if got, err := cl.Get(ctx, k); err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Cluster.Get %s = %q, %v; want %q", k, got, err, v)
		}
	}

	bin := toolBin(t, "kvbench")
	out, err := exec.Command(bin, "-addr", strings.Join(addrs, ","), "-clients", "8", "-pipeline", "2",
		"-ops", "put,get", "-keys", "500", "-verify", "-duration", "1s", "-warmup", "200ms").CombinedOutput()
	if err != nil {
		t.Fatalf("kvbench: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "keys sent to their leader of 4 shards") {
		t.Errorf("kvbench did not route:\n%s", out)
	}
}
