// Package memtable holds recent writes in memory: entries appended to one
// preallocated byte arena, found by key through a hash index, and put in
// internal-key order by a skiplist that is built lazily.
//
// Why lazily: a skiplist insert of a key new to the table is a walk of one
// cache miss per visited node, ~1-2 µs at a few hundred thousand entries,
// and it sat on the commit path's single writer, where it was most of the
// cost of a write. Point reads do not need order (the index answers them),
// so Add only appends the entry and indexes it; the entries added since the
// last ordered read are sorted and linked into the skiplist when an
// iterator is made (NewIter: range reads). Sorting a run of entries by a
// cached 8-byte key prefix and linking it with a finger costs a fraction
// of inserting the same entries one at a time from the top, and a table
// that is only ever flushed is sorted once, off the commit path, and never
// linked (NewFlushIter).
//
// Invariants:
//   - Entries are never modified or removed: a write is a new entry with a
//     newer sequence number, a delete is a KindDelete entry. The arena only
//     grows; when an entry does not fit (arena or index), Add returns
//     ErrFull and changes nothing, and the engine rotates to a new table.
//   - Nodes link to each other by uint32 arena offsets, not Go pointers, so
//     a table of millions of entries is one pointer-free allocation the
//     garbage collector never scans. Offset 0 is the head node, which nothing
//     links to, so a zero link means "end of list".
//   - One writer at a time calls Add (the commit pipeline serialises it);
//     any number of readers run concurrently without locks. Add fills in a
//     node completely before publishing it, through the index slot of its
//     user key and then the arena's used offset.
//   - The index (index.go) maps every user key in the table to its newest
//     node, and each node links to the next older version of its user key,
//     so Get at any snapshot is an index probe and a short walk down that
//     chain. The index never overflows: Add reports ErrFull instead.
//   - Skiplist links are written only by the linker (catchUp, under
//     linkMu), never by Add, and only for nodes Add has published. Entries
//     are ordered as base.Compare orders internal keys (user key ascending,
//     then sequence number descending). A node is filled in before it is
//     published at level 0 and then at each higher level, and readers load
//     links atomically, so they see each node not at all or whole. NewIter
//     links every node published before it was called, so an iterator sees
//     every entry a reader at a published snapshot is entitled to; it may
//     see newer ones too, which the caller filters by sequence number.
package memtable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/kvstore/kv/lsm/internal/base"
)

// ErrFull is returned by Add when the entry does not fit in the arena, or
// its key would not fit in the index.
var ErrFull = errors.New("memtable: arena full")

const (
	// maxHeight and the branching factor 4 (one level per two random bits)
	// give O(log n) searches far beyond any memtable's entry count.
	maxHeight = 20
	// A node is its header (key length, value length, height, next older
	// version of the same user key: u32 each), height u32 links, the
	// internal key and the value, padded to 4 bytes so every node and link
	// is 4-byte aligned for atomic access.
	nodeHeaderLen = 16
	headLen       = nodeHeaderLen + 4*maxHeight
	// maxArena keeps every offset representable as a uint32.
	maxArena = math.MaxUint32 &^ 3
)

// Table is a memtable. It must be created with New.
type Table struct {
	arena []byte // 8-byte aligned; the head node sits at offset 0

	used   atomic.Uint32 // offset of the first free byte: nodes below it are published
	height atomic.Uint32 // skiplist levels in use, 1..maxHeight
	// counts packs, so that Add pays one atomic operation for both, the
	// number of entries (high 32 bits) and keysBias plus ApproxKeys (low
	// 32 bits): the keys whose newest version here is a value, less the
	// keys whose oldest version here is a tombstone (it probably hides a
	// key of an older table). A memtable holds far fewer than 2^31 entries,
	// so the low half never borrows from or carries into the high one.
	counts atomic.Uint64
	// lcp is the length of the prefix every user key added so far shares
	// with the first one (so with each other); the linker sorts by the 8
	// bytes after it. It only shrinks.
	lcp atomic.Int32

	idx index

	// Writer-only state.
	rng     uint64
	first   uint32 // the first node added (0: none yet)
	touched uint32 // sink for TouchNode's loads, so they are not optimised away

	// Linker state, guarded by linkMu.
	linkMu sync.Mutex
	// linked: nodes below this offset are in the skiplist. Written under
	// linkMu; atomic so that Unordered reads it without waiting for a long
	// catch-up.
	linked atomic.Uint32
	prev   [maxHeight]uint32
	next   [maxHeight]uint32
	run    []sortEntry // reused between catch-ups
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
// under 4 GiB. The hash index adds 1/8 of arenaBytes.
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
	t.linked.Store(headLen)
	t.idx.init(total, indexSlots)
	t.putU32(8, maxHeight) // head: empty key and value, full-height tower
	t.used.Store(headLen)
	t.height.Store(1)
	t.counts.Store(keysBias)
	return t
}

