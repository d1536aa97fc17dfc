package server

import (
	"context"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/kvstore/kv/codec"
)

// Protocols, fixed per connection by its first byte.
const (
	protoUnknown = iota
	protoPipe
	protoRESP
)

// conn is one client connection. Every field is owned by the connection's
// event loop; other goroutines only hand results over through loop.post,
// except for the direct-reply fields under dmu and the atomics owed and
// overflow.
type conn struct {
	c     gnet.Conn
	tls   *tlsPeer // the client behind a TLS bridge, or nil
	id    uint64
	loop  *loop
	proto int
	pipe  *codec.PipeDecoder
	resp  *codec.RESPDecoder

	out      []byte      // replies produced in this burst; one Write at the end
	q        replyQueue  // replies still waiting on the store, in request order
	reads    int         // pending reads in q
	writes   int         // pending writes in q
	barriers int         // pending classBarrier commands in q
	parked   bool        // stopped parsing until q drains (ordering or back-pressure)
	open     *writeGroup // write group still taking requests; its members are queued, the group not yet submitted
	spare    *writeGroup // a finished group kept for the next one (reuse)

	closed  bool
	closing bool // reply then close (QUIT, fatal protocol error)
	authed  bool
	inMulti bool // MULTI was sent and no EXEC or DISCARD ended it (multiRefused)
	name    string
	last    int64 // unix nanos of the last traffic: idle_timeout, and the start of request latencies

	partial     []byte // the start of a long frame, moved out of gnet's buffer (keepPartial)
	inCharged   int    // this connection's part of Server.input
	readyBytes  int    // replies answered on the loop and queued behind an unanswered one (queueReady)
	inplaceGets uint64 // GETs of this burst answered in place, timed together at its end
	writeBytes  int64  // keys and values of the writes in q (maxPendingWriteBytes)

	// The read window (readRoom): single-key reads out at the store, held
	// reads queued for the window (heldAt: no held read sits before that
	// index of q.items), and the recent size of a read's reply.
	asyncReads int
	held       int
	heldAt     int
	readSize   int

	// Output back-pressure (parkForOutput): parked until the client reads
	// its replies; outLow is the smallest backlog seen and outSince when
	// it was last lowered.
	outParked bool
	outLow    int
	outSince  int64

	// The output budget (chargeOutput): this connection's part of
	// Server.output; watched: it is in loop.outHeld. multiReads counts its
	// multi-key reads out at the store (maxMultiReads), whose values the
	// output check counts as they arrive.
	outCharged int
	watched    bool
	multiReads int

	// owed is the size of the replies completed by other goroutines and
	// not yet moved to out; a completion that would take it past
	// max_output_bytes drops its reply and sets overflow, and the loop then
	// closes the connection (chargeOwed). Without it, 4096 pipelined reads
	// of a big value answered asynchronously (cluster mode, disk reads)
	// held all their replies at once: gigabytes for a 32 KB request.
	owed       atomic.Int64
	overflow   atomic.Bool
	overClosed bool // closeOverOutput ran

	// Direct replies (offerDirect, tryDirect). grant is loop-owned: the
	// request offered, as far as the loop knows. offer and gone are shared
	// with completing goroutines under dmu.
	fd    int
	grant *pending
	dmu   sync.Mutex
	offer *pending
	gone  bool // OnClose ran: the fd is about to be closed

	// multiRefused counts the commands refused without running since
	// MULTI (inMulti), as Redis refuses commands it cannot queue. (inMulti
	// sits in the padding after authed, which dispatch reads anyway; cold
	// fields stay at the end, away from the hot ones above.)
	multiRefused int

	// A lingering close (closeAfterReplies): the write side is shut, and
	// the input dropped since is counted.
	lingering     bool
	lingerDropped int

	// opened (unix nanos) bounds the time to authenticate (authTimeout);
	// authFailures counts refused passwords (authFailed).
	opened       int64
	authFailures int
}

