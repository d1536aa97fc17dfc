package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// TestSnapshotRecoveryInterrupted stops a replica while it loads a
// snapshot streamed after it fell behind the compacted log, restarts it,
// and checks that it ends with the same state as the others (and serves
// every acknowledged write). KV_SNAPREC_ROUNDS (chaos_test.go) sets how
// many times.
func TestSnapshotRecoveryInterrupted(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 1, snapshotEntries: 20})
	leader := tc.leaderOf(tc.nodes[0], 1)
	victim := (leader + 1) % 3
	shardDir := filepath.Join(tc.cfgs[victim].Storage.Dir, "shard-1")
	val := string(bytes.Repeat([]byte("v"), 1024))
	want := map[string]string{}
	round := 0
	load := func(n int) {
		for i := 0; i < n; i++ {
			b := lsm.NewBatch()
			for j := range 50 {
				k := fmt.Sprintf("k%02d-%05d-%02d", round, i, j)
				b.Put([]byte(k), []byte(val))
				want[k] = val
			}
			mustWrite(t, tc.nodes[leader], b, "load")
		}
		round++
	}
	load(20)
	interrupted := 0
	rounds := chaosEnv("KV_SNAPREC_ROUNDS", 2)
	for attempt := 0; attempt < rounds; attempt++ {
		tc.partition([]int{victim}, others(3, victim))
		load(60) // 3 MB, 60 entries: several snapshots and compactions
		entries, _ := os.ReadDir(shardDir)
		before := map[string]bool{}
		for _, e := range entries {
			before[e.Name()] = true
		}
		tc.heal()
		// Stop the victim as soon as a new lsm directory appears (a
		// snapshot is being loaded), or after a while.
		deadline := time.Now().Add(10 * time.Second)
		seen := false
		for !seen && time.Now().Before(deadline) {
			entries, _ := os.ReadDir(shardDir)
			for _, e := range entries {
				if !before[e.Name()] && e.IsDir() {
					seen = true
				}
			}
			if !seen {
				time.Sleep(200 * time.Microsecond)
			}
		}
		if seen {
			interrupted++
		}
		tc.stop(victim)
		cur, _ := os.ReadFile(filepath.Join(shardDir, "CURRENT"))
		t.Logf("attempt %d: new lsm directory seen %v; stopped with CURRENT %q", attempt, seen, bytes.TrimSpace(cur))
		tc.start(victim)
		tc.waitLeaders(tc.nodes...)
		leader = tc.leaderOf(tc.nodes[0], 1)
		if leader == victim {
			leader = (victim + 1) % 3
		}
	}
	if interrupted == 0 {
		t.Log("no recovery was interrupted")
	}
	load(2)
	v := tc.nodes[victim]
	waitFor(t, 30*time.Second, "the victim to catch up", func() bool {
		op := &readOp{key: []byte(fmt.Sprintf("k%02d-%05d-%02d", round-1, 1, 49))}
		_, err := v.nh.StaleRead(1, &readBatch{ops: []*readOp{op}})
		return err == nil && op.err == nil
	})
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	var missing atomic.Int64
	deadline := time.Now().Add(time.Minute)
	parallel(len(keys), 8, func(i int) {
		k := keys[i]
		if got, err := readBack(localNode{v}, k, deadline); err != nil || got != want[k] {
			if missing.Add(1) <= 5 {
				t.Errorf("via the victim: %s reads %d bytes, %v", k, len(got), err)
			}
		}
	})
	if missing.Load() > 0 {
		t.Errorf("%d of %d acknowledged keys missing via the victim", missing.Load(), len(want))
	}
	if _, err := get(v, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Error(err)
	}
	checkConverged(t, tc)
}