// Size returns the arena bytes used by entries.
func (t *Table) Size() int64 { return int64(t.used.Load()) - headLen }

// Len returns the number of entries.
func (t *Table) Len() int { return int(t.counts.Load() >> 32) }

// ApproxKeys estimates what the table adds to the live keys of a DB: the
// keys with a value as their newest version here, less the keys whose
// oldest version here is a tombstone (each probably hides a key of an
// older table). Both counts are exact when entries arrive in sequence
// order, as the commit pipeline adds them.
func (t *Table) ApproxKeys() int64 { return int64(t.counts.Load()&(1<<32-1)) - keysBias }

// keysBias keeps the low half of Table.counts positive.
const keysBias = 1 << 31

// Empty reports whether the table has no entries.
func (t *Table) Empty() bool { return t.Len() == 0 }

// Unordered returns the arena bytes of entries added since the last ordered
// read: what the next NewIter sorts and links before it returns (~300 ns
// an entry). It never blocks; a catch-up in progress is not counted as done.
func (t *Table) Unordered() int64 {
	return int64(t.used.Load()) - int64(t.linked.Load())
}

// Fits reports whether entries more entries taking bytes more arena bytes
// (as Size counts them) certainly fit, counting each entry as a key new to
// the table. Writer only.
func (t *Table) Fits(entries int, bytes int64) bool {
	return t.Size()+bytes <= int64(len(t.arena))-headLen && t.idx.claimed+entries <= t.idx.limit
}

// Add inserts the entry (ukey, seq, kind) -> value, copying key and value
// into the arena. Only one goroutine may call Add at a time; readers may run
// concurrently. It returns ErrFull, leaving the table unchanged, when the
// entry does not fit.
func (t *Table) Add(ukey []byte, seq uint64, kind base.Kind, value []byte) error {
	if seq > base.MaxSeq {
		return fmt.Errorf("memtable: add %d-byte key: sequence number %d above the maximum %d", len(ukey), seq, base.MaxSeq)
	}
	trailer := base.MakeTrailer(seq, kind)
	h := t.idx.hash(ukey)
	slot, newest := t.indexProbe(h, ukey)
	// after is the version the new node goes right after in the key's
	// chain (0: it becomes the newest). Only out-of-order adds (tests)
	// walk the chain.
	var after uint32
	switch {
	case newest == 0:
		if t.idx.claimed >= t.idx.limit {
			return ErrFull
		}
	case trailer < t.trailer(newest):
		after = newest
		for o := t.older(after).Load(); o != 0 && t.trailer(o) >= trailer; o = t.older(after).Load() {
			after = o
		}
		if t.trailer(after) == trailer {
			return errDuplicate(ukey, seq)
		}
	case trailer == t.trailer(newest):
		return errDuplicate(ukey, seq)
	}

	ht := t.randomHeight()
	keyLen := len(ukey) + base.TrailerLen
	size := (uint64(nodeHeaderLen) + 4*uint64(ht) + uint64(keyLen) + uint64(len(value)) + 3) &^ 3
	nd := t.used.Load()
	if uint64(nd)+size > uint64(len(t.arena)) {
		return ErrFull
	}
	// Fill in the node while no reader can reach it; its links stay zero
	// until the linker sets them.
	t.putU32(nd, uint32(keyLen))
	t.putU32(nd+4, uint32(len(value)))
	t.putU32(nd+8, ht)
	k := nd + nodeHeaderLen + 4*ht
	copy(t.arena[k:], ukey)
	binary.LittleEndian.PutUint64(t.arena[k+uint32(len(ukey)):], trailer)
	copy(t.arena[k+uint32(keyLen):], value)

	// Publish. A reader finds the node through the index slot or an older
	// version's chain link, both stored after the node is complete.
	switch {
	case after != 0:
		t.older(nd).Store(t.older(after).Load())
		t.older(after).Store(nd)
	case newest != 0:
		t.older(nd).Store(newest)
		t.idx.slots[slot].Store(t.idx.slot(h, nd))
	default:
		t.older(nd).Store(0)
		t.idx.claimed++
		t.idx.slots[slot].Store(t.idx.slot(h, nd))
	}
	if t.first == 0 {
		t.first = nd
		t.lcp.Store(int32(len(ukey)))
	} else if l := int(t.lcp.Load()); l > 0 {
		fk := base.UserKey(t.key(t.first))
		n := 0
		for n < l && n < len(ukey) && fk[n] == ukey[n] {
			n++
		}
		if n < l {
			t.lcp.Store(int32(n))
		}
	}
	t.used.Store(nd + uint32(size))
	delta := uint64(1) << 32 // one more entry
	switch {
	case newest == 0 && kind == base.KindDelete:
		delta-- // a key whose oldest version here is a tombstone
	case newest == 0:
		delta++ // a new key with a value
	case after == 0:
		// The entry becomes the key's newest version: a value deleted,
		// or a deleted key given a value again.
		prev := base.KindOf(t.trailer(newest))
		if prev == base.KindSet && kind == base.KindDelete {
			delta--
		} else if prev == base.KindDelete && kind == base.KindSet {
			delta++
		}
	}
	t.counts.Add(delta)
	return nil
}

