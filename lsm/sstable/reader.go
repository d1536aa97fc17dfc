package sstable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/lni/vfs"
)

// ReaderOptions configures a Reader.
type ReaderOptions struct {
	// Cache, when set, holds decompressed data blocks under (CacheID,
	// FileNum, block offset); the DB guarantees the pair names one file.
	Cache   *cache.Cache
	CacheID uint64
	FileNum uint64
	// Name is the file name used in error messages (default
	// FileNum formatted as "000123.sst").
	Name string
	// Files, with Reopen, bounds the open files of the Readers sharing it:
	// this Reader's file may be closed while it is idle and is reopened
	// with Reopen on the next read that needs it.
	Files  *FileCache
	Reopen func() (vfs.File, error)
}

// Reader reads one table. It is safe for concurrent use: after Open it
// only reads its own fields, and block reads use ReadAt or preadv2 (both
// positional) on the current opening of its file. It must not be closed
// while a Get or an iterator is still using it.
type Reader struct {
	// file is the open file, nil while a FileCache has it closed. Its raw
	// connection reaches the descriptor for reads that must not wait for
	// the disk (readAtNoWait).
	file     atomic.Pointer[tableFile]
	fileMu   sync.Mutex // serializes reopening and closing the file
	reopen   func() (vfs.File, error)
	files    *FileCache
	touched  atomic.Bool // read since the FileCache's clock hand passed
	slot     int         // index in files.readers, guarded by files.mu
	noNowait atomic.Bool // the kernel or filesystem refused RWF_NOWAIT
	name     string
	cache    *cache.Cache
	cacheID  uint64
	fileNum  uint64
	// verify is false only in fuzz tests that reach past the checksums.
	verify bool

	index  []indexEntry // separator keys alias the decoded index block
	filter []byte       // nil when the table has no filter
	meta   Meta
	// memory is about what the reader keeps in memory while open (see
	// MemoryBytes), fixed once loaded.
	memory int64
	closed atomic.Bool
}

// Open reads and verifies the footer, properties, index and filter of the
// table in f (size bytes long) and keeps them in memory. On success the
// Reader owns f and Close closes it; on error f is left open for the
// caller to close.
func Open(f vfs.File, size int64, opts ReaderOptions) (*Reader, error) {
	return open(f, size, opts, true)
}

func open(f vfs.File, size int64, opts ReaderOptions, verify bool) (*Reader, error) {
	r, err := load(f, size, opts, verify)
	if err != nil {
		return nil, err
	}
	if opts.Files != nil && opts.Reopen != nil {
		r.files, r.reopen = opts.Files, opts.Reopen
		r.file.Load().files = opts.Files
		opts.Files.add(r)
	}
	return r, nil
}

func load(f vfs.File, size int64, opts ReaderOptions, verify bool) (*Reader, error) {
	r := &Reader{
		name:    opts.Name,
		cache:   opts.Cache,
		cacheID: opts.CacheID,
		fileNum: opts.FileNum,
		verify:  verify,
	}
	if r.name == "" {
		r.name = fmt.Sprintf("%06d.sst", opts.FileNum)
	}
	r.file.Store(newTableFile(f, nil))
	r.touched.Store(true)
	if size < footerLen {
		return nil, r.corrupt(0, "file of %d bytes is too short for a footer", size)
	}
	footerOff := uint64(size) - footerLen
	var fb [footerLen]byte
	if err := r.readAt(fb[:], footerOff); err != nil {
		return nil, err
	}
	ft, err := decodeFooter(fb[:])
	if err != nil {
		return nil, r.corrupt(footerOff, "%v", err)
	}

	propsBlock, err := r.readMetaBlock(ft.props, footerOff, "properties")
	if err != nil {
		return nil, err
	}
	props, err := decodeProperties(propsBlock)
	if err != nil {
		return nil, r.corrupt(ft.props.offset, "%v", err)
	}
	r.meta = Meta{
		Size:      size,
		Smallest:  props.smallest,
		Largest:   props.largest,
		Entries:   int64(props.entries),
		Deletions: int64(props.deletions),
	}
	if props.entries == 0 {
		r.meta.Smallest, r.meta.Largest = nil, nil
	}

	if ft.filter.length > 0 {
		filter, err := r.readMetaBlock(ft.filter, footerOff, "filter")
		if err != nil {
			return nil, err
		}
		if !validBloom(filter) {
			return nil, r.corrupt(ft.filter.offset, "bad filter block")
		}
		r.filter = filter
	}

	indexBlock, err := r.readMetaBlock(ft.index, footerOff, "index")
	if err != nil {
		return nil, err
	}
	// Data blocks end where the first metadata block starts.
	dataEnd := min(ft.props.offset, ft.index.offset)
	if ft.filter.length > 0 {
		dataEnd = min(dataEnd, ft.filter.offset)
	}
	cloned, err := r.loadIndex(indexBlock, ft.index.offset, dataEnd)
	if err != nil {
		return nil, err
	}
	r.memory = int64(len(indexBlock)) + int64(cloned) + int64(len(r.filter)) +
		int64(cap(r.index))*int64(unsafe.Sizeof(indexEntry{})) +
		int64(len(r.meta.Smallest)+len(r.meta.Largest))
	if uint64(len(r.index)) != props.dataBlocks || (len(r.index) == 0) != (props.entries == 0) {
		return nil, r.corrupt(ft.index.offset, "index has %d blocks, properties say %d blocks and %d entries",
			len(r.index), props.dataBlocks, props.entries)
	}
	return r, nil
}

