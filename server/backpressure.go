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
// where it stops parsing: half of max_output_bytes, or any while the
// output of all connections is over max_total_output_bytes (overOutputBudget).
func (s *Server) outputBacklogged(cs *conn) bool {
	soft := int(s.cfg.MaxOutputBytes) / 2
	n := len(cs.out) + cs.c.OutboundBuffered()
	return soft > 0 && n > soft || n > 0 && s.overOutputBudget()
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
// drained, closes those whose backlog did not shrink for outputStall,
// brings the output budget up to date (outputHeld), and checks again later
// while any connection of l is parked or holds output. It runs on l.
func (s *Server) checkOutput(l *loop) {
	l.enter()
	defer l.busy.Add(-1)
	l.retire()
	s.recheckOutput(l)
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
	if len(l.outParked) > 0 || len(l.outHeld) > 0 {
		s.scheduleOutputCheck(l)
	}
}

// The output budget. Each connection's unsent replies are bounded
// (max_output_bytes), but not all connections' together: 1000 clients
// pipelining GETs of a 1 MiB value and reading nothing each held up to
// half of max_output_bytes until the 5 s stall closed them, and the
// server peaked at 2.8 GB. max_total_output_bytes bounds the total: past
// it a loop holding more than its share closes its connection holding
// the most, as Redis evicts its biggest clients over maxmemory-clients,
// and again until the total is under the limit or its share is.
//
// A closed connection's output stays in gnet's buffers until gnet runs the
// close, after the rest of the sockets that were ready with it: in that
// load a loop spent seconds on one epoll batch (each connection's first
// burst made 32 MiB of replies), and the closed connections' buffers
// (1.1 GB more than the budget) were freed only then. So a connection
// closed for output stays counted until gnet closes it (dropping: the
// closes to come bring the total down without closing more), and while
// the total is over the limit no connection parses (process) and one that
// leaves output unsent stops (outputBacklogged), parked as if over its own
// soft limit: the batch ends, and with it the wait for the closes. (With
// both, the load above peaked at 1.3 GB RSS with the default 1 GiB budget;
// with the closes alone, at 2.8-3.7 GB.)
//
// A connection's part is what max_output_bytes counts for it: replies
// not yet handed to gnet, gnet's outbound buffer, and replies (and MGET
// values) held until the replies before them leave (waitingBytes). It is
// brought up to date when the loop writes for the connection (flush),
// takes completions for it (deliver), and, since gnet says nothing when a
// client reads and completions of an MGET's reads come from other
// goroutines, every outputCheckEvery while the connection holds any
// (outHeld): the total lags by at most that. A client that reads its
// replies as they come holds nothing between bursts, so the hot path costs
// a comparison per flush and a load of the total per burst.

// outputHeld is cs's part of the server-wide output.
func (s *Server) outputHeld(cs *conn) int {
	return len(cs.out) + cs.c.OutboundBuffered() + s.waitingBytes(cs)
}

// chargeOutput brings cs's part of the server-wide output up to date and,
// when it grew past max_total_output_bytes, enforces the budget on cs's
// loop. It runs on cs's loop.
func (s *Server) chargeOutput(cs *conn) {
	if cs.closed || cs.overClosed {
		return // uncharged already (OnClose, dropOutput)
	}
	n, was := s.outputHeld(cs), cs.outCharged
	if n == was {
		return
	}
	l := cs.loop
	l.outBytes += n - was
	total := recharge(&s.output, &cs.outCharged, n)
	if n > 0 {
		s.watchOutput(cs)
	}
	if limit := int64(s.cfg.MaxTotalOutputBytes); n > was && limit > 0 && total > limit {
		s.enforceOutputBudget(l)
	}
}

// overOutputBudget reports whether the output of all connections, those
// closed and not yet released by gnet included, is over
// max_total_output_bytes.
func (s *Server) overOutputBudget() bool {
	limit := int64(s.cfg.MaxTotalOutputBytes)
	return limit > 0 && s.output.Load() > limit
}

// watchOutput has l's output check bring cs's part up to date until cs
// holds no output and waits for no MGET values.
func (s *Server) watchOutput(cs *conn) {
	if cs.watched {
		return
	}
	cs.watched = true
	l := cs.loop
	if l.outHeld == nil {
		l.outHeld = make(map[*conn]struct{})
	}
	l.outHeld[cs] = struct{}{}
	s.scheduleOutputCheck(l)
}

// recheckOutput brings the parts of l's connections that hold output up
// to date, forgets those that hold none, and enforces the budget, which
// other loops' output may have taken over the limit. It runs on l.
func (s *Server) recheckOutput(l *loop) {
	for cs := range l.outHeld {
		s.chargeOutput(cs)
		if cs.closed || cs.overClosed || cs.outCharged == 0 && cs.multiReads == 0 {
			delete(l.outHeld, cs)
			cs.watched = false
		}
	}
	s.enforceOutputBudget(l)
}

// enforceOutputBudget closes l's connections holding the most output while
// the output of all connections, less what closes already under way will
// release (dropping), is over max_total_output_bytes and l holds more
// than its share of the limit. A loop under its share leaves the closing
// to the loops over theirs (there is one while the total is over the
// limit, and its own check gets to it), so that a loop of small clients
// is not emptied for another loop's big ones. It runs on l.
func (s *Server) enforceOutputBudget(l *loop) {
	limit := int64(s.cfg.MaxTotalOutputBytes)
	if limit <= 0 {
		return
	}
	share := limit / int64(EventLoops(s.cfg))
	for total := s.output.Load(); total-s.outDropping.Load() > limit && int64(l.outBytes-l.outDropping) > share; total = s.output.Load() {
		victim := biggest(l.outHeld, func(c *conn) int { return c.outCharged })
		if victim == nil || victim.outCharged == 0 {
			return
		}
		s.log.Warn("closing the connection holding the most output: server output over max_total_output_bytes",
			"conn", victim.id, "remote", victim.remoteAddr(), "bytes", victim.outCharged, "total", total)
		s.metrics.LimitCloses.WithLabelValues("output_total").Inc()
		s.dropOutput(victim)
	}
}

// unchargeOutput takes cs's part out of the server-wide output, once gnet
// closes it (OnClose). It runs on cs's loop.
func (s *Server) unchargeOutput(cs *conn) {
	if cs.overClosed {
		cs.loop.outDropping -= cs.outCharged
		s.outDropping.Add(-int64(cs.outCharged))
	}
	cs.loop.outBytes -= cs.outCharged
	recharge(&s.output, &cs.outCharged, 0)
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