func errDuplicate(ukey []byte, seq uint64) error {
	return fmt.Errorf("memtable: add %d-byte key: sequence number %d already present", len(ukey), seq)
}

// Get returns the newest entry of ukey with a sequence number <= seq. value
// aliases the arena and must not be modified; it stays valid as long as the
// table is referenced. ok is false when there is none; a deletion is
// returned as an entry with kind base.KindDelete.
func (t *Table) Get(ukey []byte, seq uint64) (value []byte, kind base.Kind, ok bool) {
	nd := t.get(ukey, seq)
	if nd == 0 {
		return nil, 0, false
	}
	return t.value(nd), base.KindOf(t.trailer(nd)), true
}

// get returns the node Get answers with, or 0.
//
// Why a reader never misses a version it is entitled to: a reader at
// snapshot S sees the versions with seq <= S, and every one of them was
// completely added before the reader began (the engine publishes a sequence
// number only after the whole batch is in the memtable). The index slot of
// the key was set by the first of those Adds and only ever moves to newer
// nodes, each linking to the one it replaced, and out-of-order Adds splice
// into the chain behind a node that is already reachable; so the chain from
// whatever slot the probe loads passes, in trailer order, through every
// version added before the probe.
func (t *Table) get(ukey []byte, seq uint64) uint32 {
	seq = min(seq, base.MaxSeq)
	_, nd := t.indexProbe(t.idx.hash(ukey), ukey)
	for nd != 0 && base.SeqNum(t.trailer(nd)) > seq {
		nd = t.older(nd).Load()
	}
	return nd
}

// catchUp links every published node not yet in the skiplist into it: it
// sorts them (by an 8-byte key prefix, then by internal key) and inserts
// them in that order, each search starting from where the previous one
// ended (a finger search: O(log distance) instead of O(log n) from the
// top, and O(1) per entry when the skiplist was empty).
func (t *Table) catchUp() {
	t.linkMu.Lock()
	defer t.linkMu.Unlock()
	end := t.used.Load()
	run := t.sortedRun(t.run[:0], t.linked.Load(), end)
	clear(t.prev[:]) // the head: before every key
	for _, e := range run {
		t.link(e.nd)
	}
	t.linked.Store(end)
	if cap(run) <= 1<<16 {
		t.run = run[:0]
	} else {
		t.run = nil // do not pin a flush-sized buffer for later small catch-ups
	}
}

// sortedRun appends the nodes in [from, end) to run in internal-key order.
// end must have been loaded from used (it is, by every caller), so that
// the lcp loaded after it covers every node below it.
func (t *Table) sortedRun(run []sortEntry, from, end uint32) []sortEntry {
	lcp := int(t.lcp.Load())
	for nd := from; nd < end; nd += t.nodeSize(nd) {
		run = append(run, t.sortEntry(nd, lcp))
	}
	t.sortRun(run)
	return run
}

