package server

import (
	"bytes"
	"errors"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/kvstore/kv/codec"
)

// Ordering classes of commands (see the package comment).
const (
	classNone    = iota // answered on the spot; orders behind everything queued
	classRead           // reads the store
	classWrite          // writes the store
	classBarrier        // runs alone: after everything before it, before everything after it
)

// process parses and dispatches every whole request in cs's input buffer,
// then writes the replies produced in one call. It runs on cs's loop, from
// OnTraffic or from a mailbox delivery that un-parks cs.
func (s *Server) process(cs *conn) gnet.Action {
	if !cs.parked && !cs.closing && s.overOutputBudget() {
		// No new replies while the output of all connections is over
		// budget: the checks resume cs once closes have brought it down.
		s.parkForOutput(cs)
		cs.loop.retire()
		return gnet.None
	}
	s.parseAll(cs)
	// A write group that completed inline may be what parked the
	// connection; no delivery will come to resume it, so resume here.
	for s.submitOpen(cs) && cs.parked && !cs.closing && !cs.closed && s.canResume(cs) {
		cs.parked = false
		s.parseAll(cs)
	}
	s.startHeld(cs)
	if cs.inplaceGets > 0 {
		cs.loop.stats.observeN(s.cmdGet, time.Now().UnixNano()-cs.last, cs.inplaceGets)
		cs.inplaceGets = 0
	}
	s.flush(cs)
	if !cs.parked && !cs.closing && !cs.closed && s.outputBacklogged(cs) {
		s.parkForOutput(cs)
	}
	// An offer withdrawn while this ran may have been used already: its
	// request waits in the mail with replies queued behind it.
	cs.loop.retire()
	return gnet.None
}

// parseAll parses and dispatches requests until the input runs out or the
// connection parks or closes.
func (s *Server) parseAll(cs *conn) {
	c := cs.c
	if cs.closing {
		// Nothing more will be parsed: drop what arrives while the
		// replies still owed drain, or while the close lingers.
		if n := cs.dropInput(); cs.lingering {
			cs.lingerDropped += n
		}
		return
	}
	for !cs.parked && !cs.closing && !cs.closed {
		if len(cs.partial) > 0 {
			if !s.parsePartial(cs) {
				break
			}
			continue
		}
		n := c.InboundBuffered()
		if n == 0 {
			break
		}
		if cs.proto == protoUnknown {
			first, err := c.Peek(1)
			if err != nil {
				break
			}
			s.choose(cs, first[0])
		}
		if n < cs.need() {
			break // a partial frame: wait for the bytes it needs
		}
		buf, err := c.Peek(n)
		if err != nil {
			break
		}
		used, more := s.parse(cs, buf)
		if used > 0 {
			// Discard(0) would drop everything buffered.
			cs.loop.stats.bytesIn.Add(uint64(used))
			_, _ = c.Discard(used)
		}
		if !more {
			s.keepPartial(cs)
			break
		}
	}
	// The arguments of the requests just run alias the input, which must
	// not stay reachable while the connection waits for more.
	cs.releaseDecoder()
	if !cs.closing && !cs.closed {
		if limit := 2 * int(s.cfg.MaxFrameBytes); limit > 0 && cs.inputBuffered() > limit {
			s.log.Warn("closing connection over the input buffer limit", "conn", cs.id, "remote", cs.remoteAddr(), "buffered", cs.inputBuffered())
			s.metrics.LimitCloses.WithLabelValues("input").Inc()
			// Behind the replies still owed, like any other reply.
			s.emit(cs, s.appendErr(cs, nil, "", causeLimit, "request too large"))
			cs.closing = true
			cs.dropInput()
		}
	}
	s.chargeInput(cs)
}

// chargeInput brings cs's part of the server-wide unparsed input up to
// date and enforces max_input_bytes: 40 clients each sending a 31 MiB
// request slowly held 1.7 GiB, each within its own limit. Over the budget
// the loop closes its connection holding the most, as Redis evicts its
// biggest clients over maxmemory-clients; only a loop where input grew
// gets here, and the connection that grew it is one of its candidates.
func (s *Server) chargeInput(cs *conn) {
	n, was := cs.inputBuffered(), cs.inCharged
	if n == was {
		return
	}
	total := recharge(&s.input, &cs.inCharged, n)
	if n < was || s.cfg.MaxInputBytes <= 0 || total <= int64(s.cfg.MaxInputBytes) {
		return
	}
	victim := biggest(cs.loop.conns, func(c *conn) int { return c.inCharged })
	if victim == nil || victim.inCharged < partialBytes {
		return // nothing worth closing here; the input is on other loops
	}
	s.log.Warn("closing the connection holding the most input: server input over max_input_bytes", "conn", victim.id, "remote", victim.remoteAddr(), "buffered", victim.inCharged, "total", total)
	s.metrics.LimitCloses.WithLabelValues("input_total").Inc()
	s.emit(victim, s.appendErr(victim, nil, "", causeLimit, "server input buffers full (max_input_bytes)"))
	victim.closing = true
	victim.dropInput()
	s.uncharge(victim)
	if victim != cs {
		s.flush(victim)
	}
}

