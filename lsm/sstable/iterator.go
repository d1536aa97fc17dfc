package sstable

import (
	"fmt"

	"github.com/kvstore/kv/lsm/internal/base"
)

// iterator walks a whole table in internal key order, one data block at a
// time. Errors are sticky: once a block fails to read or parse, the
// iterator stays invalid and Err reports the damage.
type iterator struct {
	r   *Reader
	idx int // index of the current data block
	bi  blockIter
	err error
	// uncached reads every block from the file and leaves the block cache
	// alone: see NewCompactionIter.
	uncached bool
	// nowait fails with base.ErrWouldBlock instead of waiting for a block
	// that is not in the OS page cache: see NewIterNoWait.
	nowait bool
}

// NewIter returns an iterator over the whole table, unpositioned. Keys and
// values alias immutable blocks or the iterator's key buffer; see
// base.Iterator for how long they stay valid.
func (r *Reader) NewIter() base.Iterator {
	return &iterator{r: r}
}

// NewIterNoWait is NewIter for a caller that must not wait for the disk:
// where reading a block would (it is in neither the block cache nor the OS
// page cache), the iterator stops with base.ErrWouldBlock as its error,
// having waited for nothing (see GetNoWait).
func (r *Reader) NewIterNoWait() base.Iterator {
	return &iterator{r: r, nowait: true}
}

// NewCompactionIter is NewIter for a compaction: it reads each block from
// the file and neither looks in the block cache nor fills it. A compaction
// reads each of its inputs once, in order, and the inputs are deleted when it
// ends, so caching their blocks would only evict the blocks readers use (and
// count misses no reader had).
func (r *Reader) NewCompactionIter() base.Iterator {
	return &iterator{r: r, uncached: true}
}

// loadBlock makes block i current, unpositioned; it reports whether that
// worked (false at the end of the table or on error).
func (it *iterator) loadBlock(i int) bool {
	it.idx = i
	it.bi.valid = false
	if i >= len(it.r.index) {
		return false
	}
	h := it.r.index[i].h
	var block []byte
	var err error
	if it.uncached {
		block, err = it.r.readBlockFromFile(h, true, false)
	} else {
		block, err = it.r.readBlock(h, it.nowait)
	}
	if err != nil {
		it.err = err
		return false
	}
	if err := it.bi.init(block); err != nil {
		it.err = it.r.corrupt(h.offset, "bad data block: %v", err)
		return false
	}
	return true
}

// settle moves past blocks that have no entry at or after the position,
// and turns a block parse error into the iterator's error.
func (it *iterator) settle() {
	for {
		if it.bi.err != nil {
			it.err = it.r.corrupt(it.r.index[it.idx].h.offset, "bad data block: %v", it.bi.err)
			it.bi.valid = false
			return
		}
		if it.bi.valid {
			return
		}
		if !it.loadBlock(it.idx + 1) {
			return
		}
		it.bi.first()
	}
}

func (it *iterator) SeekGE(ikey []byte) {
	if it.err != nil {
		return
	}
	if len(ikey) < base.TrailerLen {
		it.bi.valid = false
		it.err = fmt.Errorf("sstable %s: seek key of %d bytes is not an internal key", it.r.name, len(ikey))
		return
	}
	if !it.loadBlock(it.r.findBlock(ikey)) {
		return
	}
	it.bi.seekGE(ikey)
	it.settle()
}

func (it *iterator) First() {
	if it.err != nil {
		return
	}
	if !it.loadBlock(0) {
		return
	}
	it.bi.first()
	it.settle()
}

func (it *iterator) Next() {
	if it.err != nil || !it.bi.valid {
		return
	}
	it.bi.nextEntry()
	it.settle()
}

func (it *iterator) Valid() bool   { return it.err == nil && it.bi.valid }
func (it *iterator) Key() []byte   { return it.bi.key }
func (it *iterator) Value() []byte { return it.bi.val }
func (it *iterator) Err() error    { return it.err }

func (it *iterator) Close() error {
	// Drop the block so a closed iterator pins no memory.
	it.bi = blockIter{}
	return it.err
}
