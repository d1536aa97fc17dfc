package sstable

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/lni/vfs"
)

// WriterOptions configures a Writer. A zero BlockSize or BloomBitsPerKey
// takes the default; a zero Compression means NoCompression.
type WriterOptions struct {
	// BlockSize is the raw size at which a data block is closed (default
	// 4096). A block holds at least one entry, however large.
	BlockSize int
	// BloomBitsPerKey sizes the bloom filter (default 10, about 1% false
	// positives); a negative value writes no filter.
	BloomBitsPerKey int
	// Compression of the data, index and properties blocks. The zero value
	// is NoCompression (it must stay expressible); callers set S2 or Zstd
	// explicitly.
	Compression Compression
}

// ErrWriterClosed is returned by Add and Finish after Finish or Abort.
var ErrWriterClosed = errors.New("sstable writer closed")

// indexEntry is one index block entry: a separator key and the handle of
// the data block it closes.
type indexEntry struct {
	sep []byte
	h   handle
}

// Writer writes one table. It is not safe for concurrent use.
//
// Entries go into data blocks in the order given; a block is closed once
// its raw size reaches BlockSize. A block's index entry is written only when
// the next key is known, so its separator can be shorter than the block's
// last key.
type Writer struct {
	f    vfs.File
	bw   *bufio.Writer
	opts WriterOptions
	comp *compressor

	offset   uint64 // bytes handed to bw so far
	block    blockWriter
	index    []indexEntry
	pending  bool   // the last data block still needs its index entry
	pendingH handle // its handle

	lastKey    []byte
	smallest   []byte
	entries    int64
	deletions  int64
	dataBlocks uint64
	bloom      bloomBuilder

	err    error // sticky: the first I/O error
	closed bool
}

// NewWriter returns a Writer that writes a table to f. The Writer owns f
// from now on: Finish and Abort close it. Bad options (an unknown
// Compression) make Add and Finish fail.
func NewWriter(f vfs.File, opts WriterOptions) *Writer {
	if opts.BlockSize <= 0 {
		opts.BlockSize = defaultBlockSize
	}
	opts.BlockSize = min(opts.BlockSize, maxBlockSize)
	if opts.BloomBitsPerKey == 0 {
		opts.BloomBitsPerKey = defaultBloomBitsPerKey
	}
	w := &Writer{
		f:     f,
		bw:    bufio.NewWriterSize(f, 256<<10),
		opts:  opts,
		block: blockWriter{restartInterval: restartInterval},
	}
	comp, err := newCompressor(opts.Compression)
	if err != nil {
		w.err = err
		comp = &compressor{typ: NoCompression}
	}
	w.comp = comp
	return w
}

// Add appends an entry. Keys must be valid internal keys of kind KindSet or
// KindDelete, strictly increasing in base.Compare order; a key that breaks
// that is rejected with an error and not written (the Writer stays usable).
// The Writer copies key and value.
func (w *Writer) Add(ikey, value []byte) error {
	if w.closed {
		return ErrWriterClosed
	}
	if w.err != nil {
		return w.err
	}
	ukey, trailer, ok := base.Split(ikey)
	if !ok {
		return fmt.Errorf("sstable writer: key of %d bytes is not an internal key", len(ikey))
	}
	if k := base.KindOf(trailer); !validKind(k) {
		return fmt.Errorf("sstable writer: key %q has unknown kind %d", ukey, k)
	}
	if w.entries > 0 && base.Compare(w.lastKey, ikey) >= 0 {
		return fmt.Errorf("sstable writer: key %q seq %d does not sort after previous key %q seq %d",
			ukey, base.SeqNum(trailer), base.UserKey(w.lastKey), base.SeqNum(base.Trailer(w.lastKey)))
	}
	// The entry alone must fit a block a reader accepts (with room for the
	// entry header and restart array).
	if len(ikey)+len(value) > maxBlockSize-64 {
		return fmt.Errorf("sstable writer: entry of %d bytes exceeds the %d-byte block limit",
			len(ikey)+len(value), maxBlockSize-64)
	}

	// Close the block early rather than let it outgrow what a reader
	// accepts (only entries of many MiB get here).
	if w.block.entries > 0 && w.block.estimatedSize()+len(ikey)+len(value)+64 > maxBlockSize {
		w.flushBlock()
		if w.err != nil {
			return w.err
		}
	}
	if w.pending {
		w.index = append(w.index, indexEntry{sep: appendSeparator(nil, w.lastKey, ikey), h: w.pendingH})
		w.pending = false
	}
	if w.entries == 0 {
		w.smallest = append([]byte(nil), ikey...)
	}
	if w.opts.BloomBitsPerKey > 0 && (w.entries == 0 || !bytes.Equal(base.UserKey(w.lastKey), ukey)) {
		w.bloom.add(ukey)
	}
	w.block.add(ikey, value)
	w.lastKey = append(w.lastKey[:0], ikey...)
	w.entries++
	if base.KindOf(trailer) == base.KindDelete {
		w.deletions++
	}
	if w.block.estimatedSize() >= w.opts.BlockSize {
		w.flushBlock()
	}
	return w.err
}

