package lsm

import (
	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/kvstore/kv/lsm/memtable"
)

// memTable is a memtable.Table with the bookkeeping the DB needs around it.
//
// A memtable is mutable while it is d.mem: only the committer goroutine
// adds to it, readers read it lock-free. Rotation makes it immutable (it
// moves to d.imm) and it stays readable until the flush that writes it as
// an L0 table is recorded in the manifest and a read state without it is
// published.
type memTable struct {
	t        *memtable.Table
	id       uint64 // increasing in rotation order
	capacity int64  // arena bytes
	// logNum is the WAL holding this memtable's oldest entry (0 without a
	// WAL). Once the memtable is flushed, every WAL older than the next
	// memtable's logNum is obsolete.
	logNum uint64
}

func newMemTable(id uint64, capacity int64, logNum uint64) *memTable {
	return &memTable{t: memtable.New(int(capacity)), id: id, capacity: capacity, logNum: logNum}
}

// fits reports whether entries more entries taking need more arena bytes
// fit (the arena is the memtable's capacity).
func (m *memTable) fits(entries int, need int64) bool {
	return m.t.Fits(entries, need)
}

func (m *memTable) empty() bool { return m.t.Empty() }

// batchMemBytes estimates the arena bytes b takes in a memtable: entries
// with the average tower height. An estimate that falls short only means
// the batch spills into a fresh memtable (see DB.applyToMemtable).
func batchMemBytes(b *Batch) int64 {
	// Header (12) + about 4/3 links (4 bytes each) + trailer (8) + padding.
	const perEntry = 12 + 8 + base.TrailerLen + 3
	return int64(b.Len())*perEntry + int64(b.Size())
}

// batchMaxMemBytes is the most arena bytes b can take: a memtable of this
// size (plus fixed overhead) always holds it.
func batchMaxMemBytes(b *Batch) int64 {
	var n int64
	_ = b.Each(func(del bool, key, value []byte) error {
		n += int64(memtable.EntrySize(len(key), len(value)))
		return nil
	})
	return n
}

// apply inserts the operations of b, the i-th with sequence number
// b.seq()+i. It stops at the first error (memtable.ErrFull, or a malformed
// batch) and returns how many operations went in, so the caller can carry
// on in a fresh memtable.
func (m *memTable) apply(b *Batch, skip int) (int, error) {
	if b.Len()-skip >= 4 {
		m.touch(b)
	}
	seq := b.seq()
	i := 0
	err := b.Each(func(del bool, key, value []byte) error {
		if i < skip {
			i++
			return nil
		}
		kind := base.KindSet
		if del {
			kind = base.KindDelete
		}
		if err := m.t.Add(key, seq+uint64(i), kind, value); err != nil {
			return err
		}
		i++
		return nil
	})
	return i, err
}

// touch starts the cache misses of b's entries before they are added, in
// chunks: the index slots of a chunk's keys, then the nodes they point to
// (see memtable.Table.TouchSlot).
func (m *memTable) touch(b *Batch) {
	const chunk = 32
	var slots [chunk]uint32
	n := 0
	nodes := func() {
		for _, s := range slots[:n] {
			m.t.TouchNode(s)
		}
		n = 0
	}
	_ = b.Each(func(_ bool, key, _ []byte) error {
		slots[n] = m.t.TouchSlot(key)
		if n++; n == chunk {
			nodes()
		}
		return nil
	})
	nodes()
}

// memtableBytes returns the size of a new memtable: the configured size, or
// need if more (a batch larger than a memtable gets one of its own).
//
// Unlike pebble, a DB does not start with a small memtable that doubles up
// to the configured size. The arena is one pointer-free allocation the
// kernel backs with memory only as entries are written, so a large first
// memtable costs address space, not memory; and small first memtables meant
// that a DB's first tens of megabytes of writes were all flushed (64 MiB
// went through 9 memtables, 256 KiB to 32 MiB), where one memtable absorbs
// overwrites and serves reads from its index.
func (d *DB) memtableBytes(need int64) int64 {
	return max(d.opts.MemtableBytes, need)
}