// uncharge takes cs's part out of the server-wide input.
func (s *Server) uncharge(cs *conn) {
	recharge(&s.input, &cs.inCharged, 0)
}

// recharge sets a connection's part (*part, loop-owned) of a server-wide
// total to n and returns the new total: the budgets over all connections
// (max_input_bytes, max_total_output_bytes) cost one atomic add when a
// connection's part changes, nothing when it does not.
func recharge(total *atomic.Int64, part *int, n int) int64 {
	t := total.Add(int64(n - *part))
	*part = n
	return t
}

// biggest returns the connection of set, not already closing, holding the
// most by held (its part of a budget), or nil: the one a budget over its
// limit closes, as Redis evicts its biggest clients over
// maxmemory-clients. It runs on the loop that owns set.
func biggest(set map[*conn]struct{}, held func(*conn) int) *conn {
	var victim *conn
	for c := range set {
		if !c.closing && !c.closed && (victim == nil || held(c) > held(victim)) {
			victim = c
		}
	}
	return victim
}

// A frame that arrives in many reads and whose length the decoder cannot
// tell in advance (a pipe line, a RESP command of many arguments) is kept
// in the connection's own buffer once partialBytes of it are buffered.
// Parsing it from gnet's input buffer would cost a copy of all of it per
// read, since gnet's Peek joins its ring buffer and the bytes just read
// into a new slice: a 31 MiB pipe PUT took 1.1-1.4 s of its loop, against
// 50-100 ms for the same SET in RESP, whose bulk length is known up front.
const partialBytes = 64 << 10

// keepPartial moves a large partial frame out of gnet's input buffer into
// cs.partial, after a parse stopped at it.
func (s *Server) keepPartial(cs *conn) {
	c := cs.c
	n := c.InboundBuffered()
	if n < partialBytes || cs.parked || cs.closing || cs.closed || cs.need() > n+1 {
		// Small, or whole requests waiting for a parked connection, or a
		// frame whose length is known (it is peeked once, when complete).
		return
	}
	buf, err := c.Peek(n)
	if err != nil {
		return
	}
	cs.partial = append(cs.partial[:0], buf...)
	_, _ = c.Discard(n)
}

// parsePartial adds what arrived to cs.partial and parses from it. It
// reports whether parsing may go on from gnet's buffer (cs.partial was all
// consumed).
func (s *Server) parsePartial(cs *conn) bool {
	c := cs.c
	if n := c.InboundBuffered(); n > 0 {
		if buf, err := c.Peek(n); err == nil {
			cs.partial = append(cs.partial, buf...)
			_, _ = c.Discard(n)
		}
	}
	if len(cs.partial) < cs.need() {
		return false
	}
	used, more := s.parse(cs, cs.partial)
	cs.loop.stats.bytesIn.Add(uint64(used))
	rest := cs.partial[used:]
	switch {
	case len(rest) == 0:
		cs.partial = cs.partial[:0]
		if cap(cs.partial) > partialBytes {
			cs.partial = nil
		}
	case cap(cs.partial) > 2*partialBytes && len(rest) < partialBytes:
		// Don't pin a big buffer for a small remainder.
		cs.partial = append([]byte(nil), rest...)
	default:
		cs.partial = rest
	}
	return more && len(cs.partial) == 0
}

// inputBuffered is how much of cs's input is received and not yet parsed.
func (cs *conn) inputBuffered() int {
	return len(cs.partial) + cs.c.InboundBuffered()
}

// dropInput drops everything cs has received and not parsed.
func (cs *conn) dropInput() int {
	cs.partial = nil
	return discardInput(cs.c)
}

// discardInput drops everything buffered on c and returns how much.
// (Discard(0) would too, but says nothing to a reader.)
func discardInput(c gnet.Conn) int {
	n := c.InboundBuffered()
	if n > 0 {
		_, _ = c.Discard(n)
	}
	return n
}

// choose fixes the connection's protocol from its first byte.
func (s *Server) choose(cs *conn, first byte) {
	if first == '*' {
		cs.proto = protoRESP
		cs.resp = codec.NewRESPDecoder(s.connLimits(cs))
		return
	}
	cs.proto = protoPipe
	cs.pipe = codec.NewPipeDecoder(s.connLimits(cs))
}

