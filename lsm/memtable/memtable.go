// Package memtable holds recent writes in memory, ordered by internal key,
// in a skiplist laid out inside one preallocated byte arena.
//
// Invariants:
//   - Entries are never modified or removed: a write is a new entry with a
//     newer sequence number, a delete is a KindDelete entry. The arena only
//     grows; when an entry does not fit, Add returns ErrFull and changes
//     nothing, and the engine rotates to a new table.
//   - Entries are ordered as base.Compare orders internal keys (user key
//     ascending, then sequence number descending), and each node stores the
//     internal key itself, so iterators hand out internal keys that alias the
//     arena without allocating. The caller never adds the same (user key,
//     sequence number) twice.
//   - Nodes link to each other by uint32 arena offsets, not Go pointers, so
//     a table of millions of entries is one pointer-free allocation the
//     garbage collector never scans. Offset 0 is the head node, which nothing
//     links to, so a zero link means "end of list".
//   - One writer at a time (the commit pipeline serialises Add), any number
//     of concurrent readers, no locks. The writer fills in a node completely,
//     its own links included, before publishing it with an atomic store into
//     its predecessor at level 0 and then at each higher level; readers load
//     links atomically. A reader therefore sees each node either not at all
//     or whole, and a node reachable at a high level is already reachable at
//     level 0. Unlike pebble's arenaskl there are no CAS loops and no back
//     links: with a single writer, and iterators that only move forward,
//     neither is needed.
//   - A hash index beside the arena (index.go) maps each user key to its
//     newest node, so Get finds the newest version, or learns that the key
//     is absent, without walking the skiplist. It is allocated with the
//     arena, never grows, and is only an accelerator: when it is full, or
//     the reader wants an older version, Get walks the skiplist as before.
package memtable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"unsafe"

	"github.com/kvstore/kv/lsm/internal/base"
)

// ErrFull is returned by Add when the entry does not fit in the arena.
var ErrFull = errors.New("memtable: arena full")

const (
	// maxHeight and the branching factor 4 (one level per two random bits)
	// give O(log n) searches far beyond any memtable's entry count.
	maxHeight = 20
	// A node is its header (key length, value length, height, level-0
	// predecessor: u32 each), height u32 links, the internal key and the
	// value, padded to 4 bytes so every node and link is 4-byte aligned for
	// atomic access. The predecessor ("back") is read and written by the
	// writer only; readers never follow it.
	nodeHeaderLen = 16
	headLen       = nodeHeaderLen + 4*maxHeight
	// maxArena keeps every offset representable as a uint32.
	maxArena = math.MaxUint32 &^ 3
)

// Table is a memtable. It must be created with New.
type Table struct {
	arena []byte // 8-byte aligned; the head node sits at offset 0

	used   atomic.Uint32 // offset of the first free byte
	height atomic.Uint32 // levels in use, 1..maxHeight
	count  atomic.Int64

	idx index

	// Writer-only state.
	rng  uint64
	prev [maxHeight]uint32
	next [maxHeight]uint32
}

// EntrySize returns the most arena bytes Add can use for one entry with a
// user key of keyLen bytes and a value of valueLen bytes. A table made with
// New(EntrySize(k, v)) always has room for such an entry, which is how the
// engine stores an entry too large for an ordinary memtable.
func EntrySize(keyLen, valueLen int) int {
	return align4(headLen + max(keyLen, 0) + base.TrailerLen + max(valueLen, 0))
}

func align4(n int) int { return (n + 3) &^ 3 }

// New returns an empty table with room for arenaBytes bytes of entries (as
// measured by EntrySize and Size), allocated now. Tables are capped just
// under 4 GiB. The hash index adds 1/16 of arenaBytes.
func New(arenaBytes int) *Table {
	total := min(headLen+max(arenaBytes, 0), maxArena)
	return newTable(total, total/arenaBytesPerSlot)
}

// newTable returns an empty table with an arena of total bytes, head
// included, and an index of indexSlots slots.
func newTable(total, indexSlots int) *Table {
	// Allocate as uint64s for 8-byte alignment; the memory holds no
	// pointers, so the garbage collector never scans it.
	words := make([]uint64, (total+7)/8)
	t := &Table{
		arena: unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), total),
		rng:   rand.Uint64() | 1,
	}
	t.idx.init(total, indexSlots)
	t.putU32(8, maxHeight) // head: empty key and value, full-height tower
	t.used.Store(headLen)
	t.height.Store(1)
	return t
}