// newestRun returns the newest version of each user key in internal-key
// order, or false when some of them is newer than oldest: then a reader at
// oldest needs an older version, which the run leaves out. The index holds
// exactly one node per user key, its newest, so the run is the index's
// nodes sorted. For an immutable table only (the index must not change).
func (t *Table) newestRun(oldest uint64) ([]sortEntry, bool) {
	lcp := int(t.lcp.Load())
	x := &t.idx
	run := make([]sortEntry, 0, x.claimed)
	for i := range x.slots {
		s := x.slots[i].Load()
		if s == 0 {
			continue
		}
		e := t.sortEntry(x.node(s), lcp)
		if base.SeqNum(e.trailer) > oldest {
			return nil, false
		}
		run = append(run, e)
	}
	t.sortRun(run)
	return run, true
}

func (t *Table) sortEntry(nd uint32, lcp int) sortEntry {
	ikey := t.key(nd)
	ukey := ikey[:len(ikey)-base.TrailerLen]
	e := sortEntry{prefix: keyPrefix(ukey, lcp), trailer: base.Trailer(ikey), nd: nd, keyLen: -1}
	if len(ukey)-lcp <= 8 {
		e.keyLen = int32(len(ukey)) // the prefix holds the rest of the key
	}
	return e
}

// sortRun sorts run in internal-key order.
func (t *Table) sortRun(run []sortEntry) {
	slices.SortFunc(run, func(a, b sortEntry) int {
		switch {
		case a.prefix < b.prefix:
			return -1
		case a.prefix > b.prefix:
			return 1
		}
		if a.keyLen >= 0 && b.keyLen >= 0 {
			// Both keys end within the prefix: equal prefixes mean one is
			// the other plus zero bytes, so the shorter sorts first, and
			// versions of one key go newest first.
			switch {
			case a.keyLen != b.keyLen:
				return int(a.keyLen - b.keyLen)
			case a.trailer > b.trailer:
				return -1
			case a.trailer < b.trailer:
				return 1
			}
			return 0
		}
		return base.Compare(t.key(a.nd), t.key(b.nd))
	})
}

// sortEntry is a node to order, with 8 bytes of its user key that follow
// the prefix all keys share and its trailer, so most comparisons of a sort
// never touch the arena.
type sortEntry struct {
	prefix  uint64
	trailer uint64
	nd      uint32
	keyLen  int32 // user key length when the key ends within prefix, else -1
}

// keyPrefix returns the 8 bytes of ukey from offset lcp, big-endian and
// zero-padded, so prefixes compare as the keys' bytes do (a tie, as for
// "ab" and "ab\x00", is settled by the key lengths or whole keys).
func keyPrefix(ukey []byte, lcp int) uint64 {
	var b [8]byte
	if lcp < len(ukey) {
		copy(b[:], ukey[lcp:])
	}
	return binary.BigEndian.Uint64(b[:])
}

// link inserts node nd into the skiplist. t.prev holds, at each level,
// a node before nd's key: the head, or the predecessors of the key linked
// just before, which sorts before nd's. Linker only.
func (t *Table) link(nd uint32) {
	ikey := t.key(nd)
	ukey, trailer := ikey[:len(ikey)-base.TrailerLen], base.Trailer(ikey)
	listHeight := t.height.Load()
	// Climb from level 0 to the lowest level whose successor of prev is
	// past the key: from there up, prev is the predecessor already (each
	// higher level's nodes are a subset), and below it a normal search
	// starting at prev finds the predecessors.
	top := uint32(0)
	for top < listHeight {
		n := t.next0(t.prev[top], top)
		if n == 0 || t.compare(n, ukey, trailer) > 0 {
			break
		}
		top++
	}
	ht := t.u32(nd + 8)
	for i := top; i < ht; i++ {
		t.next[i] = t.next0(t.prev[i], i)
	}
	if top > 0 {
		// The search at level top-1 starts from prev[top-1], which is known
		// to be before the key and at or after prev[top].
		cur := t.prev[top-1]
		for i := int(top) - 1; i >= 0; i-- {
			n := t.next0(cur, uint32(i))
			for n != 0 && t.compare(n, ukey, trailer) < 0 {
				cur, n = n, t.next0(n, uint32(i))
			}
			t.prev[i], t.next[i] = cur, n
		}
	}

	for i := range ht {
		t.linkAt(nd, i).Store(t.next[i])
	}
	// Publish bottom-up: once reachable at level i, the node is reachable at
	// every level below.
	for i := range ht {
		t.linkAt(t.prev[i], i).Store(nd)
		t.prev[i] = nd
	}
	if ht > listHeight {
		t.height.Store(ht)
	}
}

