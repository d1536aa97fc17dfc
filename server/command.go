package server

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// command is one entry of a protocol's command table.
type command struct {
	name    string // canonical upper-case name
	id      int    // index into the metrics' per-command series
	minArgs int    // including the command name
	maxArgs int    // -1: unbounded
	class   int
	noAuth  bool // allowed before AUTH
	run     func(s *Server, cs *conn, args [][]byte, start int64)
	// keys lists the keys a write command changes, so it may be dispatched
	// while reads of other keys are still pending; nil means "unknown"
	// (the write waits for every pending read).
	keys func(args [][]byte) [][]byte
	// readsFirst marks a write that reads its keys before writing (DEL
	// counts the keys that existed): it also waits for earlier writes.
	readsFirst bool
	// coalesces marks a single-key write with a fixed reply (PUT, SET, the
	// pipe's DELETE): those of a burst share one store write (writeOne).
	coalesces bool
	// waitsInQueue marks a single-key read (GET) that, behind pending
	// writes, waits in the reply queue instead of parking the connection
	// (get), so it need not end the open write group either.
	waitsInQueue bool
	// ranges marks a read of a key range (RANGE, SCAN), which waits for
	// the one before it (admit).
	ranges bool
	// multiKey marks a read of several keys (MGET, EXISTS): at most
	// maxMultiReads of a connection are out at the store (admit).
	multiKey bool
	// endsTx marks the commands that still run between MULTI and EXEC
	// (MULTI, EXEC, DISCARD, QUIT): every other command is refused there
	// without running (inMulti).
	endsTx bool
}

// Key extractors for the command tables.
func oneKey(args [][]byte) [][]byte  { return args[1:2] }
func allKeys(args [][]byte) [][]byte { return args[1:] }
func pairKeys(args [][]byte) [][]byte {
	keys := make([][]byte, 0, len(args)/2)
	for i := 1; i < len(args); i += 2 {
		keys = append(keys, args[i])
	}
	return keys
}

// commandTable maps upper-case names to commands.
type commandTable map[string]*command

// lookup finds a command by name, case-insensitively and without allocating.
func (t commandTable) lookup(name []byte) *command {
	var buf [32]byte
	if len(name) > len(buf) {
		return nil
	}
	up := buf[:len(name)]
	for i, c := range name {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		up[i] = c
	}
	return t[string(up)]
}

// dispatch runs one decoded request. It returns false when the connection
// must park first; the request then stays in the input buffer.
func (s *Server) dispatch(cs *conn, args [][]byte) bool {
	resp := cs.proto == protoRESP
	cmd := s.table(cs).lookup(args[0])
	if cs.inMulti && (cmd == nil || !cmd.endsTx) {
		// Transactions are not supported. Each command of one is refused
		// as Redis refuses a command it cannot queue, and EXEC then aborts
		// the transaction: nothing of it runs, and a client that pipelines
		// MULTI ... EXEC (go-redis's TxPipelined, redis-py's default
		// pipeline) reads one reply per command and is told it failed.
		// (Refusing MULTI itself and running the rest applied transactions
		// reported as failed, and go-redis, which stops reading at MULTI's
		// error, read their late replies as its next commands' replies.)
		cs.multiRefused++
		name := ""
		if cmd != nil {
			name = cmd.name
		}
		s.emit(cs, s.appendErr(cs, nil, name, causeInvalid, errNotRunInTx))
		return true
	}
	if cmd == nil && !resp && looksLikeHTTP(args[0]) {
		s.log.Warn("closing connection: an HTTP request was sent to the client port (possible cross-protocol attack from a web page)",
			"conn", cs.id, "remote", cs.remoteAddr())
		s.emit(cs, s.appendErr(cs, nil, "", causeProtocol, "HTTP request on the key-value port; closing"))
		cs.closing = true
		return true
	}
	if cmd == nil {
		s.emit(cs, s.appendErr(cs, nil, "", causeUnknown, "unknown command '"+printable(args[0])+"'"))
		return true
	}
	if !cs.authed && !cmd.noAuth {
		if resp {
			s.emit(cs, s.appendRESPErr(nil, cmd.name, causeNoAuth, "NOAUTH Authentication required."))
		} else {
			s.emit(cs, s.appendErr(cs, nil, cmd.name, causeNoAuth, "NOAUTH authentication required"))
		}
		return true
	}
	if len(args) < cmd.minArgs || (cmd.maxArgs >= 0 && len(args) > cmd.maxArgs) {
		if resp {
			s.emit(cs, s.appendErr(cs, nil, cmd.name, causeArity, "wrong number of arguments for '"+lower(cmd.name)+"' command"))
		} else {
			s.emit(cs, s.appendErr(cs, nil, cmd.name, causeArity, "wrong number of fields for '"+cmd.name+"'"))
		}
		return true
	}
	if cs.open != nil && !cmd.coalesces && !cmd.waitsInQueue {
		// Whatever comes next must reach the store after the open group;
		// submitted before admission, a group that completes at once does
		// not park what follows.
		s.submitOpen(cs)
	}
	if !s.admit(cs, cmd, args) {
		return false
	}
	cs.loop.stats.requests[cmd.id].Add(1)
	var start int64
	if cmd.class != classNone {
		// Latency counts from the arrival of the burst (OnTraffic's clock
		// reading): one clock read per burst, not per request.
		start = cs.last
	}
	cmd.run(s, cs, args, start)
	return true
}