// Size returns the arena bytes used by entries.
func (t *Table) Size() int64 { return int64(t.used.Load()) - headLen }

// Len returns the number of entries.
func (t *Table) Len() int { return int(t.count.Load()) }

// Empty reports whether the table has no entries.
func (t *Table) Empty() bool { return t.Len() == 0 }

// Add inserts the entry (ukey, seq, kind) -> value, copying key and value
// into the arena. Only one goroutine may call Add at a time; readers may run
// concurrently. It returns ErrFull, leaving the table unchanged, when the
// entry does not fit.
func (t *Table) Add(ukey []byte, seq uint64, kind base.Kind, value []byte) error {
	if seq > base.MaxSeq {
		return fmt.Errorf("memtable: add %d-byte key: sequence number %d above the maximum %d", len(ukey), seq, base.MaxSeq)
	}
	trailer := base.MakeTrailer(seq, kind)
	// Overwrite fast path: when the index holds the key's newest version N
	// and this one is newer, it belongs right before N at level 0, after
	// N's level-0 predecessor. A height-1 node there keeps the list valid
	// (searches reach the key's versions through level 0), so no search
	// from the top is needed: O(1) instead of O(log n) cache misses.
	if n, _ := t.indexFind(ukey); n != 0 {
		switch nt := base.Trailer(t.key(n)); {
		case trailer == nt:
			return fmt.Errorf("memtable: add %d-byte key: sequence number %d already present", len(ukey), seq)
		case trailer > nt:
			return t.insert(ukey, trailer, value, 1, n)
		}
	}
	if t.findSplice(ukey, trailer) {
		return fmt.Errorf("memtable: add %d-byte key: sequence number %d already present", len(ukey), seq)
	}
	return t.insert(ukey, trailer, value, t.randomHeight(), 0)
}

// insert writes a node of height h and links it. before != 0 means "right
// before node before at level 0" (h must be 1); otherwise t.prev/t.next
// from findSplice say where it goes at every level.
func (t *Table) insert(ukey []byte, trailer uint64, value []byte, h, before uint32) error {
	keyLen := len(ukey) + base.TrailerLen
	size := uint64(nodeHeaderLen) + 4*uint64(h) + uint64(keyLen) + uint64(len(value))
	size = (size + 3) &^ 3
	nd := t.used.Load()
	if uint64(nd)+size > uint64(len(t.arena)) {
		return ErrFull
	}
	if before != 0 {
		t.prev[0], t.next[0] = t.u32(before+12), before
	}

	// Fill in the node while no reader can reach it.
	t.putU32(nd, uint32(keyLen))
	t.putU32(nd+4, uint32(len(value)))
	t.putU32(nd+8, h)
	t.putU32(nd+12, t.prev[0])
	k := nd + nodeHeaderLen + 4*h
	copy(t.arena[k:], ukey)
	binary.LittleEndian.PutUint64(t.arena[k+uint32(len(ukey)):], trailer)
	copy(t.arena[k+uint32(keyLen):], value)
	listHeight := t.height.Load()
	for i := range h {
		if i >= listHeight {
			t.prev[i], t.next[i] = 0, 0
		}
		t.link(nd, i).Store(t.next[i])
	}
	if t.next[0] != 0 {
		t.putU32(t.next[0]+12, nd)
	}

	// Publish bottom-up: once reachable at level i, the node is reachable at
	// every level below.
	for i := range h {
		t.link(t.prev[i], i).Store(nd)
	}
	if h > listHeight {
		t.height.Store(h)
	}
	t.indexAdd(ukey, trailer, nd)
	t.used.Store(nd + uint32(size))
	t.count.Add(1)
	return nil
}

// findSplice fills t.prev and t.next, for each level in use, with the nodes
// the new key goes between, and reports whether the key is already present.
func (t *Table) findSplice(ukey []byte, trailer uint64) (found bool) {
	var prev uint32  // head
	var above uint32 // the node that ended the search one level up: known >= key
	for i := int(t.height.Load()) - 1; i >= 0; i-- {
		next := t.link(prev, uint32(i)).Load()
		for next != 0 && next != above {
			c := t.compare(next, ukey, trailer)
			if c == 0 {
				return true
			}
			if c > 0 {
				break
			}
			prev, next = next, t.link(next, uint32(i)).Load()
		}
		t.prev[i], t.next[i] = prev, next
		above = next
	}
	return false
}

