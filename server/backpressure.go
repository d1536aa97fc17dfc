package server

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Output back-pressure. A client that pipelines many requests for big
// values and reads its replies as they come (redis-benchmark -d 262144
// -P 300 wants 75 MiB in flight) must not be treated as one that never
// reads: once its unsent replies pass half of max_output_bytes, its loop
// stops parsing its requests (they wait in gnet's input buffer) until the
// client has read the backlog down to a quarter; only a backlog that does
// not shrink for outputStall closes it, as max_output_bytes closes one
// that grows past the limit. gnet calls nothing when a socket drains, so a
// loop with such connections checks them every outputCheckEvery.
const (
	outputCheckEvery = time.Millisecond
	outputStall      = 5 * time.Second
)

// flushIfBig hands cs's output to gnet once it holds flushOutBytes: gnet's
// buffer holds exactly what is written, where one reply buffer for a long
// burst of large values grows by doubling (a client reading none of 100k
// 1 MiB GETs peaked at 320 MB RSS). It parks cs, and reports so, when the
// client has fallen behind (flush itself enforces max_output_bytes).
func (s *Server) flushIfBig(cs *conn) (parked bool) {
	if len(cs.out) < flushOutBytes {
		return false
	}
	s.flush(cs)
	if cs.closing || cs.closed || !s.outputBacklogged(cs) {
		return false
	}
	s.parkForOutput(cs)
	return true
}

// outputBacklogged reports whether cs's unsent replies passed the point
// where it stops parsing.
func (s *Server) outputBacklogged(cs *conn) bool {
	soft := int(s.cfg.MaxOutputBytes) / 2
	return soft > 0 && len(cs.out)+cs.c.OutboundBuffered() > soft
}

// parkForOutput stops parsing cs until its backlog drains (checkOutput).
func (s *Server) parkForOutput(cs *conn) {
	s.flush(cs)
	if cs.closing || cs.closed {
		return
	}
	cs.withdraw()
	cs.parked, cs.outParked = true, true
	cs.outLow, cs.outSince = cs.c.OutboundBuffered(), time.Now().UnixNano()
	l := cs.loop
	if l.outParked == nil {
		l.outParked = make(map[*conn]struct{})
	}
	l.outParked[cs] = struct{}{}
	s.scheduleOutputCheck(l)
}

func (s *Server) scheduleOutputCheck(l *loop) {
	scheduleCheck(l, &l.outCheck, s.checkOutput)
}

// scheduleCheck runs check on l in outputCheckEvery unless one is already
// scheduled (*pending, loop-owned).
func scheduleCheck(l *loop, pending *bool, check func(*loop)) {
	if *pending {
		return
	}
	*pending = true
	time.AfterFunc(outputCheckEvery, func() {
		if err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			*pending = false
			check(l)
			return nil
		})); err != nil {
			return // the engine stopped
		}
	})
}

// checkOutput resumes the connections of l parked for output whose backlog
// drained, closes those whose backlog did not shrink for outputStall, and
// checks again later while any stays parked. It runs on l.
func (s *Server) checkOutput(l *loop) {
	l.enter()
	defer l.busy.Add(-1)
	l.retire()
	now := time.Now().UnixNano()
	low := int(s.cfg.MaxOutputBytes) / 4
	for cs := range l.outParked {
		if cs.closed || cs.closing {
			delete(l.outParked, cs)
			continue
		}
		backlog := len(cs.out) + cs.c.OutboundBuffered()
		switch {
		case backlog <= low:
			delete(l.outParked, cs)
			cs.outParked = false
			s.advance(cs) // replies left queued when it parked; may park again
		case backlog < cs.outLow:
			cs.outLow, cs.outSince = backlog, now
		case now-cs.outSince > int64(outputStall):
			delete(l.outParked, cs)
			s.closeOverOutput(cs)
		}
	}
	if len(l.outParked) > 0 {
		s.scheduleOutputCheck(l)
	}
}

// The write budget. Each connection's writes waiting for the store are
// bounded (maxPendingWriteBytes), but not all connections' together: when
// the engine stalls (level 0 full, memtables waiting for flush) every
// connection queued up to 64 MiB, and 200 connections pipelining 1 MiB
// SETs held 6.3 GB of a node with a 512 MiB engine budget. Writes handed
// to the store and not yet acknowledged are bounded by max_input_bytes,
// all connections together, as their unparsed requests are: past it a
// connection about to hand over a write parks (its requests wait unparsed,
// within max_input_bytes) until the store has caught up. Over the budget
// by at most one burst per event loop (a write group, or a request of
// max_frame_bytes).

// overWriteBudget reports whether the writes waiting for the store, all
// connections together, have reached max_input_bytes.
func (s *Server) overWriteBudget() bool {
	limit := int64(s.cfg.MaxInputBytes)
	return limit > 0 && s.writing.Load() >= limit
}

// parkForWrites stops parsing cs until the writes waiting for the store
// are back under budget (checkWrites): nothing of cs's own may be pending
// to resume it.
func (s *Server) parkForWrites(cs *conn) {
	cs.withdraw()
	cs.parked = true
	l := cs.loop
	if l.writeParked == nil {
		l.writeParked = make(map[*conn]struct{})
	}
	l.writeParked[cs] = struct{}{}
	s.scheduleWriteCheck(l)
}

func (s *Server) scheduleWriteCheck(l *loop) {
	scheduleCheck(l, &l.writeCheck, s.checkWrites)
}

// checkWrites resumes the connections of l parked for the write budget
// once it has room again, and checks again later while any stays parked.
// A connection also parked for a reason of its own is left to its own
// replies to resume (advance). It runs on l.
func (s *Server) checkWrites(l *loop) {
	l.enter()
	defer l.busy.Add(-1)
	l.retire()
	for cs := range l.writeParked {
		switch {
		case cs.closed || cs.closing || !cs.parked:
			delete(l.writeParked, cs)
		case s.overWriteBudget():
			// Still waiting.
		default:
			delete(l.writeParked, cs)
			if !s.canResume(cs) {
				continue
			}
			cs.parked = false
			if s.process(cs) == gnet.Close {
				_ = cs.c.Close()
			}
		}
	}
	if len(l.writeParked) > 0 {
		s.scheduleWriteCheck(l)
	}
}
