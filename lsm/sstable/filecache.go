package sstable

import (
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lni/vfs"
)

// FileCache bounds how many table files the Readers sharing it hold open
// at once, as RocksDB's max_open_files and Pebble's table cache do: without
// a bound a store keeps one descriptor per table, and a large store (or
// many stores in one process, as in cluster mode) runs out of them under a
// tight open-file limit, failing reads and accepts alike.
//
// Only the descriptor is evicted: a Reader keeps its index and filter in
// memory and reopens its file on the next block read that misses the
// block cache, so the cost of an eviction is one open(2) later, never a
// reread of the table's metadata. Victims are chosen by the clock
// algorithm: a Reader read since the hand last passed it is spared once.
//
// The bound can be exceeded briefly while every other open Reader is
// closing or was just read; it is restored by the next reopen.
type FileCache struct {
	capacity int64
	open     atomic.Int64 // descriptors held by member Readers
	reopens  atomic.Int64

	mu      sync.Mutex
	readers []*Reader // members; r.slot is r's index
	hand    int
}

// NewFileCache returns a FileCache that keeps at most capacity table files
// open (at least 1).
func NewFileCache(capacity int) *FileCache {
	return &FileCache{capacity: int64(max(capacity, 1))}
}

// Capacity is the most table files held open at once.
func (c *FileCache) Capacity() int { return int(c.capacity) }

// Open is the number of table files held open now.
func (c *FileCache) Open() int64 { return c.open.Load() }

// Reopens counts the files reopened after an eviction: a figure that grows
// quickly means the capacity is below the tables in use.
func (c *FileCache) Reopens() int64 { return c.reopens.Load() }

// add makes r, whose file is open, a member.
func (c *FileCache) add(r *Reader) {
	c.mu.Lock()
	r.slot = len(c.readers)
	c.readers = append(c.readers, r)
	c.mu.Unlock()
	c.open.Add(1)
	c.shrink(r)
}

// remove drops r, which holds no file any more, from the members.
func (c *FileCache) remove(r *Reader) {
	c.mu.Lock()
	last := len(c.readers) - 1
	moved := c.readers[last]
	c.readers[r.slot] = moved
	moved.slot = r.slot
	c.readers[last] = nil
	c.readers = c.readers[:last]
	if c.hand >= last {
		c.hand = 0
	}
	c.mu.Unlock()
}

// reopened counts a member's file opened again (open counts it already).
func (c *FileCache) reopened(r *Reader) {
	c.reopens.Add(1)
	c.shrink(r)
}

// shrink closes the files of other members until the bound holds again or
// no member can give one up.
func (c *FileCache) shrink(keep *Reader) {
	for c.open.Load() > c.capacity {
		victim := c.pick(keep)
		if victim == nil {
			return
		}
		victim.closeFile()
	}
}

// pick returns a member other than keep whose file is open and that was
// not read since the hand last passed it, or nil after two turns.
func (c *FileCache) pick(keep *Reader) *Reader {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.readers)
	for range 2 * n {
		r := c.readers[c.hand]
		c.hand = (c.hand + 1) % n
		if r == keep || r.file.Load() == nil {
			continue
		}
		if r.touched.Swap(false) {
			continue
		}
		return r
	}
	return nil
}

// tableFile is one opening of a Reader's file, closed when its last
// reference goes: the Reader holds one while the file is its current
// opening, and each read holds one while it runs, so a read never meets a
// closed file (not every vfs.File allows a close during a read).
type tableFile struct {
	f     vfs.File
	raw   syscall.RawConn // nil when reads cannot be told not to wait
	files *FileCache      // nil when no FileCache counts the file
	refs  atomic.Int64
}

func newTableFile(f vfs.File, files *FileCache) *tableFile {
	h := &tableFile{f: f, raw: rawConn(f), files: files}
	h.refs.Store(1)
	return h
}

// tryRef takes a reference unless the file is already closed (or closing).
func (h *tableFile) tryRef() bool {
	for {
		n := h.refs.Load()
		if n == 0 {
			return false
		}
		if h.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// unref drops a reference, closing the file with the last.
func (h *tableFile) unref() error {
	if h.refs.Add(-1) != 0 {
		return nil
	}
	if h.files != nil {
		h.files.open.Add(-1)
	}
	return h.f.Close()
}