// releaseDecoder drops the decoder's references to the input it decoded
// (codec's Release): an idle connection that had sent a request of
// max_frame_bytes pinned all of it.
func (cs *conn) releaseDecoder() {
	switch cs.proto {
	case protoRESP:
		cs.resp.Release()
	case protoPipe:
		cs.pipe.Release()
	}
}

func (cs *conn) need() int {
	if cs.proto == protoRESP {
		return cs.resp.Need()
	}
	return cs.pipe.Need()
}

func (cs *conn) decode(buf []byte) ([][]byte, int, error) {
	if cs.proto == protoRESP {
		return cs.resp.Decode(buf)
	}
	return cs.pipe.Decode(buf)
}

// parse dispatches the whole frames at the start of buf. It returns the
// bytes consumed and whether the caller should look at the input again
// (everything in buf was consumed and the connection can go on).
func (s *Server) parse(cs *conn, buf []byte) (used int, more bool) {
	for used < len(buf) {
		args, m, err := cs.decode(buf[used:])
		if err != nil {
			var pe *codec.ProtocolError
			if errors.As(err, &pe) && !pe.Fatal && m > 0 {
				s.emit(cs, s.appendErr(cs, nil, "", causeProtocol, pe.Msg))
				used += m
				continue
			}
			msg := err.Error()
			if pe != nil {
				msg = pe.Msg
			}
			s.log.Debug("protocol error, closing connection", "conn", cs.id, "remote", cs.remoteAddr(), "err", msg)
			s.emit(cs, s.appendErr(cs, nil, "", causeProtocol, msg))
			cs.closing = true
			return len(buf), false
		}
		if m == 0 {
			return used, false
		}
		if len(args) == 0 {
			used += m
			continue
		}
		if !s.dispatch(cs, args) {
			return used, false // parked: this request stays buffered
		}
		used += m
		if cs.closing {
			return len(buf), false
		}
		if s.flushIfBig(cs) {
			return used, false
		}
		if cs.closing || cs.closed || s.overOutput(cs) {
			return len(buf), false
		}
	}
	return used, true
}

// admit applies the ordering and back-pressure rules before a command of
// the given class runs; false parks the connection.
func (s *Server) admit(cs *conn, cmd *command, args [][]byte) bool {
	if cmd.class == classWrite && s.overWriteBudget() {
		s.parkForWrites(cs)
		return false
	}
	if cs.q.len() == 0 {
		return true
	}
	ok := cs.q.len() < maxPending && cs.barriers == 0
	if soft := int(s.cfg.MaxOutputBytes) / 2; soft > 0 {
		ok = ok && s.waitingBytes(cs) < soft
	}
	switch cmd.class {
	case classBarrier:
		ok = false
	case classRead:
		// A single-key GET behind writes is deferred by get, not parked.
		ok = ok && (cs.writes == 0 || cmd.waitsInQueue)
		// One range at a time: a range the store answers later (a
		// cluster's fan-out to every shard) holds up to MaxRangeBytes of
		// pairs until it completes, and its reply only counts against
		// max_output_bytes then. Admitted together, 300 pipelined RANGEs
		// of one client that never read held 5.7 GB.
		ok = ok && (!cmd.ranges || !pendingWhere(cs, func(p *pending) bool { return p.cmd == s.cmdRange }))
		ok = ok && (!cmd.multiKey || cs.multiReads < maxMultiReads)
	case classWrite:
		// Writes the store has not acknowledged yet (the engine may be
		// stalled) hold their bytes: bound them, as maxPending bounds the
		// count (8 connections pipelining 2 MiB SETs into a stalled engine
		// queued 3.5 GiB).
		ok = ok && cs.writeBytes < maxPendingWriteBytes
		ok = ok && (cs.reads == 0 || (cmd.keys != nil && !s.readsPending(cs, cmd.keys(args))))
		ok = ok && (!cmd.readsFirst || cs.writes == 0)
		// A write that reads first (DEL) reaches the store only once its
		// read is answered, which may be later than a write behind it
		// would: DEL k; SET k v would then leave k deleted.
		ok = ok && (cs.writes == 0 || !pendingWhere(cs, func(p *pending) bool { return p.readsFirst }))
	}
	if !ok {
		cs.withdraw()
		cs.parked = true
	}
	return ok
}

// pendingWhere reports whether a request still pending on cs satisfies
// match.
func pendingWhere(cs *conn, match func(*pending) bool) bool {
	for i := cs.q.head; i < len(cs.q.items); i++ {
		if p := cs.q.items[i]; !p.done && match(p) {
			return true
		}
	}
	return false
}

