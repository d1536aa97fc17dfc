package cluster

import (
	"strings"
	"testing"

	"github.com/kvstore/kv/store"
)

// TestProbeAnswerVersions: an answer is read the same by every version,
// and an older member's shorter answer says which command kinds it lacks.
func TestProbeAnswerVersions(t *testing.T) {
	a := probeAnswer{low: true, avail: 123456789, maxKind: cmdMaxKind}
	if got := parseProbeAnswer(a.encode()); got != a {
		t.Fatalf("round trip: %+v, want %+v", got, a)
	}
	stopping := probeAnswer{leaving: true, avail: 5, maxKind: cmdMaxKind}
	if got := parseProbeAnswer(stopping.encode()); got != stopping {
		t.Fatalf("round trip of a stopping member's answer: %+v, want %+v", got, stopping)
	}
	// A later version may append fields.
	if got := parseProbeAnswer(append(a.encode(), 7, 7, 7)); got != a {
		t.Fatalf("longer answer: %+v, want %+v", got, a)
	}
	// The version that added the free-space guard and cmdHash.
	guard := a.encode()[:9]
	if got := parseProbeAnswer(guard); got != (probeAnswer{low: true, avail: 123456789, maxKind: cmdHash}) {
		t.Fatalf("flags and avail only: %+v", got)
	}
	// Versions before it answered with nothing.
	if got := parseProbeAnswer(nil); got != (probeAnswer{maxKind: cmdForget}) {
		t.Fatalf("empty answer: %+v", got)
	}
}

// TestRequireKind: a command kind is allowed only when every other member
// answered with it; a member down now counts by its last answer, one never
// heard from blocks it.
func TestRequireKind(t *testing.T) {
	c := &Cluster{nodeID: 1}
	if err := c.requireKind(cmdHash, "x"); err == nil {
		t.Fatal("allowed before any probe")
	}
	nodes := []store.Node{{ID: 1, Up: true}, {ID: 2, Up: true}, {ID: 3}}
	first := &view{nodes: nodes, kinds: knownKinds(nil, map[uint64]probeAnswer{2: {maxKind: cmdHash}, 3: {maxKind: cmdHash}})}
	c.view.Store(first)
	if err := c.requireKind(cmdHash, "x"); err != nil {
		t.Fatal(err)
	}
	// Node 3 went down and node 2 was replaced by an older version.
	second := &view{nodes: nodes, kinds: knownKinds(first, map[uint64]probeAnswer{2: {maxKind: cmdForget}})}
	c.view.Store(second)
	if err := c.requireKind(cmdHash, "x"); err == nil || !strings.Contains(err.Error(), "node 2 runs an older version") {
		t.Fatalf("older node 2: %v", err)
	}
	if err := c.requireKind(cmdForget, "x"); err != nil {
		t.Fatalf("a kind every member has: %v", err)
	}
	// A node 4 never heard from.
	c.view.Store(&view{nodes: append(nodes, store.Node{ID: 4}), kinds: second.kinds})
	if err := c.requireKind(cmdForget, "x"); err == nil || !strings.Contains(err.Error(), "node 4 has not answered") {
		t.Fatalf("unknown node 4: %v", err)
	}
}