// pending is one request whose reply the store produces. Its state
// resolves the race between a store that answers before returning (inline)
// and one that answers later from another goroutine (async).
type pending struct {
	cs    *conn
	reply []byte
	class int  // classRead, classWrite, classBarrier or classNone (already answered)
	done  bool // set on the loop once reply is final
	state atomic.Uint32
	start int64
	cmd   int

	// A read's key (copied) and reply encoder; deferred reads have not
	// been handed to the store yet: a plain deferred read waits for the
	// front of the queue (writes ahead of it), a held one only for the
	// read window (readRoom). failed: the store failed the read (set by
	// its completion, before finish).
	key       []byte
	readReply *readReply
	deferred  bool
	held      bool
	failed    bool
	// A single-key read out at the store: asyncRead (loop-owned) counts it
	// in cs.asyncReads; keep (set before the store call) says it was the
	// front, whose reply is never dropped; redo (set by chargeOwed) says
	// its reply was dropped over max_output_bytes and it runs again once
	// the window has room, dropped giving the reply's size.
	asyncRead bool
	multiRead bool // a multi-key read out at the store, counted in cs.multiReads
	keep      bool
	redo      bool
	dropped   int

	// A member of a write group (writeOne): how many requests it answers,
	// and the reply of each on success.
	n  int
	ok []byte

	// direct: the completion wrote the reply to the socket itself (and
	// observed its latency); the loop only has to retire the request.
	direct bool

	// owed: what chargeOwed added to cs.owed for this reply; queued:
	// what queueReady added to cs.readyBytes.
	owed   int64
	queued int
	// bytes: a write's keys and values, counted in cs.writeBytes while
	// it is queued.
	bytes int64

	// readsFirst: a write that reads its keys before writing (DEL); later
	// writes wait for it (admit).
	readsFirst bool

	// group, on the last member of a write group completed through the
	// mailbox, hands the finished group back to its connection for reuse.
	group *writeGroup
}

const (
	stateRunning uint32 = iota
	stateInline
	stateAsync
)

// maxRetainedOut is the largest reply buffer a connection keeps between
// bursts.
const maxRetainedOut = 64 << 10

// replyQueue is a FIFO of pending replies.
type replyQueue struct {
	items []*pending
	head  int
}

func (q *replyQueue) len() int        { return len(q.items) - q.head }
func (q *replyQueue) push(p *pending) { q.items = append(q.items, p) }
func (q *replyQueue) front() *pending { return q.items[q.head] }

// back returns the newest item, or nil.
func (q *replyQueue) back() *pending {
	if q.len() == 0 {
		return nil
	}
	return q.items[len(q.items)-1]
}
func (q *replyQueue) pop() {
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		q.items = q.items[:0]
		q.head = 0
	}
}

// loop is the server's view of one gnet event loop: its connections and the
// mailbox through which store goroutines hand back completions.
type loop struct {
	s     *Server
	el    gnet.EventLoop
	conns map[*conn]struct{} // loop-owned
	stats *loopStats
	// outParked are the connections parked for output (loop-owned), and
	// outCheck is set while a check of them is scheduled.
	outParked map[*conn]struct{}
	outCheck  bool
	// writeParked are the connections parked because the writes of all
	// connections waiting for the store are over budget (loop-owned), and
	// writeCheck is set while a check of them is scheduled.
	writeParked map[*conn]struct{}
	writeCheck  bool
	// outHeld are the connections whose part of the server-wide output
	// the output check keeps up to date (watchOutput), outBytes the
	// loop's share of it, and outDropping the part of that held by
	// connections closed for output that gnet has not closed yet
	// (loop-owned).
	outHeld     map[*conn]struct{}
	outBytes    int
	outDropping int
	pieces      [][]byte // queueOut's scratch

	mu        sync.Mutex
	mail      []*pending
	spare     []*pending
	scheduled bool
	// unsent: mail holds requests answered directly, which wait for the
	// loop's next callback instead of waking it (retire).
	unsent atomic.Bool
	// busy is above zero while a callback of the loop runs that may hand
	// requests to the store: they are counted in Server.inflight only once
	// the store call returns, so Shutdown waits for busy too (quiet).
	// entered counts such callbacks, so that quiet also sees one that ran
	// entirely between its reads.
	busy    atomic.Int32
	entered atomic.Uint64
}

// enter marks the start of a callback that may hand requests to the
// store; the callback ends with busy.Add(-1).
func (l *loop) enter() {
	l.entered.Add(1)
	l.busy.Add(1)
}

