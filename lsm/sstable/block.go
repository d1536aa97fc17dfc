package sstable

import (
	"encoding/binary"
	"errors"

	"github.com/kvstore/kv/lsm/internal/base"
)

// blockWriter builds one raw block: prefix-compressed entries, then the
// restart array and its length.
type blockWriter struct {
	restartInterval int
	buf             []byte
	restarts        []uint32
	counter         int // entries since the last restart point
	entries         int
	lastKey         []byte
}

func (w *blockWriter) add(key, value []byte) {
	shared := 0
	if w.entries == 0 || w.counter >= w.restartInterval {
		w.restarts = append(w.restarts, uint32(len(w.buf)))
		w.counter = 0
	} else {
		n := min(len(w.lastKey), len(key))
		for shared < n && w.lastKey[shared] == key[shared] {
			shared++
		}
	}
	w.buf = binary.AppendUvarint(w.buf, uint64(shared))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(key)-shared))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(value)))
	w.buf = append(w.buf, key[shared:]...)
	w.buf = append(w.buf, value...)
	w.lastKey = append(w.lastKey[:0], key...)
	w.counter++
	w.entries++
}

// estimatedSize is the raw size the block would have if finished now.
func (w *blockWriter) estimatedSize() int {
	return len(w.buf) + 4*len(w.restarts) + 4
}

// finish appends the restart array and returns the raw block, which stays
// valid until the next reset.
func (w *blockWriter) finish() []byte {
	for _, r := range w.restarts {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, r)
	}
	return binary.LittleEndian.AppendUint32(w.buf, uint32(len(w.restarts)))
}

func (w *blockWriter) reset() {
	// A block that held a huge value leaves a huge buffer behind; let it go
	// rather than pin it for the rest of the table.
	if cap(w.buf) > 1<<20 {
		w.buf = nil
	}
	w.buf = w.buf[:0]
	w.restarts = w.restarts[:0]
	w.counter = 0
	w.entries = 0
	w.lastKey = w.lastKey[:0]
}

// errBlock reports a malformed raw block; the reader wraps it with the file
// name, the block offset and base.ErrCorruption.
type errBlock string

func (e errBlock) Error() string { return string(e) }

// blockIter walks the entries of one raw block. Every length it reads is
// checked against the block, so a malformed block yields err, never a panic.
// key aliases the block when the entry is stored whole and keyBuf otherwise;
// val always aliases the block.
type blockIter struct {
	data        []byte // the entries, restart array excluded
	restarts    []byte // numRestarts u32 LE offsets
	numRestarts int
	next        int // offset of the entry after the current one
	key         []byte
	keyInBuf    bool
	keyBuf      []byte
	val         []byte
	valid       bool
	err         error
}

// init points the iterator at block, unpositioned.
func (it *blockIter) init(block []byte) error {
	*it = blockIter{keyBuf: it.keyBuf[:0]}
	if len(block) < 4 {
		return it.fail("block shorter than its restart count")
	}
	n := uint64(binary.LittleEndian.Uint32(block[len(block)-4:]))
	if n*4+4 > uint64(len(block)) {
		return it.fail("restart count exceeds block")
	}
	end := len(block) - 4 - int(n)*4
	it.data = block[:end]
	it.restarts = block[end : len(block)-4]
	it.numRestarts = int(n)
	if n == 0 && end > 0 {
		return it.fail("entries without restart points")
	}
	return nil
}

func (it *blockIter) fail(msg string) error {
	it.valid = false
	if it.err == nil {
		it.err = errBlock(msg)
	}
	return it.err
}

// readEntry parses the entry at off against the current key (the previous
// entry's) and positions the iterator on it.
func (it *blockIter) readEntry(off int) {
	p := it.data[off:]
	shared, n1 := binary.Uvarint(p)
	if n1 <= 0 {
		it.fail("bad entry header")
		return
	}
	unshared, n2 := binary.Uvarint(p[n1:])
	if n2 <= 0 {
		it.fail("bad entry header")
		return
	}
	vlen, n3 := binary.Uvarint(p[n1+n2:])
	if n3 <= 0 {
		it.fail("bad entry header")
		return
	}
	h := n1 + n2 + n3
	rest := uint64(len(p) - h)
	if unshared > rest || vlen > rest-unshared {
		it.fail("entry overruns block")
		return
	}
	if shared > uint64(len(it.key)) {
		it.fail("shared key prefix longer than previous key")
		return
	}
	delta := p[h : h+int(unshared)]
	if shared == 0 {
		it.key = delta[:len(delta):len(delta)]
		it.keyInBuf = false
	} else {
		if it.keyInBuf {
			it.keyBuf = it.keyBuf[:shared]
		} else {
			it.keyBuf = append(it.keyBuf[:0], it.key[:shared]...)
		}
		it.keyBuf = append(it.keyBuf, delta...)
		it.key = it.keyBuf
		it.keyInBuf = true
	}
	if len(it.key) < base.TrailerLen {
		it.fail("key shorter than an internal key")
		return
	}
	vstart := h + int(unshared)
	it.val = p[vstart : vstart+int(vlen) : vstart+int(vlen)]
	it.next = off + vstart + int(vlen)
	it.valid = true
}

// restartOffset returns the offset of restart point i, or -1 after
// recording an error.
func (it *blockIter) restartOffset(i int) int {
	off := int(binary.LittleEndian.Uint32(it.restarts[4*i:]))
	if off >= len(it.data) {
		it.fail("restart offset outside block")
		return -1
	}
	return off
}

// seekToRestart positions on the entry at restart point i.
func (it *blockIter) seekToRestart(i int) {
	off := it.restartOffset(i)
	if off < 0 {
		return
	}
	it.key = nil
	it.keyInBuf = false
	it.readEntry(off)
}

func (it *blockIter) first() {
	if it.err != nil {
		return
	}
	if it.numRestarts == 0 {
		it.valid = false
		return
	}
	it.seekToRestart(0)
}

func (it *blockIter) nextEntry() {
	if !it.valid {
		return
	}
	if it.next >= len(it.data) {
		it.valid = false
		return
	}
	it.readEntry(it.next)
}

// seekGE positions on the first entry whose key is >= target, or makes the
// iterator invalid (with err nil) when every key is smaller.
func (it *blockIter) seekGE(target []byte) {
	if it.err != nil {
		return
	}
	if it.numRestarts == 0 {
		it.valid = false
		return
	}
	// Find the last restart point whose key is < target; the answer is at
	// or after it and before the next one's key.
	lo, hi := 0, it.numRestarts-1
	for lo < hi {
		mid := int(uint(lo+hi+1) >> 1)
		it.seekToRestart(mid)
		if !it.valid {
			return
		}
		if base.Compare(it.key, target) < 0 {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	it.seekToRestart(lo)
	for it.valid && base.Compare(it.key, target) < 0 {
		it.nextEntry()
	}
}

// errIndexValue is returned for an index entry whose value is not a handle.
var errIndexValue = errors.New("bad block handle in index")

// decodeHandle parses an index value: uvarint offset | uvarint length.
func decodeHandle(v []byte) (handle, error) {
	off, n1 := binary.Uvarint(v)
	if n1 <= 0 {
		return handle{}, errIndexValue
	}
	length, n2 := binary.Uvarint(v[n1:])
	if n2 <= 0 || n1+n2 != len(v) {
		return handle{}, errIndexValue
	}
	return handle{offset: off, length: length}, nil
}

func appendHandle(dst []byte, h handle) []byte {
	dst = binary.AppendUvarint(dst, h.offset)
	return binary.AppendUvarint(dst, h.length)
}
