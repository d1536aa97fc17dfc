package memtable

import (
	"math"
	"slices"

	"github.com/kvstore/kv/lsm/internal/base"
)

// iterator walks level 0 of the skiplist. It may run while entries are
// added and linked: each step loads the next link atomically, so it sees
// every entry added before it was created, in order, and possibly some
// added after; the caller filters by sequence number for a stable snapshot.
type iterator struct {
	t          *Table
	nd         uint32 // 0: not positioned
	key, value []byte
}

// NewIter returns an iterator over every entry (all sequence numbers) in
// base.Compare order. It starts unpositioned. Key and Value alias the arena:
// they stay valid as long as the table is referenced, and must not be
// modified. It first links the entries added since the last ordered read
// into the skiplist (see catchUp), on the caller's goroutine.
func (t *Table) NewIter() base.Iterator {
	t.catchUp()
	return &iterator{t: t}
}

// SeekGE positions at the first entry >= ikey. An ikey too short to be an
// internal key is taken as a bare user key, which sorts before every
// version of itself.
func (it *iterator) SeekGE(ikey []byte) {
	ukey, trailer, ok := base.Split(ikey)
	if !ok {
		ukey, trailer = ikey, math.MaxUint64
	}
	it.set(it.t.seekGE(ukey, trailer))
}

func (it *iterator) First() { it.set(it.t.linkAt(0, 0).Load()) }

func (it *iterator) Next() {
	if it.nd != 0 {
		it.set(it.t.linkAt(it.nd, 0).Load())
	}
}

func (it *iterator) set(nd uint32) {
	it.nd = nd
	if nd == 0 {
		it.key, it.value = nil, nil
		return
	}
	it.key, it.value = it.t.key(nd), it.t.value(nd)
}

func (it *iterator) Valid() bool   { return it.nd != 0 }
func (it *iterator) Key() []byte   { return it.key }
func (it *iterator) Value() []byte { return it.value }
func (it *iterator) Err() error    { return nil }

// Close unpositions the iterator; the memtable holds no resources for it.
func (it *iterator) Close() error {
	it.set(0)
	return nil
}

// NewFlushIter returns an iterator for writing out a table no more entries
// will be added to (immutable). oldest is the oldest sequence number any
// reader may read the output at (the engine's oldest snapshot).
//
// When nothing was ever linked into the skiplist, it iterates one sorted
// run instead of linking the entries: a flush then costs a sort, not a
// sort plus a skiplist build it would walk once. When, besides, some keys
// have several versions and every key's newest is at or below oldest, the
// run holds only those newest versions: the older ones are invisible to
// every reader (a flush would drop them), and with overwrites the sort is
// of the distinct keys instead of every entry. Otherwise the run holds
// every entry, and with a linked skiplist it is NewIter.
func (t *Table) NewFlushIter(oldest uint64) base.Iterator {
	t.linkMu.Lock()
	if t.linked.Load() != headLen {
		t.linkMu.Unlock()
		return t.NewIter()
	}
	var run []sortEntry
	ok := false
	if t.idx.claimed < t.Len() {
		run, ok = t.newestRun(oldest)
	}
	if !ok {
		run = t.sortedRun(nil, headLen, t.used.Load())
	}
	t.linkMu.Unlock()
	return &runIter{t: t, run: run, i: -1}
}

// runIter walks a sorted run of nodes.
type runIter struct {
	t          *Table
	run        []sortEntry
	i          int // -1 or len(run): not positioned
	key, value []byte
}

func (it *runIter) SeekGE(ikey []byte) {
	ukey, trailer, ok := base.Split(ikey)
	if !ok {
		ukey, trailer = ikey, math.MaxUint64
	}
	i, _ := slices.BinarySearchFunc(it.run, 0, func(e sortEntry, _ int) int {
		return it.t.compare(e.nd, ukey, trailer)
	})
	it.set(i)
}

func (it *runIter) First() { it.set(0) }

func (it *runIter) Next() {
	if it.Valid() {
		it.set(it.i + 1)
	}
}

func (it *runIter) set(i int) {
	it.i = i
	if !it.Valid() {
		it.key, it.value = nil, nil
		return
	}
	nd := it.run[i].nd
	it.key, it.value = it.t.key(nd), it.t.value(nd)
}

func (it *runIter) Valid() bool   { return it.i >= 0 && it.i < len(it.run) }
func (it *runIter) Key() []byte   { return it.key }
func (it *runIter) Value() []byte { return it.value }
func (it *runIter) Err() error    { return nil }

func (it *runIter) Close() error {
	it.set(-1)
	it.run = nil
	return nil
}
