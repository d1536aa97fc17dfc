package lsm

import (
	"math/rand/v2"

	"testing"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm/internal/base"
)

// TestFlushKeepsTheVisibleVersion: a memtable flushed while it holds a
// newer, unpublished version of a key (a commit group overflowing the
// memtable is being inserted) keeps the published version too, so reads
// at the published sequence number still find it.
func TestFlushKeepsTheVisibleVersion(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	defer d.Close()
	mustPut(t, d, "k", "published")
	visible := d.visibleSeq.Load()
	// What the committer does mid-group: the next version is in the
	// memtable, visibleSeq not yet moved past it.
	d.commit.active.Lock()
	err := d.mem.t.Add([]byte("k"), visible+1, base.KindSet, []byte("unpublished"))
	d.commit.active.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if m := d.Metrics(); m.Levels[0].Files == 0 || m.MemtableBytes != 0 {
		t.Fatalf("the memtable was not flushed: %+v", m)
	}
	checkGet(t, d, "k", "published", true)
}

// TestBatchMaxMemBytesBoundsTheArena: without a WAL the commit path checks
// for batchMaxMemBytes of room (batchBytes), which must be at least what
// the batch takes in a memtable, whatever its tower heights: then a batch
// is never split across two memtables (a flush of the first one alone
// followed by a crash would keep half of it).
func TestBatchMaxMemBytesBoundsTheArena(t *testing.T) {
	d := &DB{opts: Options{DisableWAL: true}}
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 3000 {
		b := NewBatch()
		for range 1 + rng.IntN(1+i%60) { // small batches too: their tower heights vary most

			key := make([]byte, rng.IntN(40))
			if rng.IntN(4) == 0 {
				b.Delete(key)
				continue
			}
			b.Put(key, make([]byte, rng.IntN(300)))
		}
		m := newMemTable(1, 1<<20, 0)
		if _, err := m.apply(b, 0); err != nil {
			t.Fatal(err)
		}
		if got, bound := m.t.Size(), d.batchBytes(b); got > bound {
			t.Fatalf("a batch of %d entries took %d arena bytes, over the %d checked for", b.Len(), got, bound)
		}
	}
}