// next0 returns the successor of nd at level i.
func (t *Table) next0(nd, i uint32) uint32 { return t.linkAt(nd, i).Load() }

// seekGE returns the first linked node whose internal key is >= (ukey,
// trailer), or 0.
func (t *Table) seekGE(ukey []byte, trailer uint64) uint32 {
	var prev, next uint32 // head
	var above uint32      // the node that ended the search one level up: known >= key
	for i := int(t.height.Load()) - 1; i >= 0; i-- {
		next = t.linkAt(prev, uint32(i)).Load()
		for next != 0 && next != above && t.compare(next, ukey, trailer) < 0 {
			prev, next = next, t.linkAt(next, uint32(i)).Load()
		}
		above = next
	}
	// Return the level-0 successor seen by the search, not a fresh load: a
	// node linked since then might sort before the search key.
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
// atomic load that found the node; links and the older-version field are
// always accessed atomically.

func (t *Table) u32(off uint32) uint32 {
	return *(*uint32)(unsafe.Pointer(&t.arena[off : off+4][0]))
}

func (t *Table) putU32(off, v uint32) {
	*(*uint32)(unsafe.Pointer(&t.arena[off : off+4][0])) = v
}

func (t *Table) linkAt(nd, level uint32) *atomic.Uint32 {
	off := nd + nodeHeaderLen + 4*level
	return (*atomic.Uint32)(unsafe.Pointer(&t.arena[off : off+4][0]))
}

// older is node nd's link to the next older version of its user key.
func (t *Table) older(nd uint32) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&t.arena[nd+12 : nd+16][0]))
}

// nodeSize returns the arena bytes node nd occupies.
func (t *Table) nodeSize(nd uint32) uint32 {
	return (nodeHeaderLen + 4*t.u32(nd+8) + t.u32(nd) + t.u32(nd+4) + 3) &^ 3
}

// key returns node nd's internal key, capped so that appending to it cannot
// write into the arena.
func (t *Table) key(nd uint32) []byte {
	k := nd + nodeHeaderLen + 4*t.u32(nd+8)
	end := k + t.u32(nd)
	return t.arena[k:end:end]
}

func (t *Table) trailer(nd uint32) uint64 { return base.Trailer(t.key(nd)) }

// value returns node nd's value, capped like key.
func (t *Table) value(nd uint32) []byte {
	v := nd + nodeHeaderLen + 4*t.u32(nd+8) + t.u32(nd)
	end := v + t.u32(nd+4)
	return t.arena[v:end:end]
}

// Prefault backs the index and then the arena with memory (the arena a
// megabyte at a time), without changing their contents. Run on a goroutine of its own
// right after New, it moves the table's page faults off the commit path:
// otherwise every 4 KiB of a fresh arena faults on the write that first
// reaches it (15% of the server's CPU in a pipelined SET run on a fresh
// table, the committer stalled meanwhile), and the hash index's slots,
// reached at random, fault all over it. The cost is that the table's
// whole capacity is resident from the start instead of as it fills. It
// gives up between megabytes once stop is closed (nil: never).
//
// Both are first advised to use transparent huge pages: every write and
// point read probes the index and reaches its node at random, and with 4
// KiB pages each is a TLB miss. Huge pages used to make pipelined SETs
// slower (sessions 2 and 7), when their 2 MiB faults landed on the commit
// path; populated here they do not, and `redis-benchmark -t set,get -P 16`
// (docs/benchmarks.md, session 23) ran 12% more SETs at 10% less server
// CPU, GETs even.
func (t *Table) Prefault(stop <-chan struct{}) {
	index := t.idx.bytes()
	adviseHugePages(index)
	adviseHugePages(t.arena)
	if populate(index) != nil {
		return // not supported here: nothing else will be either
	}
	const chunk = 1 << 20
	for off := 0; off < len(t.arena); off += chunk {
		select {
		case <-stop:
			return
		default:
		}
		_ = populate(t.arena[off:min(off+chunk, len(t.arena))])
	}
}
