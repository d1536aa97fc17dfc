package lsm

import (
	"github.com/kvstore/kv/lsm/internal/base"
)

// mergingIter merges sorted internal iterators into one sorted stream with
// a binary min-heap of the positioned children. Entries are not
// deduplicated: every version from every child appears, in base.Compare
// order (newest version of a key first).
type mergingIter struct {
	iters []base.Iterator
	heap  []int // indices of valid children; heap[0] has the smallest key
	err   error
}

func newMergingIter(iters []base.Iterator) *mergingIter {
	return &mergingIter{iters: iters, heap: make([]int, 0, len(iters))}
}

func (m *mergingIter) less(i, j int) bool {
	return base.Compare(m.iters[m.heap[i]].Key(), m.iters[m.heap[j]].Key()) < 0
}

func (m *mergingIter) down(i int) {
	n := len(m.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		j := l
		if r := l + 1; r < n && m.less(r, l) {
			j = r
		}
		if !m.less(j, i) {
			return
		}
		m.heap[i], m.heap[j] = m.heap[j], m.heap[i]
		i = j
	}
}

// rebuild collects the valid children into the heap after every child was
// repositioned.
func (m *mergingIter) rebuild() {
	m.err = nil
	m.heap = m.heap[:0]
	for i, it := range m.iters {
		if it.Valid() {
			m.heap = append(m.heap, i)
		} else if err := it.Err(); err != nil && m.err == nil {
			m.err = err
		}
	}
	for i := len(m.heap)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
}

func (m *mergingIter) SeekGE(ikey []byte) {
	for _, it := range m.iters {
		it.SeekGE(ikey)
	}
	m.rebuild()
}

func (m *mergingIter) First() {
	for _, it := range m.iters {
		it.First()
	}
	m.rebuild()
}

func (m *mergingIter) Next() {
	if len(m.heap) == 0 || m.err != nil {
		return
	}
	it := m.iters[m.heap[0]]
	it.Next()
	if it.Valid() {
		m.down(0)
		return
	}
	if err := it.Err(); err != nil {
		m.err = err
		return
	}
	last := len(m.heap) - 1
	m.heap[0] = m.heap[last]
	m.heap = m.heap[:last]
	m.down(0)
}

func (m *mergingIter) Valid() bool { return m.err == nil && len(m.heap) > 0 }

func (m *mergingIter) Key() []byte { return m.iters[m.heap[0]].Key() }

func (m *mergingIter) Value() []byte { return m.iters[m.heap[0]].Value() }

func (m *mergingIter) Err() error { return m.err }

func (m *mergingIter) Close() error {
	err := m.err
	for _, it := range m.iters {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}
	m.iters = nil
	m.heap = nil
	return err
}

// levelIter concatenates the tables of one sorted level (or a sorted run of
// compaction inputs), opening each table only when reached.
type levelIter struct {
	tc    *tableCache
	files []*fileMetadata
	idx   int
	iter  base.Iterator
	err   error
	// compaction opens each table with NewCompactionIter (no block cache);
	// nowait with NewIterNoWait, and fails with ErrWouldBlock at a table
	// not open yet.
	compaction bool
	nowait     bool
}

func newLevelIter(tc *tableCache, files []*fileMetadata, nowait bool) *levelIter {
	return &levelIter{tc: tc, files: files, nowait: nowait}
}

// newCompactionLevelIter is newLevelIter for a compaction's inputs.
func newCompactionLevelIter(tc *tableCache, files []*fileMetadata) *levelIter {
	return &levelIter{tc: tc, files: files, compaction: true}
}

// open makes file i current (unpositioned), or none past the end.
func (l *levelIter) open(i int) bool {
	if l.iter != nil {
		if err := l.iter.Close(); err != nil && l.err == nil {
			l.err = err
		}
		l.iter = nil
	}
	l.idx = i
	if i >= len(l.files) || l.err != nil {
		return false
	}
	reader := l.tc.reader
	if l.nowait {
		reader = l.tc.readerNoWait
	}
	r, err := reader(l.files[i])
	if err != nil {
		l.err = err
		return false
	}
	switch {
	case l.compaction:
		l.iter = r.NewCompactionIter()
	case l.nowait:
		l.iter = r.NewIterNoWait()
	default:
		l.iter = r.NewIter()
	}
	return true
}

// skipEmpty moves to the next tables while the current one is exhausted.
func (l *levelIter) skipEmpty() {
	for l.iter != nil && !l.iter.Valid() {
		if err := l.iter.Err(); err != nil {
			l.err = err
			return
		}
		if !l.open(l.idx + 1) {
			return
		}
		l.iter.First()
	}
}

func (l *levelIter) SeekGE(ikey []byte) {
	l.err = nil
	// The first table whose largest key is >= ikey.
	lo, hi := 0, len(l.files)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if base.Compare(l.files[m].largest, ikey) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if l.open(lo) {
		l.iter.SeekGE(ikey)
		l.skipEmpty()
	}
}

func (l *levelIter) First() {
	l.err = nil
	if l.open(0) {
		l.iter.First()
		l.skipEmpty()
	}
}

func (l *levelIter) Next() {
	if l.iter == nil || l.err != nil {
		return
	}
	l.iter.Next()
	l.skipEmpty()
}

func (l *levelIter) Valid() bool { return l.err == nil && l.iter != nil && l.iter.Valid() }

func (l *levelIter) Key() []byte { return l.iter.Key() }

func (l *levelIter) Value() []byte { return l.iter.Value() }

func (l *levelIter) Err() error { return l.err }

func (l *levelIter) Close() error {
	if l.iter != nil {
		if err := l.iter.Close(); err != nil && l.err == nil {
			l.err = err
		}
		l.iter = nil
	}
	return l.err
}