// flushBlock writes the current data block and leaves its index entry
// pending until the next key (or Finish) is known.
func (w *Writer) flushBlock() {
	h, err := w.writeBlock(w.block.finish(), true)
	w.block.reset()
	if err != nil {
		w.err = err
		return
	}
	w.pending = true
	w.pendingH = h
	w.dataBlocks++
}

// writeBlock compresses raw if allowed and worth it, and writes it with its
// trailer.
func (w *Writer) writeBlock(raw []byte, compress bool) (handle, error) {
	stored, typ := raw, NoCompression
	if compress {
		stored, typ = w.comp.compress(raw)
	}
	var trailer [blockTrailerLen]byte
	trailer[0] = byte(typ)
	binary.LittleEndian.PutUint32(trailer[1:], blockChecksum(stored, byte(typ)))
	if _, err := w.bw.Write(stored); err != nil {
		return handle{}, fmt.Errorf("write sstable block: %w", err)
	}
	if _, err := w.bw.Write(trailer[:]); err != nil {
		return handle{}, fmt.Errorf("write sstable block: %w", err)
	}
	h := handle{offset: w.offset, length: uint64(len(stored))}
	w.offset += uint64(len(stored)) + blockTrailerLen
	return h, nil
}

// EstimatedSize is the file size the table would have if finished now,
// not counting the filter, index and footer.
func (w *Writer) EstimatedSize() int64 {
	return int64(w.offset) + int64(w.block.estimatedSize())
}

// Finish writes the last data block, the filter, properties and index
// blocks and the footer, then fsyncs and closes the file. The file is
// closed even when Finish fails; the caller then removes it.
func (w *Writer) Finish() (Meta, error) {
	if w.closed {
		return Meta{}, ErrWriterClosed
	}
	meta, err := w.finish()
	w.closed = true
	w.comp.close()
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close sstable: %w", cerr)
	}
	if err != nil {
		return Meta{}, err
	}
	return meta, nil
}

func (w *Writer) finish() (Meta, error) {
	if w.err != nil {
		return Meta{}, w.err
	}
	if w.block.entries > 0 {
		w.flushBlock()
		if w.err != nil {
			return Meta{}, w.err
		}
	}
	if w.pending {
		w.index = append(w.index, indexEntry{sep: append([]byte(nil), w.lastKey...), h: w.pendingH})
		w.pending = false
	}

	var ft footer
	ft.version = formatVersion
	var err error
	if w.opts.BloomBitsPerKey > 0 {
		// Random bits do not compress.
		if ft.filter, err = w.writeBlock(w.bloom.build(w.opts.BloomBitsPerKey), false); err != nil {
			return Meta{}, err
		}
	}

	props := properties{
		entries:     uint64(w.entries),
		deletions:   uint64(w.deletions),
		dataBlocks:  w.dataBlocks,
		compression: w.comp.typ,
		smallest:    w.smallest,
	}
	if w.entries > 0 {
		props.largest = w.lastKey
	}
	if ft.props, err = w.writeBlock(props.encode(), true); err != nil {
		return Meta{}, err
	}

	// Every index entry is a restart point, so a reader can keep the keys
	// as slices of the block.
	ib := blockWriter{restartInterval: 1}
	var hbuf []byte
	for _, e := range w.index {
		hbuf = appendHandle(hbuf[:0], e.h)
		ib.add(e.sep, hbuf)
	}
	if ft.index, err = w.writeBlock(ib.finish(), true); err != nil {
		return Meta{}, err
	}

	if _, err := w.bw.Write(ft.encode()); err != nil {
		return Meta{}, fmt.Errorf("write sstable footer: %w", err)
	}
	if err := w.bw.Flush(); err != nil {
		return Meta{}, fmt.Errorf("write sstable: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		return Meta{}, fmt.Errorf("sync sstable: %w", err)
	}
	return Meta{
		Size:      int64(w.offset) + footerLen,
		Smallest:  w.smallest,
		Largest:   props.largest,
		Entries:   w.entries,
		Deletions: w.deletions,
	}, nil
}

// Abort closes the file without finishing the table; the caller removes
// it. Abort after Finish or Abort does nothing.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	w.comp.close()
	_ = w.f.Close()
}

// appendSeparator appends to dst an internal key k with a <= k < b, shorter
// than a where it can: when the user keys differ at byte n and a's byte can
// be incremented while staying below b's, k is a's user key cut after that
// incremented byte, with the trailer that sorts first among its versions.
func appendSeparator(dst, a, b []byte) []byte {
	ua, ub := base.UserKey(a), base.UserKey(b)
	n := 0
	for n < len(ua) && n < len(ub) && ua[n] == ub[n] {
		n++
	}
	if n < len(ua) && n < len(ub) && ua[n] < 0xff && ua[n]+1 < ub[n] {
		dst = append(dst, ua[:n+1]...)
		dst[len(dst)-1]++
		return base.AppendKey(dst, nil, base.MaxSeq, base.KindMax)
	}
	return append(dst, a...)
}
