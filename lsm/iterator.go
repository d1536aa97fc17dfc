package lsm

import (
	"bytes"
	"errors"

	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/kvstore/kv/lsm/sstable"
)

// Iterator walks the live keys of one consistent snapshot of the DB in key
// order, within [lower, upper).
//
// It pins a sequence number and a read state (memtables and version), so
// writes made after NewIterator are invisible, the tables it reads stay
// alive until Close, and compactions keep the versions it can see. Close it
// promptly: an open iterator holds files and old versions.
//
// Key and Value are valid until the next positioning call or Close. An
// Iterator is not safe for concurrent use.
type Iterator struct {
	db    *DB
	rs    *readState
	snap  *snapshotNode
	seq   uint64
	iter  base.Iterator
	lower []byte
	upper []byte

	key    []byte // current user key (owned copy)
	value  []byte
	valid  bool
	err    error
	seek   []byte // reused seek-key buffer
	closed bool
}

// snapshotNode is an element of the DB's list of pinned sequence numbers.
// Nodes are appended in sequence order, so the list stays sorted.
type snapshotNode struct {
	seq        uint64
	prev, next *snapshotNode
}

// NewIterator returns an iterator over the keys in [lower, upper) (nil
// means unbounded) as of now. The caller must Close it.
func (d *DB) NewIterator(lower, upper []byte) *Iterator {
	return d.newIterator(lower, upper, false)
}

// NewIteratorNoWait is NewIterator for a caller that must not wait for the
// disk, such as an event loop: where the walk would read a table block
// that is in neither the block cache nor the OS page cache, or open a
// table, the iterator stops (Valid false) with ErrWouldBlock as its error,
// having waited for nothing, and the caller starts again with NewIterator
// where waiting is fine. As with GetNoWait, a filesystem that cannot tell
// what is cached reads as NewIterator does.
func (d *DB) NewIteratorNoWait(lower, upper []byte) *Iterator {
	return d.newIterator(lower, upper, true)
}

func (d *DB) newIterator(lower, upper []byte, nowait bool) *Iterator {
	it := &Iterator{db: d, lower: cloneOrNil(lower), upper: cloneOrNil(upper)}
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		it.err = ErrClosed
		it.closed = true
		return it
	}
	// Under d.mu no rotation can happen between taking the read state and
	// the sequence number, so every write at or below seq is in the state.
	it.rs = d.acquireReadState()
	it.seq = d.visibleSeq.Load()
	it.snap = &snapshotNode{seq: it.seq, prev: d.snapshots.prev, next: &d.snapshots}
	it.snap.prev.next = it.snap
	d.snapshots.prev = it.snap
	d.mu.Unlock()

	rs := it.rs
	iters := make([]base.Iterator, 0, 2+len(rs.imm)+len(rs.v.levels[0])+numLevels)
	iters = append(iters, rs.mem.t.NewIter())
	for i := len(rs.imm) - 1; i >= 0; i-- {
		iters = append(iters, rs.imm[i].t.NewIter())
	}
	for _, f := range rs.v.levels[0] {
		if !it.overlaps(f) {
			continue
		}
		reader, newIter := d.tc.reader, (*sstable.Reader).NewIter
		if nowait {
			reader, newIter = d.tc.readerNoWait, (*sstable.Reader).NewIterNoWait
		}
		r, err := reader(f)
		if err != nil {
			it.fail(err)
			break
		}
		iters = append(iters, newIter(r))
	}
	for level := 1; level < numLevels && it.err == nil; level++ {
		files := rs.v.levels[level]
		if it.lower != nil {
			files = files[findFile(files, it.lower):]
		}
		if it.upper != nil {
			n := 0
			for n < len(files) && bytes.Compare(files[n].smallestUkey(), it.upper) < 0 {
				n++
			}
			files = files[:n]
		}
		if len(files) > 0 {
			iters = append(iters, newLevelIter(&d.tc, files, nowait))
		}
	}
	it.iter = newMergingIter(iters)
	return it
}

// UnorderedBytes returns how many bytes of memtable entries have not been
// put in key order yet: the work NewIterator does first, on the caller's
// goroutine (memtables order their entries lazily, at the first ordered
// read after writes; see package memtable). A caller that must not stall,
// such as an event loop, can hand an iterator over a large backlog to
// another goroutine. It never blocks.
func (d *DB) UnorderedBytes() int64 {
	rs := d.acquireReadState()
	defer rs.unref()
	n := rs.mem.t.Unordered()
	for _, m := range rs.imm {
		n += m.t.Unordered()
	}
	return n
}