// post hands completed requests to their loop. One Execute covers every
// completion that arrives before the loop runs it, so a group commit of many
// writes costs one wake-up per loop, not one per reply. It never touches ps
// (nor the pending structs) after it has appended them: from then on they
// belong to the loop, which may reuse a finished write group (reuse).
func (l *loop) post(ps ...*pending) {
	l.mu.Lock()
	l.mail = append(l.mail, ps...)
	if l.scheduled {
		l.mu.Unlock()
		return
	}
	l.scheduled = true
	l.mu.Unlock()
	if err := l.el.Execute(context.Background(), gnet.RunnableFunc(l.deliver)); err != nil {
		// The engine is shutting down: nobody will read these replies.
		l.mu.Lock()
		n := 0
		for _, p := range l.mail {
			if !p.direct { // tryDirect uncounted those already
				n++
			}
		}
		clear(l.mail)
		l.mail = l.mail[:0]
		l.scheduled = false
		l.mu.Unlock()
		l.s.inflight.Add(-int64(n))
	}
}

// postDirect hands over a request whose reply tryDirect already wrote. The
// loop is not woken for it: nothing is queued behind it (the loop would
// have withdrawn the offer), so it only needs retiring before the
// connection's next request, and every loop callback begins with retire
// (OnTick also retires, within a second, on a loop that stays idle).
func (l *loop) postDirect(p *pending) {
	l.mu.Lock()
	l.mail = append(l.mail, p)
	l.unsent.Store(true)
	l.mu.Unlock()
}

// retire delivers the mail if it holds directly answered requests. Loop
// callbacks call it first (and process last), so that a connection never
// acts on a queue whose front was answered already.
func (l *loop) retire() {
	if l.unsent.Load() {
		_ = l.deliver(context.Background())
	}
}

// deliver runs on the loop: it marks completions done and writes out each
// touched connection's ready prefix.
func (l *loop) deliver(context.Context) error {
	l.enter()
	defer l.busy.Add(-1)
	l.mu.Lock()
	batch := l.mail
	l.mail = l.spare[:0]
	l.spare = nil
	l.scheduled = false
	l.unsent.Store(false)
	l.mu.Unlock()

	s := l.s
	now := time.Now().UnixNano()
	for _, p := range batch {
		if p.multiRead {
			p.multiRead = false
			p.cs.multiReads--
		}
		if p.asyncRead {
			p.asyncRead = false
			p.cs.asyncReads--
			if !p.direct { // a direct reply's size is gone with it
				p.cs.noteRead(len(p.reply) + p.dropped)
			}
		}
		if p.redo {
			// Its reply did not fit in max_output_bytes: it runs again
			// when the window has room (startHeld).
			p.redo, p.dropped = false, 0
			if !p.cs.closed {
				p.cs.hold(p, p.cs.q.head)
			}
			s.inflight.Add(-1)
			continue
		}
		p.done = true
		if g := p.group; g != nil {
			p.group = nil
			if !p.cs.closed {
				p.cs.reuse(g)
			}
		}
		if p.direct {
			continue // observed by tryDirect
		}
		s.inflight.Add(-1)
		s.observeAt(p, now)
	}
	for _, p := range batch {
		cs := p.cs
		if cs.overflow.Load() && !cs.closed && !cs.overClosed {
			s.closeOverOutput(cs)
			continue
		}
		if cs.closed || cs.q.len() == 0 {
			continue
		}
		if front := cs.q.front(); front.done || front.deferred {
			s.advance(cs)
		} else {
			s.startHeld(cs) // a read came back: the window may have room
		}
		// Its reply may wait behind the front (owed).
		s.chargeOutput(cs)
	}
	clear(batch)
	l.mu.Lock()
	if l.spare == nil {
		l.spare = batch[:0]
	}
	l.mu.Unlock()
	return nil
}

// advance moves cs on after its queue moved or its client read: the ready
// replies go out, and a parked connection parses again if it may.
func (s *Server) advance(cs *conn) {
	s.drain(cs)
	if cs.closed {
		return
	}
	// drain starts the front itself when it may; what it leaves held
	// waits for the window, or for the client to read (outParked).
	s.startHeld(cs)
	if cs.parked && s.canResume(cs) {
		cs.parked = false
		if s.process(cs) == gnet.Close {
			_ = cs.c.Close()
		}
		return
	}
	s.flush(cs)
}

