package memtable

import (
	"math"

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
