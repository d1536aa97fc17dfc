// Package cache is the block cache: decompressed SSTable blocks kept in
// memory, shared by every table of every DB in a process, built on ristretto.
//
// Invariants:
//   - A block is identified by (namespace, file number, block offset). Each DB
//     takes its own namespace from NewID, and a DB never reuses a file number,
//     so an identity names one immutable block for the life of the process;
//     blocks of deleted files are never looked up again and simply age out.
//   - Cached blocks are immutable and never recycled: a reader may keep a slice
//     of a block (for example a value returned by Get) after it is evicted.
//   - The cache is a hint, never a source of truth. ristretto applies Sets
//     asynchronously and may drop or reject them, so a Get right after a Set
//     can miss; callers always fall back to reading the file.
//   - A Get never returns another block's bytes: ristretto keeps only a 64-bit
//     hash of the key, so each entry also stores its full identity, and a Get
//     whose identity does not match (a hash collision) is a miss.
package cache

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
)

// typicalBlockBytes sizes ristretto's admission counters: it wants about ten
// counters per item it will hold, and most blocks are about this large.
const typicalBlockBytes = 4096

// Cache is a byte-bounded cache of immutable blocks, safe for concurrent use.
type Cache struct {
	rc       *ristretto.Cache[uint64, entry]
	capacity int64
	nextID   atomic.Uint64

	hits, misses  atomic.Int64
	sets, dropped atomic.Int64
	collisionMiss atomic.Int64

	// mu is held for reading by every use of rc and for writing by Close:
	// ristretto's Close closes channels that a concurrent Get or Set may
	// still send on (a panic), so a read racing the close of its DB must
	// be kept apart from it here.
	mu     sync.RWMutex
	closed bool
}

// entry is what ristretto stores: the block and the identity that the key
// hash stands for, so that a colliding identity is detected on Get.
type entry struct {
	id, fileNum, offset uint64
	block               []byte
}

// Stats counts cache activity since New. Hits and Misses are counted by
// Cache itself on every Get, so they are exact.
type Stats struct {
	Hits, Misses int64
	// Sets counts blocks handed to ristretto; Dropped counts those it refused
	// at once because its buffer was full (admission may still reject the
	// others later).
	Sets, Dropped int64
	// Collisions counts Gets that found a different block under the same
	// 64-bit key hash (expected to stay zero; they are also counted in Misses).
	Collisions int64
	// Bytes is the cost currently held, Capacity the configured maximum.
	Bytes, Capacity int64
}

// New returns a cache holding at most about capacityBytes of blocks (plus
// ristretto's per-item overhead, which it counts against the same budget).
func New(capacityBytes int64) (*Cache, error) {
	if capacityBytes <= 0 {
		return nil, fmt.Errorf("new block cache: capacity %d must be positive", capacityBytes)
	}
	counters := 10 * (capacityBytes/typicalBlockBytes + 1)
	counters = max(counters, 1000)
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, entry]{
		NumCounters: counters,
		MaxCost:     capacityBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("new block cache: %w", err)
	}
	return &Cache{rc: rc, capacity: capacityBytes}, nil
}

// NewID returns a namespace no other caller of this Cache receives. Each DB
// sharing the cache uses its own, so equal file numbers of different DBs
// never meet.
func (c *Cache) NewID() uint64 {
	return c.nextID.Add(1)
}

// key hashes an identity to ristretto's 64-bit key. It need not be unique:
// entries carry their identity and Get checks it.
func key(id, fileNum, offset uint64) uint64 {
	var b [24]byte
	binary.LittleEndian.PutUint64(b[0:], id)
	binary.LittleEndian.PutUint64(b[8:], fileNum)
	binary.LittleEndian.PutUint64(b[16:], offset)
	return xxhash.Sum64(b[:])
}

// Get returns the block cached for (id, fileNum, offset) and counts a hit
// or a miss. The caller must not modify the block.
func (c *Cache) Get(id, fileNum, offset uint64) ([]byte, bool) {
	b, ok := c.Lookup(id, fileNum, offset)
	c.Count(ok)
	return b, ok
}

// Lookup is Get without counting, for a caller that counts the lookup
// itself once it knows whether it stands: a read that finds the block
// missing but may not wait for the disk is retried, and only the retry
// counts (see Count).
func (c *Cache) Lookup(id, fileNum, offset uint64) ([]byte, bool) {
	c.mu.RLock()
	var e entry
	var ok bool
	if !c.closed {
		e, ok = c.rc.Get(key(id, fileNum, offset))
	}
	c.mu.RUnlock()
	if ok && (e.id != id || e.fileNum != fileNum || e.offset != offset) {
		c.collisionMiss.Add(1)
		ok = false
	}
	if !ok {
		return nil, false
	}
	return e.block, true
}

// Count records one lookup as a hit or a miss in Stats.
func (c *Cache) Count(hit bool) {
	if hit {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
}

// Set offers block to the cache under (id, fileNum, offset) at a cost of
// len(block) bytes. The cache keeps block itself, so the caller must never
// modify it afterwards. Set may be dropped: never rely on a later Get.
func (c *Cache) Set(id, fileNum, offset uint64, block []byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return
	}
	e := entry{id: id, fileNum: fileNum, offset: offset, block: block}
	if c.rc.Set(key(id, fileNum, offset), e, int64(len(block))) {
		c.sets.Add(1)
	} else {
		c.dropped.Add(1)
	}
}

// Stats returns the counters and current size.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits:       c.hits.Load(),
		Misses:     c.misses.Load(),
		Sets:       c.sets.Load(),
		Dropped:    c.dropped.Load(),
		Collisions: c.collisionMiss.Load(),
		Capacity:   c.capacity,
	}
	c.mu.RLock()
	if !c.closed {
		s.Bytes = c.capacity - c.rc.RemainingCost()
	}
	c.mu.RUnlock()
	return s
}

// Wait blocks until every Set made before it has been applied or rejected.
// Tests use it to make a Set observable.
func (c *Cache) Wait() {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.closed {
		c.rc.Wait()
	}
}

// Close stops ristretto's goroutines and drops every block. Afterwards Get
// misses, Set does nothing and Wait returns at once. It may run
// concurrently with the other methods: it waits for those in progress.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.rc.Close()
}
