package lsm

import (
	"slices"
	"sync/atomic"
)

// readState is what a read needs, captured at one instant: the mutable
// memtable, the immutable ones still being flushed, and the current
// version.
//
// Invariants:
//   - The memtables partition the sequence space in order: every entry of
//     imm[i] is older than every entry of imm[i+1], and those older than
//     every entry of mem. A batch is never split across memtables.
//   - A memtable leaves the read state in the same step that installs the
//     version holding its flushed table, so every write is reachable from
//     every read state published after it became visible.
//   - The DB publishes a new read state (atomically) whenever the memtables
//     or the version change; readers never take the DB mutex.
//
// Readers take a reference with acquireReadState and drop it with unref;
// the DB holds one reference on the published state. When the count drops
// to zero the version reference is released (and memtables are left to the
// garbage collector).
type readState struct {
	refs atomic.Int32
	mem  *memTable
	imm  []*memTable // oldest first
	v    *version
}

// tryRef takes a reference unless the state has already been released.
func (s *readState) tryRef() bool {
	for {
		n := s.refs.Load()
		if n <= 0 {
			return false
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (s *readState) unref() {
	switch n := s.refs.Add(-1); {
	case n == 0:
		s.v.unref()
	case n < 0:
		panic("lsm: read state unreferenced too often")
	}
}

// acquireReadState returns the current read state with a reference the
// caller must drop. It never blocks: a state released between the load and
// the reference is simply reloaded, and states are never reused, so the
// retry cannot mistake a new state for an old one.
func (d *DB) acquireReadState() *readState {
	for {
		s := d.readState.Load()
		if s.tryRef() {
			return s
		}
	}
}

// publishReadStateLocked publishes a read state for the current memtables
// and version. d.mu must be held.
func (d *DB) publishReadStateLocked() {
	s := &readState{mem: d.mem, imm: slices.Clone(d.imm), v: d.current}
	s.v.ref()
	s.refs.Store(1)
	if old := d.readState.Swap(s); old != nil {
		old.unref()
	}
}