// readMetaBlock reads a block that Open keeps in memory; it must lie
// before the footer.
func (r *Reader) readMetaBlock(h handle, footerOff uint64, what string) ([]byte, error) {
	if h.length > footerOff || h.offset > footerOff-h.length || footerOff-h.length-h.offset < blockTrailerLen {
		return nil, r.corrupt(h.offset, "%s block handle (length %d) outside file", what, h.length)
	}
	b, err := r.readBlockFromFile(h, false, false)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// loadIndex decodes the index block into r.index and checks that the
// separators increase and the handles lie in the data area [0, dataEnd).
// It returns the bytes of the separators it copied out of the block.
func (r *Reader) loadIndex(block []byte, off, dataEnd uint64) (cloned int, err error) {
	var it blockIter
	if err := it.init(block); err != nil {
		return 0, r.corrupt(off, "bad index block: %v", err)
	}
	var end uint64
	for it.first(); it.valid; it.nextEntry() {
		h, err := decodeHandle(it.val)
		if err != nil {
			return 0, r.corrupt(off, "%v", err)
		}
		if h.offset < end || h.length > dataEnd || h.offset > dataEnd-h.length || dataEnd-h.length-h.offset < blockTrailerLen {
			return 0, r.corrupt(off, "index entry %d: data block handle at %d (length %d) out of place", len(r.index), h.offset, h.length)
		}
		end = h.offset + h.length + blockTrailerLen
		sep := it.key
		if it.keyInBuf {
			sep = bytes.Clone(sep)
			cloned += len(sep)
		}
		if n := len(r.index); n > 0 && base.Compare(r.index[n-1].sep, sep) >= 0 {
			return 0, r.corrupt(off, "index keys out of order at entry %d", n)
		}
		r.index = append(r.index, indexEntry{sep: sep, h: h})
	}
	if it.err != nil {
		return 0, r.corrupt(off, "bad index block: %v", it.err)
	}
	return cloned, nil
}

// CorruptionError reports damage found in a table: a block whose checksum
// does not match, or contents that do not parse. It wraps
// base.ErrCorruption. The DB reads FileNum and Offset from it (with
// errors.As) to tell operators which table is damaged and where, without
// parsing messages.
type CorruptionError struct {
	Name    string // the file name given in ReaderOptions
	FileNum uint64
	Offset  uint64 // of the damaged block or structure
	Detail  string // what is wrong, such as "bad block checksum"
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("sstable %s: %s at offset %d: %v", e.Name, e.Detail, e.Offset, base.ErrCorruption)
}

// Unwrap returns base.ErrCorruption.
func (e *CorruptionError) Unwrap() error { return base.ErrCorruption }

// corrupt returns a *CorruptionError naming the file and offset.
func (r *Reader) corrupt(off uint64, format string, args ...any) error {
	return &CorruptionError{Name: r.name, FileNum: r.fileNum, Offset: off, Detail: fmt.Sprintf(format, args...)}
}

// readAt fills p from offset off; a short read means the file is shorter
// than its footer says.
func (r *Reader) readAt(p []byte, off uint64) error {
	h, err := r.refFile()
	if err != nil {
		return err
	}
	defer h.unref()
	n, err := h.f.ReadAt(p, int64(off))
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return r.corrupt(off, "short read of %d bytes (got %d)", len(p), n)
	}
	return r.readErr(len(p), off, err)
}