// drain moves the completed prefix of cs's queue into its output buffer,
// handing it to gnet as it grows; once the unsent replies pass the
// back-pressure point it parks cs and leaves the rest queued (deferred
// reads not even run) until the client reads (checkOutput). A pipeline of
// reads deferred behind a write used to come out here all at once: 200
// GETs of 256 KiB went into one 50 MB buffer past max_output_bytes.
func (s *Server) drain(cs *conn) {
	for cs.q.len() > 0 && !cs.outParked {
		p := cs.q.front()
		if p.deferred && !s.startRead(p) {
			break
		}
		if !p.done {
			break
		}
		cs.out = append(cs.out, p.reply...)
		if p.owed != 0 {
			cs.owed.Add(-p.owed)
			p.owed = 0
		}
		cs.readyBytes -= p.queued
		cs.count(p.class, -1)
		cs.writeBytes -= p.bytes
		cs.q.pop()
		if p == cs.grant {
			// Offered after its completion had already gone the usual way.
			cs.withdraw()
		}
		if s.flushIfBig(cs) || cs.closed || cs.overClosed {
			return
		}
	}
}

// flush writes cs.out in one call and enforces the output limit.
func (s *Server) flush(cs *conn) {
	if len(cs.out) > 0 && !cs.closed {
		cs.loop.stats.bytesOut.Add(uint64(len(cs.out)))
		var err error
		if len(cs.out) > minQueuedPiece && cs.c.OutboundBuffered() > 0 {
			err = cs.loop.queueOut(cs.c, cs.out)
		} else {
			_, err = cs.c.Write(cs.out)
		}
		cs.out = cs.out[:0]
		if cap(cs.out) > maxRetainedOut {
			cs.out = nil // gnet copied what it could not send; don't pin a big buffer per idle connection
		}
		if err != nil {
			return // gnet closed the connection (OnClose already ran)
		}
	}
	if cs.closed {
		return
	}
	if cs.closing && cs.q.len() == 0 {
		s.closeAfterReplies(cs)
		return
	}
	if !s.overOutput(cs) {
		s.chargeOutput(cs)
	}
}

// minQueuedPiece is the size below which output queued behind unsent
// output is handed to gnet in one piece (queueOut).
const minQueuedPiece = 64 << 10

// queueOut hands b to gnet, which holds output it has not sent yet (c
// has some already, so all of b waits), in pieces whose sizes are powers
// of two. gnet copies each piece it queues into a pooled buffer of the
// next power of two: 1 MiB GET replies (1 MiB and 12 bytes) queued for
// clients that did not read took 2 MiB each, and 1000 such clients held
// 3.5 GB of gnet buffers (2.1 GB in pieces). Only the last piece, under
// minQueuedPiece, is rounded up much.
func (l *loop) queueOut(c gnet.Conn, b []byte) error {
	bs := l.pieces[:0]
	for len(b) > minQueuedPiece {
		n := 1 << (bits.Len(uint(len(b))) - 1)
		bs = append(bs, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		bs = append(bs, b)
	}
	_, err := c.Writev(bs)
	clear(bs)
	l.pieces = bs[:0]
	return err
}

// Lingering close bounds: how long, and how many more bytes of input, a
// closing connection waits for the client's own close.
const (
	lingerTimeout  = time.Second
	lingerMaxBytes = 64 << 20
)

// closeAfterReplies closes cs, whose replies are all written. When gnet
// has sent them all, it shuts the write side first and closes on the
// client's close, after lingerTimeout, or after lingerMaxBytes more input
// (dropped by parseAll, which parses nothing on a closing connection):
// closing with input unread sends a reset, which can discard the replies
// not yet read, so a client refused in the middle of sending a value over
// max_frame_bytes saw "connection reset" or "broken pipe" instead of the
// error. Replies gnet still holds go out in gnet's close, as before.
func (s *Server) closeAfterReplies(cs *conn) {
	if cs.lingering {
		if cs.lingerDropped <= lingerMaxBytes {
			return
		}
	} else if cs.fd > 0 && cs.c.OutboundBuffered() == 0 && !s.draining.Load() &&
		unix.Shutdown(cs.fd, unix.SHUT_WR) == nil {
		cs.lingering = true
		l := cs.loop
		time.AfterFunc(lingerTimeout, func() {
			_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				if !cs.closed {
					_ = cs.c.Close()
				}
				return nil
			}))
		})
		return
	}
	_ = cs.c.Close()
}

// canResume reports whether a parked connection may parse again.
// Whether the next request is admissible is only known once it is decoded,
// so a parked connection retries on every step of its queue (at worst one
// decode of the same request each time).
func (s *Server) canResume(cs *conn) bool {
	return cs.q.len() < maxPending/2 && cs.writeBytes < maxPendingWriteBytes/2 && !cs.outParked &&
		s.waitingBytes(cs) < int(s.cfg.MaxOutputBytes)/4
}

