package memtable

import (
	"bytes"
	"hash/maphash"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/kvstore/kv/lsm/internal/base"
)

// index maps each user key in the table to the node holding its newest
// version, so Get costs a hash, one index cache line and the node itself
// (plus a walk down the key's version chain for an older snapshot), and a
// key that is not in the table is known absent without touching any node.
//
// It is an open-addressing table with linear probing, allocated once by New
// next to the arena (one 4-byte slot per arenaBytesPerSlot arena bytes: 1/8
// of the arena). A slot is 0 when empty, else it packs a tag (high hash
// bits) above the node's offset/4, so most probes past other keys are
// settled by the slot alone, without loading those keys' nodes. The hash is
// maphash with a seed of the table's own, so clients cannot choose keys
// that collide.
//
// Invariants, all maintained by the single writer (Add):
//   - A slot only ever goes from empty to a node of some user key, and then
//     only to newer nodes of the same user key, each of which links to the
//     one it replaces. Slots are never emptied, so a run of non-empty slots
//     never gets a hole and a probe for a key present before it began finds
//     the key.
//   - At most limit (70%) of the slots are ever claimed, so every probe path
//     ends at an empty slot; a key that would need more makes Add return
//     ErrFull. The index is therefore complete: every user key in the table
//     is in it.
type index struct {
	slots   []atomic.Uint32
	seed    maphash.Seed
	offBits uint   // low bits of a slot holding node offset / 4
	offMask uint32 // (1<<offBits)-1
	limit   int    // the most slots the writer claims

	claimed int // writer-only
}

const (
	// arenaBytesPerSlot sizes the index: 4 bytes per 32 arena bytes is
	// 12.5% on top of the arena. At the 70% load limit, the arena fills up
	// before the index when entries average 46 arena bytes or more (about
	// 20 bytes of key and value, or fewer distinct keys); a table of
	// smaller entries is rotated when its index is full.
	arenaBytesPerSlot = 32
	// maxLoadPercent bounds the probe length of linear probing: about 2
	// slots for a key that is present and 6 for one that is absent, most
	// within one cache line.
	maxLoadPercent = 70
)

// init sizes an empty index for an arena of arenaLen bytes with the given
// number of slots (at least 2, so at least one can be claimed).
func (x *index) init(arenaLen, slots int) {
	slots = max(slots, 2)
	x.slots = make([]atomic.Uint32, slots)
	x.seed = maphash.MakeSeed()
	// Node offsets are 4-byte aligned and below arenaLen; the bits they
	// leave free carry the tag. Every node sits after the head, so a slot
	// holding a node is never 0.
	x.offBits = uint(max(bits.Len32(uint32(arenaLen-1)>>2), 1))
	x.offMask = uint32(uint64(1)<<x.offBits - 1)
	x.limit = max(slots*maxLoadPercent/100, 1) // < slots: a probe always ends
}

func (x *index) hash(ukey []byte) uint64 { return maphash.Bytes(x.seed, ukey) }

// bytes returns the slots' memory, for madvise and mincore.
func (x *index) bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x.slots))), len(x.slots)*4)
}

// slot packs node nd with the tag of hash h.
func (x *index) slot(h uint64, nd uint32) uint32 { return x.tag(h) | nd>>2 }

// tag returns the tag bits of a slot for hash h (0 when offsets use all 32).
func (x *index) tag(h uint64) uint32 { return uint32(h>>(32+x.offBits)) << x.offBits }

// home returns the first slot to probe for hash h (Lemire's multiply-shift
// range reduction, so the slot count need not be a power of two).
func (x *index) home(h uint64) int { return int(uint64(uint32(h)) * uint64(len(x.slots)) >> 32) }

func (x *index) next(i int) int {
	if i++; i == len(x.slots) {
		return 0
	}
	return i
}

func (x *index) node(s uint32) uint32 { return (s & x.offMask) << 2 }

// TouchSlot loads the index slot an Add or Get of ukey probes first and
// returns it for TouchNode. With TouchNode it lets a caller about to add
// many entries have their cache misses overlap: the slot loads of
// different keys are independent, so the processor issues them in
// parallel, and then the node loads, instead of paying two misses one
// after the other inside each Add. Neither changes anything readers see.
func (t *Table) TouchSlot(ukey []byte) uint32 {
	x := &t.idx
	return x.slots[x.home(x.hash(ukey))].Load()
}

// TouchNode loads the node a slot returned by TouchSlot points to. Like
// Add, only the writer may call it (it keeps the loaded value in a sink
// field, so the compiler cannot drop the load).
func (t *Table) TouchNode(slot uint32) {
	if slot != 0 {
		t.touched += t.u32(t.idx.node(slot))
	}
}

// indexProbe looks ukey (with hash h) up in the index. It returns the slot
// holding the key and its newest node, or, when the key is absent (nd ==
// 0), the empty slot where the probe ended, which is where the writer
// would claim one for it.
func (t *Table) indexProbe(h uint64, ukey []byte) (slot int, nd uint32) {
	x := &t.idx
	tag := x.tag(h)
	for i := x.home(h); ; i = x.next(i) {
		s := x.slots[i].Load()
		if s == 0 {
			return i, 0
		}
		if s&^x.offMask == tag {
			if nd := x.node(s); bytes.Equal(base.UserKey(t.key(nd)), ukey) {
				return i, nd
			}
		}
	}
}