// observe records a finished store request's latency.
func (s *Server) observe(p *pending) {
	if p.start != 0 {
		s.observeAt(p, time.Now().UnixNano())
	}
}

// observeAt records a store request finished at now (unix nanos).
func (s *Server) observeAt(p *pending, now int64) {
	if p.start != 0 {
		p.cs.loop.stats.observeN(p.cmd, now-p.start, uint64(max(p.n, 1)))
	}
}

// readReply renders a single-key read's reply in a protocol: found for a
// value, missing for an absent key; errors render as the protocol's error.
type readReply struct {
	found   func(dst, v []byte) []byte
	missing []byte
}

// encode appends the reply to a read's result to dst.
func (s *Server) encode(cs *conn, r *readReply, dst, v []byte, err error) []byte {
	switch {
	case err == nil:
		return r.found(dst, v)
	case err == store.ErrNotFound:
		return append(dst, r.missing...)
	default:
		return s.storeErr(cs, dst, s.cmdGet, err)
	}
}

// get serves a single-key read of args[1]; reply renders the result in
// the connection's protocol. A store whose reads never wait is read in
// place when nothing is queued ahead, skipping the completion machinery.
func (s *Server) get(cs *conn, args [][]byte, start int64, reply *readReply) {
	key := args[1]
	if msg := s.checkKey(key); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	if cs.writes > 0 {
		// Writes ahead of this read are not visible until durable: the read
		// waits in the queue and runs when it reaches the front (startRead),
		// while later writes to other keys go ahead.
		p := s.newPending(cs, classRead, s.cmdGet, start)
		p.key, p.readReply, p.deferred = bytes.Clone(key), reply, true
		cs.push(p)
		cs.count(classRead, 1)
		return
	}
	if s.sync != nil {
		// A read that would wait for the disk takes the asynchronous path
		// below, which does not hold up the loop's other connections.
		if v, err := s.sync.GetSync(key); !errors.Is(err, store.ErrWouldBlock) {
			if cs.q.len() == 0 {
				cs.out = s.encode(cs, reply, cs.out, v, err)
			} else {
				s.emit(cs, s.encode(cs, reply, nil, v, err))
			}
			// Its reply leaves with the burst's: timed once for all of them
			// when the burst is done (process).
			cs.inplaceGets++
			return
		}
	}
	p := s.newPending(cs, classRead, s.cmdGet, start)
	p.key, p.readReply = bytes.Clone(key), reply
	if cs.q.len() > 0 && (cs.held > 0 || !s.readRoom(cs)) {
		cs.push(p)
		cs.count(classRead, 1)
		cs.hold(p, len(cs.q.items)-1)
		return
	}
	p.keep = cs.q.len() == 0
	s.store.Get(key, func(v []byte, err error) { s.finishRead(p, v, err) })
	s.settle(p)
	if !p.done {
		p.asyncRead = true
		cs.asyncReads++
	}
}

// startRead runs a deferred or held read, or one to read again. It
// reports whether the read is done (answered on the spot).
func (s *Server) startRead(p *pending) bool {
	cs := p.cs
	if p.held {
		p.held = false
		cs.held--
	}
	p.deferred = false
	if s.sync != nil {
		if v, err := s.sync.GetSync(p.key); !errors.Is(err, store.ErrWouldBlock) {
			p.reply, p.done = s.encode(cs, p.readReply, nil, v, err), true
			cs.queueReady(p)
			s.observe(p)
			return true
		}
	}
	p.state.Store(stateRunning) // a read run again completed once already
	p.keep = cs.q.front() == p
	s.store.Get(p.key, func(v []byte, err error) { s.finishRead(p, v, err) })
	if p.state.CompareAndSwap(stateRunning, stateAsync) {
		s.inflight.Add(1)
		p.asyncRead = true
		cs.asyncReads++
		return false
	}
	p.done = true
	cs.queueReady(p)
	s.observe(p)
	return true
}

