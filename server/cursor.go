package server

import "sync"

// cursorTable remembers SCAN positions by number, for every connection
// (a pooled client may continue a scan on another one). It holds at most
// max cursors and maxBytes of their keys; the oldest are forgotten first,
// so memory stays bounded however many scans clients start and abandon.
//
// Continuing a scan forgets the cursor before the one continued: a scan
// in progress holds two cursors (the last, and the one before it, for a
// client that retries a call whose reply it lost), not one per call, so
// it survives however many calls other scans make meanwhile. (Holding one
// per call, a scan was cut off by 64K SCAN calls anywhere, such as a
// --bigkeys run over a million keys.)
type cursorTable struct {
	mu       sync.Mutex
	max      int
	maxBytes int
	bytes    int
	next     uint64
	cursors  map[uint64]cursor
	fifo     []uint64 // ids in issue order; some already forgotten
}

type cursor struct {
	key  []byte
	prev uint64 // the cursor this one continues, 0 for none
}

func newCursorTable(max, maxBytes int) *cursorTable {
	return &cursorTable{max: max, maxBytes: maxBytes, cursors: make(map[uint64]cursor)}
}

// put issues a cursor at key, continuing cursor prev (0 when the scan
// started from 0).
func (t *cursorTable) put(prev uint64, key []byte) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.cursors[prev]; ok && c.prev != 0 {
		t.forget(c.prev)
	}
	t.next++
	id := t.next
	t.cursors[id] = cursor{key: key, prev: prev}
	t.bytes += len(key)
	t.fifo = append(t.fifo, id)
	for len(t.cursors) > 1 && (len(t.cursors) > t.max || t.bytes > t.maxBytes) {
		t.forget(t.fifo[0])
		t.fifo = t.fifo[1:]
		t.dropForgotten()
	}
	if len(t.fifo) > 2*len(t.cursors)+64 {
		// Forgotten ids in the middle: keep the queue proportional to the
		// cursors held.
		live := t.fifo[:0]
		for _, id := range t.fifo {
			if _, ok := t.cursors[id]; ok {
				live = append(live, id)
			}
		}
		clear(t.fifo[len(live):])
		t.fifo = live
	}
	return id
}

// dropForgotten pops forgotten ids off the front of the queue, so its
// front is always the oldest cursor held.
func (t *cursorTable) dropForgotten() {
	for len(t.fifo) > 0 {
		if _, ok := t.cursors[t.fifo[0]]; ok {
			return
		}
		t.fifo = t.fifo[1:]
	}
}

func (t *cursorTable) forget(id uint64) {
	if c, ok := t.cursors[id]; ok {
		t.bytes -= len(c.key)
		delete(t.cursors, id)
	}
}

func (t *cursorTable) get(id uint64) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.cursors[id]
	return c.key, ok
}