// RangeSkipsOver reports whether an iterator over [lower, upper) (nil:
// unbounded) may step over more than n entries it does not return:
// tombstones in the tables that overlap the range, and the memtables'
// entries that are not live keys (tombstones and overwritten versions,
// counted over the whole memtable). A caller that must not stall, such as
// an event loop, can hand such a scan to another goroutine: a scan of 10
// keys behind 1.9M tombstones took 255 ms. It never blocks.
func (d *DB) RangeSkipsOver(lower, upper []byte, n int64) bool {
	rs := d.acquireReadState()
	defer rs.unref()
	skips := int64(rs.mem.t.Len()) - rs.mem.t.ApproxKeys()
	for _, m := range rs.imm {
		skips += int64(m.t.Len()) - m.t.ApproxKeys()
	}
	for _, files := range rs.v.levels {
		for _, f := range files {
			if skips > n {
				return true
			}
			if f.deletions == 0 ||
				(lower != nil && bytes.Compare(f.largestUkey(), lower) < 0) ||
				(upper != nil && bytes.Compare(f.smallestUkey(), upper) >= 0) {
				continue
			}
			skips += f.deletions
		}
	}
	return skips > n
}

func cloneOrNil(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// overlaps reports whether table f can hold keys within the bounds.
func (it *Iterator) overlaps(f *fileMetadata) bool {
	if it.lower != nil && bytes.Compare(f.largestUkey(), it.lower) < 0 {
		return false
	}
	if it.upper != nil && bytes.Compare(f.smallestUkey(), it.upper) >= 0 {
		return false
	}
	return true
}

// SeekGE positions at the first key >= key (and >= lower) and reports
// whether there is one.
func (it *Iterator) SeekGE(key []byte) bool {
	if it.closed || it.err != nil {
		return false
	}
	if it.lower != nil && bytes.Compare(key, it.lower) < 0 {
		key = it.lower
	}
	it.seek = base.AppendKey(it.seek[:0], key, it.seq, base.KindMax)
	it.iter.SeekGE(it.seek)
	return it.findNextEntry()
}

// First positions at the first key (>= lower) and reports whether there is
// one.
func (it *Iterator) First() bool {
	if it.closed || it.err != nil {
		return false
	}
	if it.lower != nil {
		return it.SeekGE(it.lower)
	}
	it.iter.First()
	return it.findNextEntry()
}

// Next moves to the next key and reports whether there is one.
func (it *Iterator) Next() bool {
	if !it.valid {
		return false
	}
	it.skipCurrentKey()
	return it.findNextEntry()
}

// skipCurrentKey advances past the remaining (older) versions of it.key.
func (it *Iterator) skipCurrentKey() {
	it.iter.Next()
	for it.iter.Valid() && bytes.Equal(base.UserKey(it.iter.Key()), it.key) {
		it.iter.Next()
	}
}

// findNextEntry moves from the internal position to the newest visible
// version of the next live key.
func (it *Iterator) findNextEntry() bool {
	it.valid = false
	for it.iter.Valid() {
		ukey, trailer, ok := base.Split(it.iter.Key())
		if !ok {
			it.iter.Next()
			continue
		}
		if it.upper != nil && bytes.Compare(ukey, it.upper) >= 0 {
			return false
		}
		if base.SeqNum(trailer) > it.seq {
			it.iter.Next() // newer than the snapshot
			continue
		}
		it.key = append(it.key[:0], ukey...)
		if base.KindOf(trailer) == base.KindDelete {
			it.skipCurrentKey()
			continue
		}
		it.value = it.iter.Value()
		it.valid = true
		return true
	}
	if err := it.iter.Err(); err != nil {
		it.fail(err)
	}
	return false
}

// fail records err as the error that stopped the iteration: once, so a
// failed iteration counts as one failed read.
func (it *Iterator) fail(err error) {
	if it.err != nil {
		return
	}
	it.err = err
	if errors.Is(err, ErrWouldBlock) {
		it.db.metrics.readsNeedingDisk.Add(1)
		return
	}
	it.db.noteReadErr(err)
}

// Valid reports whether the iterator is positioned at a key.
func (it *Iterator) Valid() bool { return it.valid }

// Key returns the current key.
func (it *Iterator) Key() []byte {
	if !it.valid {
		return nil
	}
	return it.key
}

// Value returns the current value.
func (it *Iterator) Value() []byte {
	if !it.valid {
		return nil
	}
	return it.value
}

// Err returns the error that stopped the iteration, if any.
func (it *Iterator) Err() error { return it.err }

// Close releases the snapshot and the files it pins, and returns Err. A
// second Close does nothing.
func (it *Iterator) Close() error {
	if it.closed {
		return it.err
	}
	it.closed = true
	it.valid = false
	if err := it.iter.Close(); err != nil {
		it.fail(err)
	}
	d := it.db
	d.mu.Lock()
	it.snap.prev.next = it.snap.next
	it.snap.next.prev = it.snap.prev
	d.mu.Unlock()
	it.rs.unref()
	it.iter, it.rs, it.snap = nil, nil, nil
	return it.err
}
