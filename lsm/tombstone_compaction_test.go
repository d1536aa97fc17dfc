package lsm

import (
	"fmt"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// tombstonesAndBytes sums the tombstones and table bytes of the current
// version.
func tombstonesAndBytes(d *DB) (tombstones, bytes int64) {
	rs := d.acquireReadState()
	defer rs.unref()
	for _, files := range rs.v.levels {
		for _, f := range files {
			tombstones += f.deletions
			bytes += f.size
		}
	}
	return tombstones, bytes
}

// TestDeletedDataIsReclaimed deletes almost every key of a tree spread
// over several levels. Without tombstone-driven compactions the levels
// stay below their size targets, nothing is ever due, and the tombstones
// and the data they delete stay on disk for good (every scan over the
// range then steps through all of them).
func TestDeletedDataIsReclaimed(t *testing.T) {
	fs := vfs.NewMem()
	opts := smallOptions(fs)
	opts.L0CompactionTrigger = 4
	d := mustOpen(t, "db", opts)
	defer d.Close()
	const n = 20000
	key := func(i int) string { return fmt.Sprintf("k%08d", i) }
	val := make([]byte, 100)
	for i := range n {
		if err := d.Put([]byte(key(i)), val); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	_, loaded := tombstonesAndBytes(d)
	for i := range n - 10 {
		mustDelete(t, d, key(i))
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	var tomb, size int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if tomb, size = tombstonesAndBytes(d); tomb == 0 && size < loaded/20 {
			break
		}
	}
	if tomb != 0 || size >= loaded/20 {
		t.Fatalf("after deleting all but 10 of %d keys: %d tombstones and %d table bytes left (%d loaded)", n, tomb, size, loaded)
	}
	if got := scan(t, d, nil, nil); len(got) != 10 || got[0][0] != key(n-10) {
		t.Fatalf("scan after the deletes: %d keys, first %v", len(got), got[:min(1, len(got))])
	}
}

// TestTombstoneRewriteWaitsForSnapshots: a bottom-level table of
// tombstones an open iterator still needs is not picked (a rewrite would
// keep them and be picked again, for ever); once the iterator is closed,
// it is.
func TestTombstoneRewriteWaitsForSnapshots(t *testing.T) {
	f := &fileMetadata{fileNum: 9, size: 100, entries: 10, deletions: 10, largestSeq: 50,
		smallest: []byte("a\x01\x00\x00\x00\x00\x00\x00\x00"), largest: []byte("b\x01\x00\x00\x00\x00\x00\x00\x00")}
	v := &version{}
	v.levels[numLevels-1] = []*fileMetadata{f}
	o := pickerOptions{l0Trigger: 4, levelBaseBytes: 1 << 20, targetFileBytes: 1 << 20}
	var cursor [numLevels][]byte
	o.oldestSnapshot = 49
	if c := pickCompaction(v, o, &cursor); c != nil {
		t.Fatalf("picked %+v while a reader needs the tombstones", c)
	}
	o.oldestSnapshot = 50
	c := pickCompaction(v, o, &cursor)
	if c == nil || c.level != numLevels-1 || c.outputLevel != numLevels-1 || c.trivialMove || len(c.inputs[0]) != 1 {
		t.Fatalf("picked %+v, want a rewrite of the bottom table", c)
	}
}
