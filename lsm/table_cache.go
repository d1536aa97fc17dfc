package lsm

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/lsm/sstable"
)

// tableCache keeps one sstable.Reader per live table.
//
// A reader is opened on first use and stored in the table's metadata, so
// the read path finds it with one atomic load and no lock. It is closed when
// the table becomes obsolete (no version references it, so no read can be
// using it) or when the DB closes. The map only tracks which readers are
// open, for Close. Open readers outnumber open files: files bounds the
// descriptors, closing idle readers' files and reopening them on demand.
type tableCache struct {
	fs      vfs.FS
	dir     string
	cache   *cache.Cache
	cacheID uint64
	files   *sstable.FileCache

	mu     sync.Mutex
	open   map[uint64]*fileMetadata
	closed bool // no more readers are opened (an iterator outliving Close)

	// memory sums the open readers' MemoryBytes: their indexes and
	// filters, resident until the table is obsolete.
	memory atomic.Int64

	afterOpen func() // tests: runs between opening a reader and keeping it
}

func (c *tableCache) path(fileNum uint64) string {
	return c.fs.PathJoin(c.dir, makeFilename(fileTypeTable, fileNum))
}

// reader returns the open reader of f, opening it if needed. The caller
// must hold a reference on a version containing f.
func (c *tableCache) reader(f *fileMetadata) (*sstable.Reader, error) {
	if r := f.reader.Load(); r != nil {
		return r, nil
	}
	f.readerMu.Lock()
	defer f.readerMu.Unlock()
	if r := f.reader.Load(); r != nil {
		return r, nil
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	name := c.path(f.fileNum)
	file, err := c.fs.Open(name)
	if err != nil {
		return nil, fmt.Errorf("lsm: open table %s: %w", name, err)
	}
	r, err := sstable.Open(file, f.size, sstable.ReaderOptions{
		Cache: c.cache, CacheID: c.cacheID, FileNum: f.fileNum, Name: name,
		Files: c.files, Reopen: func() (vfs.File, error) { return c.fs.Open(name) },
	})
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("lsm: open table %s: %w", name, err)
	}
	if c.afterOpen != nil {
		c.afterOpen()
	}
	// closeAll may have run while the table was being opened: it did not
	// see this reader, so it must not be kept.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		r.Close()
		return nil, ErrClosed
	}
	c.open[f.fileNum] = f
	c.memory.Add(r.MemoryBytes())
	f.reader.Store(r)
	return r, nil
}

// readerNoWait returns f's reader if it is open, and ErrWouldBlock
// otherwise: opening a table reads its index and filter from the disk.
func (c *tableCache) readerNoWait(f *fileMetadata) (*sstable.Reader, error) {
	if r := f.reader.Load(); r != nil {
		return r, nil
	}
	return nil, ErrWouldBlock
}

// evict closes f's reader, if open.
func (c *tableCache) evict(f *fileMetadata) {
	f.readerMu.Lock()
	r := f.reader.Swap(nil)
	f.readerMu.Unlock()
	if r == nil {
		return
	}
	c.mu.Lock()
	delete(c.open, f.fileNum)
	c.mu.Unlock()
	c.memory.Add(-r.MemoryBytes())
	r.Close()
}

// closeAll closes every open reader.
func (c *tableCache) closeAll() {
	c.mu.Lock()
	c.closed = true
	files := make([]*fileMetadata, 0, len(c.open))
	for _, f := range c.open {
		files = append(files, f)
	}
	c.mu.Unlock()
	for _, f := range files {
		c.evict(f)
	}
}