// refFile returns the open file with a reference the caller drops with
// unref, reopening the file if a FileCache closed it.
func (r *Reader) refFile() (*tableFile, error) {
	for {
		if h := r.file.Load(); h != nil {
			if h.tryRef() {
				if !r.touched.Load() {
					r.touched.Store(true)
				}
				return h, nil
			}
			continue // being closed: it is swapped out already or soon
		}
		h, err := r.reopenFile()
		if h != nil || err != nil {
			return h, err
		}
	}
}

// reopenFile opens the file again with a reference for the caller, or
// returns nil, nil if another read did so first.
func (r *Reader) reopenFile() (*tableFile, error) {
	r.fileMu.Lock()
	if r.file.Load() != nil {
		r.fileMu.Unlock()
		return nil, nil
	}
	if r.closed.Load() || r.reopen == nil {
		r.fileMu.Unlock()
		return nil, fmt.Errorf("sstable %s: read after close", r.name)
	}
	f, err := r.reopen()
	if err != nil {
		r.fileMu.Unlock()
		return nil, fmt.Errorf("sstable %s: reopen: %w", r.name, err)
	}
	h := newTableFile(f, r.files)
	h.refs.Add(1) // the caller's
	r.files.open.Add(1)
	r.touched.Store(true)
	r.file.Store(h)
	r.fileMu.Unlock()
	r.files.reopened(r)
	return h, nil
}

// closeFile gives up the current opening of the file, if any: it closes
// once the reads using it are done.
func (r *Reader) closeFile() error {
	r.fileMu.Lock()
	h := r.file.Swap(nil)
	r.fileMu.Unlock()
	if h == nil {
		return nil
	}
	return h.unref()
}

// readErr reports a failed read of n bytes at off.
func (r *Reader) readErr(n int, off uint64, err error) error {
	return fmt.Errorf("sstable %s: read %d bytes at offset %d: %w", r.name, n, off, err)
}

// readBuffers recycles the buffers that compressed blocks are read into;
// the raw block is always a fresh allocation, so a recycled buffer is never
// visible to anyone after the read.
var readBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBuffer keeps rare huge blocks out of the pool.
const maxPooledBuffer = 256 << 10

// readBlockFromFile reads the block at h, verifies its trailer and returns
// the raw block, a fresh allocation nobody else references. With pooled,
// a compressed block is read into a recycled buffer. With nowait, a block
// not in the OS page cache is base.ErrWouldBlock instead of a disk read.
func (r *Reader) readBlockFromFile(h handle, pooled, nowait bool) ([]byte, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("sstable %s: read after close", r.name)
	}
	if h.length > maxBlockSize {
		return nil, r.corrupt(h.offset, "block length %d too large", h.length)
	}
	n := int(h.length) + blockTrailerLen
	var bufp *[]byte
	var buf []byte
	if pooled && n <= maxPooledBuffer {
		bufp = readBuffers.Get().(*[]byte)
		if cap(*bufp) < n {
			*bufp = make([]byte, n)
		}
		buf = (*bufp)[:n]
		defer readBuffers.Put(bufp)
	} else {
		buf = make([]byte, n)
	}
	read := r.readAt
	if nowait {
		read = r.readAtNoWait
	}
	if err := read(buf, h.offset); err != nil {
		return nil, err
	}
	stored := buf[:h.length]
	typ := Compression(buf[h.length])
	if r.verify {
		if got := binary.LittleEndian.Uint32(buf[h.length+1:]); got != blockChecksum(stored, byte(typ)) {
			return nil, r.corrupt(h.offset, "bad block checksum")
		}
	}
	raw, err := decompress(typ, stored)
	if err != nil {
		return nil, r.corrupt(h.offset, "%v", err)
	}
	if typ == NoCompression && bufp != nil {
		raw = bytes.Clone(stored)
	}
	return raw, nil
}

// readBlock returns the raw data block at h, from the cache when it holds
// it. The block is immutable. With nowait, see readBlockFromFile.
//
// Each read counts one cache hit or miss, except a nowait read that would
// wait: the caller reads the block again, waiting, and that read counts.
func (r *Reader) readBlock(h handle, nowait bool) ([]byte, error) {
	if r.cache == nil {
		return r.readBlockFromFile(h, true, nowait)
	}
	if b, ok := r.cache.Lookup(r.cacheID, r.fileNum, h.offset); ok {
		r.cache.Count(true)
		return b, nil
	}
	b, err := r.readBlockFromFile(h, true, nowait)
	if errors.Is(err, base.ErrWouldBlock) {
		return nil, err
	}
	r.cache.Count(false)
	if err != nil {
		return nil, err
	}
	r.cache.Set(r.cacheID, r.fileNum, h.offset, b)
	return b, nil
}

