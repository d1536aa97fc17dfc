package server

import (
	"bytes"
	"sync/atomic"
	"time"

	"github.com/kvstore/kv/lsm"
)

// Bounds of a coalesced write group: enough to cover a pipelined burst,
// small enough that one group never holds up a commit for long.
const (
	maxGroupOps   = 256
	maxGroupBytes = 1 << 20
)

// writeGroup is a connection's open write group: the single-key writes
// (PUT, SET, the pipe's DELETE) of one burst, which share one batch and one
// store write. Each run of consecutive writes of one command is one member:
// one slot in the reply queue answering all of them (n replies), so a
// pipeline of SETs costs one queue entry, and a GET between writes gets its
// own slot between two members.
type writeGroup struct {
	batch   *lsm.Batch
	members []*pending
	state   atomic.Uint32
}

// writeOne runs a single-key write whose reply is ok, as a member of the
// connection's open write group. The group is submitted before any command
// other than these writes and GET (dispatch), and at the end of the burst
// (process), so the store sees every write in request order and a group
// never waits for more input.
//
// A GET between members waits in the reply queue behind the writes before
// it (as behind any pending write) and runs once it reaches the front; by
// then the whole group is durable, members after the GET included. That is
// safe because a write is admitted while reads are pending only if none of
// them reads its key (admit): the GET cannot observe a later member.
func (s *Server) writeOne(cs *conn, cmd int, key, value []byte, del bool, start int64, ok []byte) {
	if g := cs.open; g != nil && (len(g.members) >= maxGroupOps || g.batch.Size() >= maxGroupBytes) {
		s.submitOpen(cs)
	}
	g := cs.open
	if g == nil {
		g = cs.spare
		cs.spare = nil
		if g == nil {
			g, _ = s.groups.Get().(*writeGroup)
		}
		if g == nil {
			g = &writeGroup{batch: lsm.NewBatch()}
			// Room for a few more writes like this one, but a group is cut
			// at maxGroupBytes: eight times a 30 MiB SET reserved 240 MiB.
			// A write that reaches it alone is the group's last: room for
			// maxGroupBytes more doubled what pipelined 1 MiB SETs held
			// waiting for a stalled engine.
			n := lsm.PutSize(len(key), len(value))
			room := min(8*n, n+maxGroupBytes)
			if n >= maxGroupBytes {
				room = n
			}
			g.batch.Grow(room)
		}
		cs.open = g
	}
	if n := len(g.members); n == 0 || g.members[n-1] != cs.q.back() || g.members[n-1].cmd != cmd {
		p := s.newPending(cs, classWrite, cmd, start)
		p.ok = ok
		cs.push(p)
		cs.count(classWrite, 1)
		g.members = append(g.members, p)
	}
	m := g.members[len(g.members)-1]
	m.n++
	m.bytes += int64(len(key) + len(value))
	cs.writeBytes += int64(len(key) + len(value))
	if del {
		g.batch.Delete(key)
	} else {
		g.batch.Put(key, value)
	}
}

// submitOpen hands cs's open write group, if any, to the store. As with
// finish and settle, whichever of the completion and the return from
// Write comes second decides: an inline completion is drained into cs.out
// right here (and submitOpen reports true), an async one reaches the loop
// through its mailbox.
func (s *Server) submitOpen(cs *conn) (inline bool) {
	g := cs.open
	if g == nil {
		return false
	}
	cs.open = nil
	if len(g.members) == 1 {
		cs.offerDirect(g.members[0])
	}
	// Counted before the completion can be seen (tryDirect uncounts it).
	s.inflight.Add(int64(len(g.members)))
	size := int64(g.batch.Size())
	s.writing.Add(size)
	s.store.Write(g.batch, func(err error) {
		s.writing.Add(-size)
		for _, p := range g.members {
			switch {
			case err != nil:
				p.reply = s.appendErrs(cs, nil, p.n, s.metrics.opNames[p.cmd], causeStore, err.Error())
			case p.n > 1:
				p.reply = bytes.Repeat(p.ok, p.n)
			default:
				p.reply = p.ok
			}
		}
		if g.state.CompareAndSwap(stateRunning, stateInline) {
			return
		}
		if len(g.members) == 1 && s.tryDirect(g.members[0]) {
			// Nothing refers to g any more: the loop is past
			// submitOpen (its state is stateAsync) and never saw the
			// group again. Unpipelined durable writes, nearly all
			// answered here, allocated a group and its batch each.
			if g.reset() {
				s.groups.Put(g)
			}
			return
		}
		// The store is done with the batch once it calls back.
		g.members[len(g.members)-1].group = g
		cs.loop.post(g.members...)
	})
	if g.state.CompareAndSwap(stateRunning, stateAsync) {
		return false
	}
	s.inflight.Add(-int64(len(g.members)))
	cs.withdraw()
	now := time.Now().UnixNano()
	for _, p := range g.members {
		p.done = true
		s.observeAt(p, now)
	}
	s.drain(cs)
	cs.reuse(g)
	return true
}

// maxRetainedBatch is the largest batch buffer a connection keeps for its
// next write group: a pipelined burst of small writes fits, and 10,000
// idle connections hold at most 160 MiB of them.
const maxRetainedBatch = 16 << 10

// reuse keeps the finished group g for cs's next write group: a fresh
// batch per burst was a quarter of the page faults of a pipelined SET load
// (new heap memory for each, until the next GC) and most of its garbage.
// No one uses g any more: the store has called back, and is done with the
// batch then (store.Store.Write); the completion itself may still be
// returning from post, which does not touch what it was given once it
// returns; and the loop is past submitOpen. An inline commit's group is
// reused at once, an asynchronous one's when its completion reaches the
// loop (deliver); one answered by tryDirect goes to Server.groups.
// Runs on cs's loop.
func (cs *conn) reuse(g *writeGroup) {
	if g.reset() {
		cs.spare = g
	}
}

// reset empties the finished group g for another burst and reports
// whether it is worth keeping: a batch grown past maxRetainedBatch is left
// to the collector.
func (g *writeGroup) reset() bool {
	if cap(g.batch.Repr()) > maxRetainedBatch {
		return false
	}
	g.batch.Reset()
	clear(g.members)
	g.members = g.members[:0]
	g.state.Store(stateRunning)
	return true
}
