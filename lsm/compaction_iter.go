package lsm

import (
	"bytes"
	"sort"

	"github.com/kvstore/kv/lsm/internal/base"
)

// compactionIter filters the merged input of a flush or compaction down to
// the entries some reader can still see.
//
// The live snapshots (sequence numbers pinned by open iterators) cut the
// sequence space into stripes: stripe i holds the sequence numbers in
// (snapshots[i-1], snapshots[i]], and the last stripe everything newer
// than the newest snapshot. A reader at any snapshot, or at the latest
// sequence number, sees for each key the newest version at or below its
// sequence number, which is always the newest version of some stripe. So
// the iterator keeps the newest version of each key in each stripe and
// drops the rest (LevelDB rule A, generalised to several snapshots as
// RocksDB and Pebble do).
//
// A tombstone is dropped too when it is in the oldest stripe (every
// snapshot sees it or something newer) and elide reports that no level
// below the output can hold an older version of the key: then "no entry"
// reads exactly like "deleted" for every reader (rule B). Dropping it
// anywhere else would resurrect the older value.
type compactionIter struct {
	iter      base.Iterator
	snapshots []uint64 // ascending
	// elide reports whether a tombstone for ukey may be dropped; nil never.
	elide func(ukey []byte) bool

	curKey     []byte // user key of the previous entry (a copy)
	haveCur    bool
	lastStripe int
	valid      bool
}

func (c *compactionIter) stripe(seq uint64) int {
	return sort.Search(len(c.snapshots), func(i int) bool { return c.snapshots[i] >= seq })
}

func (c *compactionIter) First() {
	c.haveCur = false
	c.iter.First()
	c.findNext()
}

func (c *compactionIter) Next() {
	c.iter.Next()
	c.findNext()
}

func (c *compactionIter) findNext() {
	for ; c.iter.Valid(); c.iter.Next() {
		ukey, trailer, ok := base.Split(c.iter.Key())
		if !ok {
			continue
		}
		stripe := c.stripe(base.SeqNum(trailer))
		if c.haveCur && bytes.Equal(ukey, c.curKey) {
			if stripe == c.lastStripe {
				continue // shadowed by a newer version in the same stripe
			}
		} else {
			c.curKey = append(c.curKey[:0], ukey...)
			c.haveCur = true
		}
		c.lastStripe = stripe
		if base.KindOf(trailer) == base.KindDelete && stripe == 0 && c.elide != nil && c.elide(ukey) {
			continue
		}
		c.valid = true
		return
	}
	c.valid = false
}

func (c *compactionIter) Valid() bool   { return c.valid }
func (c *compactionIter) Key() []byte   { return c.iter.Key() }
func (c *compactionIter) Value() []byte { return c.iter.Value() }
func (c *compactionIter) Err() error    { return c.iter.Err() }