// waitingBytes is the size of cs's replies that are answered but wait
// behind an unanswered one: completed on the loop (readyBytes) or by other
// goroutines (owed). Past half of max_output_bytes the connection stops
// parsing (admit) until the front is answered and they leave: 4000
// pipelined GETs of a 256 KiB value answered from memory behind one read
// that waits on the disk queued a gigabyte of replies.
func (s *Server) waitingBytes(cs *conn) int {
	return cs.readyBytes + int(cs.owed.Load())
}

// queueReady counts p's reply, answered on the loop while p waits in cs's
// queue, in cs.readyBytes.
func (cs *conn) queueReady(p *pending) {
	p.queued = len(p.reply)
	cs.readyBytes += p.queued
}

// newPending starts an asynchronous request on cs.
func (s *Server) newPending(cs *conn, class, cmd int, start int64) *pending {
	return &pending{cs: cs, class: class, cmd: cmd, start: start}
}

// count adjusts the pending read/write tallies the ordering rule uses.
func (cs *conn) count(class, d int) {
	switch class {
	case classRead:
		cs.reads += d
	case classWrite:
		cs.writes += d
	case classBarrier:
		cs.barriers += d
	}
}

// finish is called by the store's completion (any goroutine) with the
// encoded reply.
func (s *Server) finish(p *pending, reply []byte) {
	s.finishHeld(p, reply, 0)
}

// finishHeld is finish for a reply built from values counted in its
// connection's owed (held bytes: an MGET's, multiGet). The reply's count
// replaces theirs in one step: uncounted in between, they would let the
// connection parse, and start, another MGET whose values, with this
// reply, pass max_output_bytes.
func (s *Server) finishHeld(p *pending, reply []byte, held int64) {
	p.reply = reply
	if p.state.CompareAndSwap(stateRunning, stateInline) {
		if held != 0 {
			p.cs.owed.Add(-held) // settle emits the reply on the loop, now
		}
		return
	}
	if s.tryDirect(p) {
		if held != 0 {
			p.cs.owed.Add(-held)
		}
		return
	}
	s.chargeOwed(p, held)
	p.cs.loop.post(p)
}

// chargeOwed counts p's reply against its connection's output limit, or
// drops it when the limit is reached (any goroutine); held bytes counted
// already for it (finishHeld) are uncounted in the same step.
func (s *Server) chargeOwed(p *pending, held int64) {
	limit := s.cfg.MaxOutputBytes
	if limit <= 0 || len(p.reply) == 0 || p.keep {
		if held != 0 {
			p.cs.owed.Add(-held)
		}
	}
	if limit <= 0 || len(p.reply) == 0 {
		return
	}
	if p.keep {
		// The front: its reply leaves at its delivery, and the replies
		// owed behind it cannot leave before it. Counting it could make
		// one of them, which cannot be read again, close the connection.
		return
	}
	n := int64(len(p.reply))
	if p.readReply != nil && !p.failed {
		// A single-key read behind the front takes at most half of the
		// limit, leaving the rest to replies that cannot be produced
		// again; past it the read runs again later: that costs a store
		// read, where closing would cost the client its connection for
		// reading too slowly what it pipelined. A failed read's reply is
		// small and kept: it was counted in kv_errors_total when encoded,
		// and dropped it would be an error counted that no client saw (or
		// counted twice, if the second read failed too).
		if p.cs.owed.Add(n) > int64(limit/2) {
			p.cs.owed.Add(-n)
			p.redo, p.dropped, p.reply = true, len(p.reply), nil
			return
		}
		p.owed = n
		return
	}
	if p.cs.owed.Add(n-held) > int64(limit) {
		p.cs.owed.Add(-n)
		p.cs.overflow.Store(true)
		p.reply = nil
		return
	}
	p.owed = n
}

// settle runs on the loop right after the store call returned: an inline
// answer is emitted now, an async one takes its place in the queue.
func (s *Server) settle(p *pending) {
	cs := p.cs
	// Counted before the completion can be seen (tryDirect uncounts it).
	s.inflight.Add(1)
	if p.state.CompareAndSwap(stateRunning, stateAsync) {
		cs.push(p)
		cs.count(p.class, 1)
		cs.writeBytes += p.bytes
		cs.offerDirect(p)
		return
	}
	s.inflight.Add(-1)
	p.done = true
	s.observe(p)
	s.emit(cs, p.reply)
}

