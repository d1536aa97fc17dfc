package memtable

import (
	"bytes"
	"hash/maphash"
	"math/bits"
	"sync/atomic"

	"github.com/kvstore/kv/lsm/internal/base"
)

// index maps each user key to the node holding its newest version, so that
// Get usually costs a hash, one index cache line and the node itself,
// instead of a skiplist walk of one cache miss per level, and a key that is
// not in the table is usually known absent without touching the skiplist.
//
// It is an open-addressing table with linear probing, allocated once by New
// next to the arena (one 4-byte slot per arenaBytesPerSlot arena bytes: 1/16
// of the arena). A slot is 0 when empty, else it packs a tag (high hash
// bits) above the node's offset/4, so most probes past other keys are
// settled by the slot alone, without loading those keys' nodes. The hash is
// maphash with a seed of the table's own, so clients cannot choose keys
// that collide.
//
// Invariants, all maintained by the single writer (Add):
//   - A slot only ever goes from empty to a node of some user key, and then
//     only to nodes of the same user key with larger trailers. Slots are
//     never emptied. So a reader sees every slot's history as monotonic,
//     and a run of non-empty slots never gets a hole.
//   - A node enters the index only after it is linked into the skiplist at
//     every level, so whatever the index shows, the skiplist has too.
//   - Once an Add returns, its user key is either in a slot on the probe
//     path from the key's home slot (every slot between being non-empty),
//     holding a node with a trailer >= the added one, or overflow is set.
//     At most limit (70%) of the slots are ever claimed, so every probe path
//     ends at an empty slot; when a new key would need more, overflow is set
//     and the key is left to the skiplist (keys already in the index keep
//     being updated).
//
// Why a reader never misses a version it is entitled to. A reader at
// snapshot S sees the versions with seq <= S, and every one of them was
// completely added before the reader began: the engine publishes a
// sequence number only after the whole batch is in the memtable, and never
// adds a version at or below a published one. So each such Add happens
// before the reader's atomic loads. Let V be the newest version with seq <= S.
//   - The probe ends at an empty slot. Had V's Add claimed or found a slot,
//     that slot and all slots before it on the path were non-empty before
//     the reader began and stay so, and the probe would have reached it
//     instead. So V's Add set overflow, which the reader then sees, and it
//     falls back to the skiplist. Without overflow there is no V, and "not
//     found" is right without a skiplist walk.
//   - The probe finds node N, whose trailer is >= V's (slots only grow).
//     If N's seq <= S, N was completely added too, so N is V: the version
//     with the largest trailer <= (S, KindMax), which is exactly what the
//     skiplist seek returns. If N's seq > S, the reader reads at a snapshot
//     older than the newest version (or N is a newer version still being
//     added), and the skiplist seek answers, exactly as without the index.
//   - The index lags the skiplist: the writer has linked a newer node W but
//     not yet indexed it. W's Add has not returned, so W's seq is > S and
//     the older node the index shows is still the right answer.
//
// Out-of-order Adds (tests, replay) keep the invariant because an update is
// made only when the new trailer is larger than the indexed one.
type index struct {
	slots   []atomic.Uint32
	seed    maphash.Seed
	offBits uint   // low bits of a slot holding node offset / 4
	offMask uint32 // (1<<offBits)-1
	limit   int    // the most slots the writer claims

	claimed  int         // writer-only
	overflow atomic.Bool // a key was left out of the index
}

const (
	// arenaBytesPerSlot sizes the index: 4 bytes per 64 arena bytes is
	// 6.25% on top of the arena. At the 70% load limit, a full table is
	// completely indexed when its entries average 91 arena bytes or more
	// (about 65 bytes of key and value, or fewer distinct keys); with
	// smaller entries the index overflows late in the table's life and only
	// keys first added after that, and misses, go to the skiplist.
	arenaBytesPerSlot = 64
	// maxLoadPercent bounds the probe length of linear probing: about 2
	// slots for a key that is present and 6 for one that is absent, most
	// within one cache line.
	maxLoadPercent = 70
)

// init sizes an empty index for an arena of arenaLen bytes with the given
// number of slots (at least 1).
func (x *index) init(arenaLen, slots int) {
	slots = max(slots, 1)
	x.slots = make([]atomic.Uint32, slots)
	x.seed = maphash.MakeSeed()
	// Node offsets are 4-byte aligned and below arenaLen; the bits they
	// leave free carry the tag. Every node sits after the head, so a slot
	// holding a node is never 0.
	x.offBits = uint(max(bits.Len32(uint32(arenaLen-1)>>2), 1))
	x.offMask = uint32(uint64(1)<<x.offBits - 1)
	x.limit = slots * maxLoadPercent / 100 // < slots: a probe always ends
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

// indexAdd records node nd, holding (ukey, trailer), after it is linked
// into the skiplist. Writer only.
func (t *Table) indexAdd(ukey []byte, trailer uint64, nd uint32) {
	x := &t.idx
	h := maphash.Bytes(x.seed, ukey)
	tag := x.tag(h)
	for i := x.home(h); ; i = x.next(i) {
		s := x.slots[i].Load()
		if s == 0 {
			if x.claimed >= x.limit {
				x.overflow.Store(true)
				return
			}
			x.claimed++
			x.slots[i].Store(x.slot(h, nd))
			return
		}
		if s&^x.offMask != tag {
			continue
		}
		ikey := t.key(x.node(s))
		if bytes.Equal(base.UserKey(ikey), ukey) {
			if trailer > base.Trailer(ikey) {
				x.slots[i].Store(x.slot(h, nd))
			}
			return
		}
	}
}

// indexFind returns the indexed node of ukey: the one with the largest
// trailer. When it returns 0, known says whether ukey is certainly absent
// (as of what the writer had finished adding when the probe began) or
// the index cannot tell because it overflowed.
func (t *Table) indexFind(ukey []byte) (nd uint32, known bool) {
	x := &t.idx
	h := maphash.Bytes(x.seed, ukey)
	tag := x.tag(h)
	for i := x.home(h); ; i = x.next(i) {
		s := x.slots[i].Load()
		if s == 0 {
			return 0, !x.overflow.Load()
		}
		if s&^x.offMask == tag {
			if nd := x.node(s); bytes.Equal(base.UserKey(t.key(nd)), ukey) {
				return nd, true
			}
		}
	}
}