// finishRead completes the single-key read p with the store's answer (any
// goroutine).
func (s *Server) finishRead(p *pending, v []byte, err error) {
	p.failed = err != nil && err != store.ErrNotFound
	s.finish(p, s.encode(p.cs, p.readReply, nil, v, err))
}

// The read window. A pipeline of single-key reads answered asynchronously
// (cluster mode, reads that go to disk) used to be handed to the store
// all at once: 4096 GETs of a 1 MiB value made 4 GiB of replies, and
// max_output_bytes closed a client that was reading them. Now a
// connection has at most maxAsyncReads reads out at the store, and starts
// another only while the replies it holds (unsent, owed by completions,
// and expected from the reads out, at their recent size) stay under half
// of max_output_bytes; the rest wait in the queue, held. A completion
// that still finds no room drops its reply and its read runs again later
// (chargeOwed), except at the front of the queue, which is always kept so
// that the queue moves.
const maxAsyncReads = 128

// readRoom reports whether cs may start another read.
func (s *Server) readRoom(cs *conn) bool {
	if cs.asyncReads >= maxAsyncReads || cs.readSize == 0 && cs.asyncReads > 0 {
		return false // one read at a time until one reply told their size
	}
	soft := int(s.cfg.MaxOutputBytes) / 2
	return soft <= 0 || len(cs.out)+cs.c.OutboundBuffered()+s.waitingBytes(cs)+cs.asyncReads*cs.readSize < soft
}

// hold queues p, at index at of cs.q.items, for the read window.
func (cs *conn) hold(p *pending, at int) {
	p.deferred, p.held = true, true
	if cs.held == 0 || at < cs.heldAt {
		cs.heldAt = at
	}
	cs.held++
}

// noteRead records the size of a read's reply, for readRoom.
func (cs *conn) noteRead(n int) {
	cs.readSize = max(1, (cs.readSize*3+n)/4)
}

// startHeld starts cs's held reads, oldest first, while the window has
// room.
func (s *Server) startHeld(cs *conn) {
	if cs.held == 0 || cs.closed {
		return
	}
	i := max(cs.heldAt, cs.q.head)
	for ; i < len(cs.q.items) && cs.held > 0; i++ {
		p := cs.q.items[i]
		if !p.held {
			continue
		}
		if !s.readRoom(cs) {
			break
		}
		s.startRead(p)
	}
	cs.heldAt = i
}

// checkKey validates a key against the protocol's rules; "" means fine.
func (s *Server) checkKey(key []byte) string {
	if len(key) == 0 {
		return "empty key"
	}
	if max := int(s.cfg.MaxKeyBytes); max > 0 && len(key) > max {
		return "key too large (max " + strconv.Itoa(max) + " bytes)"
	}
	return ""
}

// checkKeys validates every key of a multi-key command.
func (s *Server) checkKeys(keys [][]byte, step int) string {
	for i := 0; i < len(keys); i += step {
		if msg := s.checkKey(keys[i]); msg != "" {
			return msg
		}
	}
	return ""
}

// rangeLimit caps a requested limit by server.range_limit.
func (s *Server) rangeLimit(requested int) int {
	max := s.cfg.RangeLimit
	if max <= 0 {
		max = 1000
	}
	if requested <= 0 || requested > max {
		return max
	}
	return requested
}

// newBatchPairs builds a batch from k1 v1 k2 v2 ... (copied), with one
// allocation for its buffer.
func newBatchPairs(pairs [][]byte) *lsm.Batch {
	n := 0
	for i := 0; i+1 < len(pairs); i += 2 {
		n += lsm.PutSize(len(pairs[i]), len(pairs[i+1]))
	}
	b := lsm.NewBatch()
	b.Grow(n)
	for i := 0; i+1 < len(pairs); i += 2 {
		b.Put(pairs[i], pairs[i+1])
	}
	return b
}

// newDeleteBatch builds a batch deleting keys (copied).
func newDeleteBatch(keys [][]byte) *lsm.Batch {
	b := lsm.NewBatch()
	for _, k := range keys {
		b.Delete(k)
	}
	return b
}

// printable renders a client-supplied name for an error line.
func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(bytes.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, b))
}

func lower(s string) string { return string(bytes.ToLower([]byte(s))) }
