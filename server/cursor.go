package server

import "sync"

// cursorTable remembers SCAN positions by number. It holds at most max
// cursors; the oldest are forgotten first, so memory stays bounded however
// many scans clients start and abandon.
type cursorTable struct {
	mu   sync.Mutex
	max  int
	next uint64
	keys map[uint64][]byte
	fifo []uint64
}

func newCursorTable(max int) *cursorTable {
	return &cursorTable{max: max, keys: make(map[uint64][]byte)}
}

func (t *cursorTable) put(key []byte) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	id := t.next
	t.keys[id] = key
	t.fifo = append(t.fifo, id)
	for len(t.fifo) > t.max {
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
