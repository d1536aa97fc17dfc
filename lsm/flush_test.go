package lsm

import (
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