// readsPending reports whether a read still pending on cs could observe a
// write to keys: a read whose key is unknown (multi-key, range) counts as
// touching every key.
func (s *Server) readsPending(cs *conn, keys [][]byte) bool {
	for i := cs.q.head; i < len(cs.q.items); i++ {
		p := cs.q.items[i]
		if p.class != classRead || p.done {
			continue
		}
		if p.key == nil {
			return true
		}
		for _, k := range keys {
			if bytes.Equal(k, p.key) {
				return true
			}
		}
	}
	return false
}

// flushOutBytes is how much reply output a burst collects before writing
// it out early; below it, a burst's replies leave in one write.
const flushOutBytes = 1 << 20

// overOutput enforces max_output_bytes while replies are produced, so one
// burst of pipelined reads of a big value cannot build an unbounded reply.
// Over the limit the connection is closed and its replies dropped, as Redis
// does with a client over its output-buffer limit.
func (s *Server) overOutput(cs *conn) bool {
	max := s.outputLimit(cs)
	if max <= 0 || len(cs.out)+cs.c.OutboundBuffered() <= max && !cs.overflow.Load() {
		return false
	}
	s.closeOverOutput(cs)
	return true
}

// closeOverOutput closes cs for exceeding max_output_bytes.
func (s *Server) closeOverOutput(cs *conn) {
	s.log.Warn("closing connection over max_output_bytes", "conn", cs.id, "remote", cs.remoteAddr())
	s.metrics.LimitCloses.WithLabelValues("output").Inc()
	s.dropOutput(cs)
}

// dropOutput closes cs at once, its replies dropped: it is over an output
// limit, its own or the server's. Its output stays counted, as dropping,
// until gnet has closed it and freed its buffers (unchargeOutput).
func (s *Server) dropOutput(cs *conn) {
	if !cs.overClosed && cs.outCharged > 0 {
		cs.loop.outDropping += cs.outCharged
		s.outDropping.Add(int64(cs.outCharged))
	}
	cs.overClosed = true
	cs.withdraw()
	cs.out = cs.out[:0]
	cs.closing = true
	cs.q = replyQueue{}
	cs.reads, cs.writes, cs.writeBytes, cs.readyBytes = 0, 0, 0, 0
	// Abortive close: the replies still queued in the kernel are dropped
	// with the rest, instead of trickling out to a client that reads
	// slowly (tens of seconds through a small window) before its EOF.
	_ = unix.SetsockoptLinger(cs.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	_ = cs.c.Close()
}

// appendErr encodes an error reply in cs's protocol and counts it in
// kv_errors_total. command must come from the command tables or be a store
// operation, never from the request: the label's values must stay few.
func (s *Server) appendErr(cs *conn, dst []byte, command, cause, msg string) []byte {
	return s.appendErrs(cs, dst, 1, command, cause, msg)
}

// appendErrs encodes n copies of an error reply and counts them. Every
// error reply is counted when it is encoded, here or in appendRESPErr, and
// is encoded once whoever sends it (the loop, or tryDirect); the only reply
// dropped and produced again, a read's over the output limit, is never a
// failed read's (chargeOwed).
func (s *Server) appendErrs(cs *conn, dst []byte, n int, command, cause, msg string) []byte {
	s.metrics.Errors.WithLabelValues(command, cause).Add(float64(n))
	for range n {
		if cs.proto == protoRESP {
			dst = codec.AppendError(dst, "ERR "+msg)
		} else {
			dst = codec.AppendPipeStrings(dst, "ERROR", msg)
		}
	}
	return dst
}

// appendRESPErr encodes a RESP error reply whose message starts with its
// own code (NOAUTH, WRONGPASS...) and counts it, as appendErr does.
func (s *Server) appendRESPErr(dst []byte, command, cause, msg string) []byte {
	s.metrics.Errors.WithLabelValues(command, cause).Inc()
	return codec.AppendError(dst, msg)
}

// storeErr encodes the error reply to a request of store operation op
// that the store failed.
func (s *Server) storeErr(cs *conn, dst []byte, op int, err error) []byte {
	return s.appendErr(cs, dst, s.metrics.opNames[op], causeStore, err.Error())
}

// refuse answers a request refused before it reached the store.
func (s *Server) refuse(cs *conn, args [][]byte, cause, msg string) {
	s.emit(cs, s.appendErr(cs, nil, s.commandName(cs, args), cause, msg))
}

// commandName is the name, in its table, of the command args invoke:
// args[0] as sent (any case, any bytes) is no label value.
func (s *Server) commandName(cs *conn, args [][]byte) string {
	if cmd := s.table(cs).lookup(args[0]); cmd != nil {
		return cmd.name
	}
	return ""
}

// table is the command table of cs's protocol.
func (s *Server) table(cs *conn) commandTable {
	if cs.proto == protoRESP {
		return s.respTable
	}
	return s.pipeTable
}