// Get returns the newest entry of ukey with a sequence number <= seq. value
// aliases the arena and must not be modified; it stays valid as long as the
// table is referenced. ok is false when there is none; a deletion is
// returned as an entry with kind base.KindDelete.
func (t *Table) Get(ukey []byte, seq uint64) (value []byte, kind base.Kind, ok bool) {
	nd, _ := t.get(ukey, seq)
	if nd == 0 {
		return nil, 0, false
	}
	return t.value(nd), base.KindOf(base.Trailer(t.key(nd))), true
}

// getPath says how get found its answer.
type getPath uint8

const (
	pathIndex    getPath = iota // the index held the newest version, visible at seq
	pathAbsent                  // the index proved the key absent
	pathSkiplist                // the index could not tell; the skiplist answered
)

// get returns the node Get answers with (0 for none) and how it was found.
func (t *Table) get(ukey []byte, seq uint64) (uint32, getPath) {
	seq = min(seq, base.MaxSeq)
	nd, known := t.indexFind(ukey)
	switch {
	case nd != 0 && base.SeqNum(base.Trailer(t.key(nd))) <= seq:
		return nd, pathIndex
	case nd == 0 && known:
		return 0, pathAbsent
	}
	// Overflowed, or the newest version is newer than seq.
	nd = t.seekGE(ukey, base.MakeTrailer(seq, base.KindMax))
	if nd == 0 || !bytes.Equal(base.UserKey(t.key(nd)), ukey) {
		return 0, pathSkiplist
	}
	return nd, pathSkiplist
}

// seekGE returns the first node whose internal key is >= (ukey, trailer),
// or 0.
func (t *Table) seekGE(ukey []byte, trailer uint64) uint32 {
	var prev, next uint32 // head
	var above uint32      // the node that ended the search one level up: known >= key
	for i := int(t.height.Load()) - 1; i >= 0; i-- {
		next = t.link(prev, uint32(i)).Load()
		for next != 0 && next != above && t.compare(next, ukey, trailer) < 0 {
			prev, next = next, t.link(next, uint32(i)).Load()
		}
		above = next
	}
	// Return the level-0 successor seen by the search, not a fresh load: a
	// node published since then might sort before the search key.
	return next
}

// compare orders node nd's internal key against (ukey, trailer) as
// base.Compare does.
func (t *Table) compare(nd uint32, ukey []byte, trailer uint64) int {
	ikey := t.key(nd)
	n := len(ikey) - base.TrailerLen
	if c := bytes.Compare(ikey[:n], ukey); c != 0 {
		return c
	}
	switch tr := binary.LittleEndian.Uint64(ikey[n:]); {
	case tr > trailer:
		return -1
	case tr < trailer:
		return 1
	}
	return 0
}

// randomHeight draws a tower height: each level above the first with
// probability 1/4, from a xorshift64* generator only the writer touches.
func (t *Table) randomHeight() uint32 {
	t.rng ^= t.rng >> 12
	t.rng ^= t.rng << 25
	t.rng ^= t.rng >> 27
	r := t.rng * 2685821657736338717
	h := uint32(1)
	for h < maxHeight && r&3 == 0 {
		h++
		r >>= 2
	}
	return h
}

// Node field access. Header fields and key/value bytes are written before
// the node is published and never again, so plain reads are safe after the
// atomic load that found the node; links are always accessed atomically.

func (t *Table) u32(off uint32) uint32 {
	return *(*uint32)(unsafe.Pointer(&t.arena[off : off+4][0]))
}

func (t *Table) putU32(off, v uint32) {
	*(*uint32)(unsafe.Pointer(&t.arena[off : off+4][0])) = v
}

func (t *Table) link(nd, level uint32) *atomic.Uint32 {
	off := nd + nodeHeaderLen + 4*level
	return (*atomic.Uint32)(unsafe.Pointer(&t.arena[off : off+4][0]))
}

// key returns node nd's internal key, capped so that appending to it cannot
// write into the arena.
func (t *Table) key(nd uint32) []byte {
	k := nd + nodeHeaderLen + 4*t.u32(nd+8)
	end := k + t.u32(nd)
	return t.arena[k:end:end]
}

// value returns node nd's value, capped like key.
func (t *Table) value(nd uint32) []byte {
	v := nd + nodeHeaderLen + 4*t.u32(nd+8) + t.u32(nd)
	end := v + t.u32(nd+4)
	return t.arena[v:end:end]
}