// findBlock returns the index of the first data block whose separator is
// >= ikey: the only block that can hold the first key >= ikey, unless that
// key is the first of the next block.
func (r *Reader) findBlock(ikey []byte) int {
	lo, hi := 0, len(r.index)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if base.Compare(r.index[mid].sep, ikey) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// getIters recycles Get's block iterators, whose key buffers would
// otherwise be allocated on every Get that meets a prefix-compressed key.
var getIters = sync.Pool{New: func() any { return new(blockIter) }}

// MayContain reports whether the table may hold an entry for ukey; false
// is certain.
func (r *Reader) MayContain(ukey []byte) bool {
	if r.filter == nil {
		return true
	}
	return bloomMayContain(r.filter, bloomHash(ukey))
}

// Get returns the newest entry of ukey with a sequence number <= seq: its
// value (for KindSet), its kind, and found = true. The value aliases an
// immutable block and stays valid for as long as the caller keeps it; the
// caller must not modify it.
func (r *Reader) Get(ukey []byte, seq uint64) (value []byte, kind base.Kind, found bool, err error) {
	return r.get(ukey, seq, false)
}

// ReadsMayWait reports whether GetNoWait has found that this file's
// filesystem cannot tell cached blocks from ones on disk, so that its
// reads that miss the block cache wait for the disk like Get's.
func (r *Reader) ReadsMayWait() bool { return r.noNowait.Load() }

// GetNoWait is Get for a caller that must not wait for the disk (an event
// loop): a block in neither the block cache nor the OS page cache makes it
// fail with base.ErrWouldBlock, having waited for nothing. Files without a
// descriptor (in-memory ones), and filesystems that cannot tell, are read
// as by Get (readAtNoWait).
func (r *Reader) GetNoWait(ukey []byte, seq uint64) (value []byte, kind base.Kind, found bool, err error) {
	return r.get(ukey, seq, true)
}

func (r *Reader) get(ukey []byte, seq uint64, nowait bool) (value []byte, kind base.Kind, found bool, err error) {
	if !r.MayContain(ukey) {
		return nil, 0, false, nil
	}
	var kb [64]byte
	target := base.AppendKey(kb[:0], ukey, min(seq, base.MaxSeq), base.KindMax)
	it := getIters.Get().(*blockIter)
	defer func() {
		// Keep the key buffer, drop the block.
		*it = blockIter{keyBuf: it.keyBuf[:0]}
		getIters.Put(it)
	}()
	for i := r.findBlock(target); i < len(r.index); i++ {
		h := r.index[i].h
		block, err := r.readBlock(h, nowait)
		if err != nil {
			return nil, 0, false, err
		}
		if err := it.init(block); err != nil {
			return nil, 0, false, r.corrupt(h.offset, "bad data block: %v", err)
		}
		it.seekGE(target)
		if it.err != nil {
			return nil, 0, false, r.corrupt(h.offset, "bad data block: %v", it.err)
		}
		if !it.valid {
			// Every key of this block is smaller; the answer, if any,
			// starts the next one.
			continue
		}
		k, trailer, _ := base.Split(it.key)
		if !bytes.Equal(k, ukey) {
			return nil, 0, false, nil
		}
		kind = base.KindOf(trailer)
		if !validKind(kind) {
			return nil, 0, false, r.corrupt(h.offset, "entry of unknown kind %d", kind)
		}
		if kind == base.KindDelete {
			return nil, kind, true, nil
		}
		return it.val, kind, true, nil
	}
	return nil, 0, false, nil
}

// Meta describes the table as recorded when it was written, with the size
// given to Open.
func (r *Reader) Meta() Meta { return r.meta }

// MemoryBytes is about the memory the reader holds until it is closed:
// its index and bloom filter, which stay resident whether or not its file
// is open. Allocator rounding and the block cache are not counted.
func (r *Reader) MemoryBytes() int64 { return r.memory }

// Close closes the file. Later calls return nil and do nothing.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if r.files != nil {
		r.files.remove(r)
	}
	if err := r.closeFile(); err != nil {
		return fmt.Errorf("close sstable %s: %w", r.name, err)
	}
	return nil
}
