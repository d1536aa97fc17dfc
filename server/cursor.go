package server

import "sync"

// cursorTable remembers SCAN positions by number, for every connection
// (a pooled client may continue a scan on another one). It holds at most
// max cursors and maxBytes of their keys; the oldest are forgotten first,
// so memory stays bounded however many scans clients start and abandon,
// and a scan in progress survives many others.
type cursorTable struct {
	mu       sync.Mutex
	max      int
	maxBytes int
	bytes    int
	next     uint64
	keys     map[uint64][]byte
	fifo     []uint64
}

func newCursorTable(max, maxBytes int) *cursorTable {
	return &cursorTable{max: max, maxBytes: maxBytes, keys: make(map[uint64][]byte)}
}

func (t *cursorTable) put(key []byte) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	id := t.next
	t.keys[id] = key
	t.bytes += len(key)
	t.fifo = append(t.fifo, id)
	for len(t.fifo) > 1 && (len(t.fifo) > t.max || t.bytes > t.maxBytes) {
		t.bytes -= len(t.keys[t.fifo[0]])
		delete(t.keys, t.fifo[0])
		t.fifo = t.fifo[1:]
	}
	return id
}

func (t *cursorTable) get(id uint64) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := t.keys[id]
	return k, ok
}