// emit queues an immediate reply behind any pending ones.
func (s *Server) emit(cs *conn, reply []byte) {
	if cs.q.len() == 0 {
		cs.out = append(cs.out, reply...)
		return
	}
	p := &pending{cs: cs, reply: reply, class: classNone, done: true}
	cs.push(p)
	cs.queueReady(p)
}

// push queues p behind cs's pending replies, withdrawing any offer first.
func (cs *conn) push(p *pending) {
	cs.withdraw()
	cs.q.push(p)
}

// offerDirect lets p's completion write its reply to the socket itself
// (tryDirect) instead of waking the loop to do it: for a client that waits
// for each reply, a durable write then costs the loop no extra wake-up,
// and the committer that made it durable sends the reply. Offered only
// when p is the connection's one pending request with nothing buffered
// for the socket, so no reply is owed ahead of it; from then on the loop
// writes nothing to the socket until p is done, unless it first withdraws
// the offer (push, park, close).
//
// At most maxOffers offers are out at once, server-wide: a completing
// goroutine writes the replies of its whole group one after another (the
// committer after an fsync, before it can start the next), so with
// hundreds of waiting clients the loops, two at a time, are the faster
// writers. Measured (kvbench -clients 512 -ops put, sync=always): without
// the bound 73-77K puts/s against 80-84K before direct replies.
func (cs *conn) offerDirect(p *pending) {
	if cs.q.len() != 1 || cs.q.front() != p || len(cs.out) != 0 || cs.parked || cs.closing || cs.closed ||
		cs.c.OutboundBuffered() != 0 {
		return
	}
	s := cs.loop.s
	cs.dmu.Lock()
	if cs.offer == nil && !s.takeOffer() {
		cs.dmu.Unlock()
		return
	}
	cs.offer = p
	cs.dmu.Unlock()
	cs.grant = p
}

// maxOffers bounds the direct-reply offers out at once (offerDirect).
const maxOffers = 32

// takeOffer reserves one of the maxOffers offers.
func (s *Server) takeOffer() bool {
	for {
		n := s.offers.Load()
		if n >= maxOffers {
			return false
		}
		if s.offers.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// dropOffer clears cs's offer, if any, and returns it to the pool. cs.dmu
// must be held.
func (cs *conn) dropOffer() {
	if cs.offer != nil {
		cs.offer = nil
		cs.loop.s.offers.Add(-1)
	}
}

// withdraw takes back an offer the loop may still have out. A completion
// that used it already has its request in the loop's mail (postDirect
// runs under dmu), so the caller's next retire finds it.
func (cs *conn) withdraw() {
	if cs.grant == nil {
		return
	}
	cs.dmu.Lock()
	cs.dropOffer()
	cs.dmu.Unlock()
	cs.grant = nil
}

// tryDirect runs on the completing goroutine: if p holds its connection's
// offer, it writes p's reply to the socket and hands p to the loop for
// retiring only. dmu keeps the fd open meanwhile: gnet closes it only
// after OnClose, which takes dmu. A short write leaves the rest of the
// reply for the loop, which has written nothing since, so order holds.
func (s *Server) tryDirect(p *pending) bool {
	cs := p.cs
	cs.dmu.Lock()
	defer cs.dmu.Unlock()
	if cs.offer != p || cs.gone {
		return false
	}
	cs.dropOffer()
	n, err := unix.Write(cs.fd, p.reply)
	if n > 0 {
		cs.loop.stats.bytesOut.Add(uint64(n))
	}
	if err != nil || n < len(p.reply) {
		if n > 0 {
			p.reply = p.reply[n:]
		}
		return false
	}
	p.reply, p.direct = nil, true
	s.observeAt(p, time.Now().UnixNano())
	cs.loop.stats.direct.Add(1)
	s.inflight.Add(-1)
	cs.loop.postDirect(p)
	return true
}

// addrString renders a peer address for logs (a net.Addr would be logged
// as an object by the JSON handler).
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// remoteAddr is the client's address for logs: behind a TLS bridge, that
// of the TLS connection, not the socketpair's.
func (cs *conn) remoteAddr() string {
	if cs.tls != nil {
		return addrString(cs.tls.remote) + " (tls)"
	}
	return addrString(cs.c.RemoteAddr())
}
