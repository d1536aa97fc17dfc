package cluster

import (
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// fakeFree is an injectable free-space measurement.
type fakeFree struct{ n atomic.Uint64 }

func (f *fakeFree) free(string) (uint64, error) { return f.n.Load(), nil }

// injectFree makes g measure f instead of the file system.
func injectFree(g *spaceGuard, f *fakeFree) {
	g.mu.Lock()
	g.free = f.free
	g.mu.Unlock()
}

// TestSpaceGuardRaisesAndLifts: the alarm goes up under min_free_bytes
// and comes down only at an eighth above it; a probe answer carries it.
func TestSpaceGuardRaisesAndLifts(t *testing.T) {
	var f fakeFree
	g := newSpaceGuard("/data", 800, f.free, slog.New(slog.DiscardHandler))
	steps := []struct {
		free uint64
		low  bool
	}{
		{1000, false},
		{799, true},
		{850, true}, // above min, under min + min/8 = 900: still up
		{900, false},
		{820, false}, // under the lift point but above min: stays down
		{0, true},
	}
	for _, s := range steps {
		f.n.Store(s.free)
		g.check()
		if g.low.Load() != s.low {
			t.Fatalf("free %d: low = %v, want %v", s.free, g.low.Load(), s.low)
		}
		a := parseProbeAnswer(localProbeAnswer(g, false, cmdMaxKind).encode())
		if a.low != s.low || a.avail != s.free {
			t.Fatalf("free %d: probe answer says low=%v avail=%d", s.free, a.low, a.avail)
		}
	}
	// A failed measurement keeps the state.
	g.free = func(string) (uint64, error) { return 0, errors.New("statfs: injected") }
	g.check()
	if !g.low.Load() {
		t.Fatal("a failed measurement lifted the alarm")
	}
	// A node without a guard is never low.
	if a := parseProbeAnswer(localProbeAnswer(nil, false, cmdMaxKind).encode()); a.low {
		t.Fatal("no guard: reported low")
	}
}

// TestNoSpaceRefusesWritesClusterWide: when one node's free space falls
// under cluster.min_free_bytes, that node and every member that probes it
// refuse new writes with a definite "no space left on device" (so no
// member's raft log meets a full disk, where dragonboat panics); deletes
// and reads go on, /healthz says why, and writes are taken again once the
// space is back.
func TestNoSpaceRefusesWritesClusterWide(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{nodes: 3, shards: 2})
	fakes := make([]*fakeFree, 3)
	for i, n := range tc.nodes {
		fakes[i] = &fakeFree{}
		fakes[i].n.Store(1 << 40)
		injectFree(n.space, fakes[i])
	}
	if err := put(tc.nodes[0], "before", "v"); err != nil {
		t.Fatal(err)
	}

	// Node 3's disk runs short.
	fakes[2].n.Store(100 << 10)
	tc.nodes[2].space.check()
	for _, n := range tc.nodes {
		n.refresh() // what the status loop does twice a second
	}
	for i, n := range tc.nodes {
		err := put(n, "k", "v")
		if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "node 3 has 100.0KiB free") {
			t.Fatalf("put through node %d while node 3 is short of space: %v", i+1, err)
		}
		if !strings.HasPrefix(err.Error(), "storage unavailable: no space left on device") {
			t.Fatalf("reply text %q", err)
		}
		if err := n.Health(); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("node %d health: %v", i+1, err)
		}
		if v, err := get(n, "before"); err != nil || v != "v" {
			t.Fatalf("read through node %d: %q, %v", i+1, v, err)
		}
	}
	b := lsm.NewBatch()
	b.Delete([]byte("before"))
	if err := write(tc.nodes[1], b); err != nil {
		t.Fatalf("delete while short of space: %v", err)
	}
	mixed := newBatch("a", "1")
	mixed.Delete([]byte("b"))
	if err := write(tc.nodes[0], mixed); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("a batch with a put while short of space: %v", err)
	}

	// Space is freed on node 3.
	fakes[2].n.Store(1 << 40)
	tc.nodes[2].space.check()
	for _, n := range tc.nodes {
		n.refresh()
	}
	for i, n := range tc.nodes {
		if err := put(n, "k", "v"); err != nil {
			t.Fatalf("put through node %d once space is back: %v", i+1, err)
		}
		if err := n.Health(); err != nil {
			t.Fatalf("node %d health once space is back: %v", i+1, err)
		}
	}
	if v, err := get(tc.nodes[0], "before"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the delete taken while short of space: key reads %q, %v", v, err)
	}
}
