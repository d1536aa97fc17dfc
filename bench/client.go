package bench

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/kvstore/kv/shard"
)

// Versions a verifying client remembers per key. Real versions count up
// from prefillVersion.
const (
	verUnknown = 0              // not written by this run: not checked until it is
	verDeleted = math.MaxUint32 // deleted by this run: a get must find nothing
	// verInDoubt: a write to the key failed, so it may have been applied,
	// or may still be (a timed-out request the server has yet to execute,
	// a write whose error reply was sent after it was logged). Later
	// writes do not make the key's value known again: not checked for the
	// rest of the run.
	verInDoubt = math.MaxUint32 - 1
)

// slot is one request in flight. Replies come back in request order, so
// the slots form a FIFO ring and a reply always belongs to the oldest.
type slot struct {
	start    int64  // latency origin, ns since the phase began: the scheduled time (open loop) or the send time
	sent     int64  // when it was written, for -timeout
	key      uint64 // the key, or the first key of a batch
	expect   uint32 // get under -verify: version expected
	op       Op
	measured bool // started after the warmup
}

// liveCounters are read by the progress line while the client runs; each
// client has its own, padded to a cache line, so counting never contends.
type liveCounters struct {
	done     atomic.Int64 // completed requests, warmup and prefill included
	measured atomic.Int64 // completed measured requests
	_        [48]byte
}

// phase is what differs between the prefill and the measured run.
type phase struct {
	prefill  bool
	depth    int   // requests in flight
	warmupNs int64 // requests starting earlier are not measured
	endNs    int64 // no request starts at or after this; 0 = no time limit
	openLoop bool
}

// client drives one connection from one goroutine: it writes every request
// that is due in one write, reads whatever replies have arrived in one read,
// and matches them in order. Nothing on that path allocates: requests are
// encoded into a reused buffer, keys are formatted into it, values are
// slices of the shared pool, latencies go to histograms the client owns.
//
// Open loop: request k of client i of C is due at (i + k·C)/rate seconds,
// so the whole run sends at rate, evenly spaced. A request that cannot be
// sent on time (all depth slots busy because the server is slow) is sent
// as soon as a slot frees, but its latency still counts from when it was
// due. That is the point: a server that stalls for a second shows a
// second of latency on every request that should have been sent during
// the stall, not just on the one that was in flight (coordinated omission).
//
// Routed (Config.Route against a cluster), a client works on one shard:
// it draws only keys of that shard and talks to the shard's leader,
// following it when it moves.
type client struct {
	r     *runner
	id    int
	addr  string
	shard uint64 // routed: the shard whose keys the client draws; 0 = any key
	// moveTo, routed, is the address of the shard's new leader: the client
	// sends nothing more until its requests in flight are answered, then
	// connects there.
	moveTo string
	conn   atomic.Pointer[net.Conn] // swapped on reconnect; read by the runner to wake the client
	idle   atomic.Bool              // open loop: blocked in a read while the next request may be sent; the pacer wakes it when due
	w      wire
	rng    *rand.Rand
	ph     phase

	wbuf     []byte
	rbuf     []byte
	rlo, rhi int // unconsumed replies are rbuf[rlo:rhi], starting at a reply boundary

	ring    []slot
	head, n int
	rdl     int64 // read deadline in force, ns since the phase began; 0 = none
	wdl     int64 // write deadline in force

	next     int64 // open loop: when request k is due
	k        int64
	offset   float64
	tokens   int64 // requests claimed from runner.remaining, not yet sent
	stopping bool  // sends no more; exits once nothing is in flight
	pfNext   uint64

	version uint32
	last    []uint32 // -verify: version of each owned key (index key/clients)
	keyBuf  []byte
	valBuf  []byte
	kvs     [][]byte

	hist    [numOps]*hdr.PackedHistogram
	lag     *hdr.PackedHistogram // open loop: send time minus due time
	count   [numOps]int64        // measured successes
	errs    [numOps]int64        // measured failures (runner.errCount has them all)
	misses  [numOps]int64        // measured gets that found nothing
	clamped int64
	unsent  int64 // open loop: due requests abandoned at the end
	iv      *interval
	live    liveCounters
	endedAt int64
	// ranToEnd: open loop, the schedule reached the end of the phase, so
	// the client's time runs to the end even if it stops a little before.
	ranToEnd bool
}

func newClient(r *runner, id int) *client {
	cfg := &r.cfg
	c := &client{
		r:       r,
		id:      id,
		addr:    cfg.Addrs[id%len(cfg.Addrs)],
		shard:   r.clientShard(id),
		w:       newWire(cfg.Proto, cfg.RangeLimit),
		rng:     rand.New(rand.NewPCG(cfg.Seed, uint64(id)+1)),
		rbuf:    make([]byte, 16<<10), // grows when a reply needs more
		ring:    make([]slot, max(cfg.Pipeline, prefillDepth)),
		version: prefillVersion,
		keyBuf:  make([]byte, 0, keyLen*cfg.BatchSize),
		kvs:     make([][]byte, 0, 2*cfg.BatchSize),
		iv:      &interval{sec: -1, hist: newPacked()},
	}
	if a := c.leaderAddr(); a != "" {
		c.addr = a
	}
	if cfg.Verify {
		c.last = make([]uint32, c.owned())
		if cfg.Mix.Has(OpBatch) {
			c.valBuf = make([]byte, 0, cfg.BatchSize*cfg.ValueSize.Max)
		} else {
			c.valBuf = make([]byte, 0, cfg.ValueSize.Max)
		}
	}
	for _, op := range cfg.Mix.ops {
		c.hist[op] = newPacked()
	}
	if cfg.Rate > 0 {
		c.lag = newPacked()
	}
	return c
}

func (c *client) now() int64 { return int64(time.Since(c.r.base)) }

// startPhase resets the per-phase state; the connection is kept.
func (c *client) startPhase(ph phase) {
	c.ph = ph
	c.stopping = false
	c.ranToEnd = false
	c.rdl, c.wdl = 0, 0
	c.tokens = 0
	if ph.openLoop {
		c.offset = float64(c.id) * 1e9 / c.r.cfg.Rate
		c.k = 0
		c.next = int64(c.offset)
	}
}

// run is the client's goroutine for one phase.
func (c *client) run() {
	defer c.finish()
	for !c.r.aborted.Load() {
		if c.shard != 0 && !c.follow() {
			return
		}
		now := c.now()
		c.fill(now)
		if len(c.wbuf) > 0 {
			if err := c.flush(); err != nil {
				if !c.reconnect(fmt.Errorf("write to %s: %w", c.addr, err)) {
					return
				}
				continue
			}
		}
		if c.n == 0 && c.stopping {
			return
		}
		if !c.await() {
			return
		}
	}
}

// fill encodes every request that may start now into wbuf.
func (c *client) fill(now int64) {
	ph := &c.ph
	for c.n < ph.depth && !c.stopping && c.moveTo == "" {
		start := now
		if ph.openLoop {
			// The end is checked before waiting for the next due time: a
			// client whose next request falls due after the end stops now
			// rather than idle until then, which stretched the measured
			// time (and cut the achieved rate) by up to clients/rate.
			if ph.endNs > 0 && c.next >= ph.endNs {
				c.stopping = true
				c.ranToEnd = true
				return
			}
			if c.countUsedUp() {
				// -n is used up: stop now, not at the next due time.
				c.stopping = true
				return
			}
			if c.next > now {
				return
			}
			if ph.endNs > 0 && now >= ph.endNs+int64(c.r.cfg.Timeout) {
				// Hopelessly behind: stop rather than drain forever, and
				// say how many due requests were never sent.
				c.abandonSchedule()
				c.stopping = true
				return
			}
			start = c.next
			c.k++
			c.next = int64(c.offset + float64(c.k)*c.r.intervalNs)
		} else if ph.endNs > 0 && now >= ph.endNs {
			c.stopping = true
			return
		}
		measured := !ph.prefill && start >= ph.warmupNs
		if measured && c.r.cfg.Total > 0 && !c.claim() {
			c.stopping = true
			return
		}
		if ph.prefill && c.pfNext >= c.prefillCount() {
			c.stopping = true
			return
		}
		c.issue(start, measured)
	}
}

// abandonSchedule counts the measured requests still due before the end
// (open loop with a duration) as unsent, because the client will not send
// them, and moves the schedule past the end so they are counted once.
func (c *client) abandonSchedule() {
	ph := &c.ph
	if !ph.openLoop || ph.endNs <= 0 || c.next >= ph.endNs {
		return
	}
	// dueBefore is how many of the client's requests are due before t.
	dueBefore := func(t int64) int64 {
		return max(int64(math.Ceil((float64(t)-c.offset)/c.r.intervalNs)), 0)
	}
	first := max(c.k, dueBefore(ph.warmupNs)) // the next measured one
	c.unsent += max(dueBefore(ph.endNs)-first, 0)
	c.next = ph.endNs
}

// countUsedUp reports whether an open-loop client's next request would be
// measured but none of the -n requests is left for it.
func (c *client) countUsedUp() bool {
	return c.r.cfg.Total > 0 && !c.ph.prefill && c.next >= c.ph.warmupNs &&
		c.tokens == 0 && c.r.remaining.Load() <= 0
}

// claim takes one of the -n requests, a few at a time from the shared count.
func (c *client) claim() bool {
	if c.tokens == 0 {
		c.tokens = c.r.claim(c.r.claimChunk)
		if c.tokens == 0 {
			return false
		}
	}
	c.tokens--
	return true
}

// issue encodes one request and queues its slot.
func (c *client) issue(start int64, measured bool) {
	cfg := &c.r.cfg
	var op Op
	var k uint64
	if c.ph.prefill {
		// Prefill splits the keys by client whether or not it verifies:
		// client i writes keys i, i+C, i+2C, ... (its own keys under -verify).
		op = OpPut
		k = c.pfNext*uint64(cfg.Clients) + uint64(c.id)
		c.pfNext++
	} else {
		op = cfg.Mix.Pick(c.rng)
		k = c.pick()
	}
	s := slot{op: op, key: k, start: start, measured: measured}
	c.keyBuf = appendKey(c.keyBuf[:0], k)
	key := c.keyBuf
	switch op {
	case OpPut:
		c.wbuf = c.w.appendPut(c.wbuf, key, c.putValue(k, 0))
	case OpGet:
		if cfg.Verify {
			s.expect = c.last[c.ownIndex(k)]
		}
		c.wbuf = c.w.appendGet(c.wbuf, key)
	case OpDelete:
		if cfg.Verify && c.last[c.ownIndex(k)] != verInDoubt {
			c.last[c.ownIndex(k)] = verDeleted
		}
		c.wbuf = c.w.appendDelete(c.wbuf, key)
	case OpRange:
		c.wbuf = c.w.appendRange(c.wbuf, key)
	case OpBatch:
		c.kvs = c.kvs[:0]
		c.keyBuf = c.keyBuf[:0]
		if cfg.Verify {
			c.valBuf = c.valBuf[:0]
		}
		for j := range cfg.BatchSize {
			kj := c.nthKey(k, j)
			ks := len(c.keyBuf)
			c.keyBuf = appendKey(c.keyBuf, kj)
			c.kvs = append(c.kvs, c.keyBuf[ks:], c.putValue(kj, j))
		}
		c.wbuf = c.w.appendBatch(c.wbuf, c.kvs)
	case OpPing:
		c.wbuf = c.w.appendPing(c.wbuf)
	}
	c.ring[(c.head+c.n)%len(c.ring)] = s
	c.n++
}

// pick draws the key of the next request: from the key distribution, the
// client's own keys under -verify, and routed only keys of the client's
// shard (the distribution conditioned on the shard; a shard with almost
// none of the keys gives up after pickTries and takes the last draw).
func (c *client) pick() uint64 {
	cfg := &c.r.cfg
	var k uint64
	for range pickTries {
		k = c.r.keys.pick(c.rng)
		if cfg.Verify {
			k = ownKey(k, cfg.Keys, c.id, cfg.Clients)
		}
		if c.shard == 0 {
			return k
		}
		c.keyBuf = appendKey(c.keyBuf[:0], k)
		if shard.Of(c.keyBuf, c.r.route.Load().shards) == c.shard {
			return k
		}
	}
	return k
}

// putValue returns the value to write to key k. Under -verify it takes a
// new version, remembers it, and stamps it into the j-th part of valBuf
// (a batch needs each value to stay put until it is encoded).
func (c *client) putValue(k uint64, j int) []byte {
	if !c.r.cfg.Verify {
		c.version++
		return c.r.values.value(k, c.version)
	}
	v := prefillVersion
	if !c.ph.prefill {
		c.version++
		if c.version >= verInDoubt {
			c.version = prefillVersion + 1
		}
		v = int(c.version)
	}
	if c.last[c.ownIndex(k)] != verInDoubt {
		c.last[c.ownIndex(k)] = uint32(v)
	}
	maxLen := c.r.cfg.ValueSize.Max
	part := c.valBuf[j*maxLen : j*maxLen : (j+1)*maxLen]
	part = c.r.values.stamped(part, k, uint32(v))
	c.valBuf = c.valBuf[:(j+1)*maxLen]
	return part
}

// flush writes every encoded request. The send time is taken once for the
// whole write; in closed loop it is also the latency origin.
func (c *client) flush() error {
	t := c.now()
	for i := range c.n {
		s := &c.ring[(c.head+i)%len(c.ring)]
		if s.sent != 0 {
			continue
		}
		s.sent = t
		if !c.ph.openLoop {
			s.start = t
		} else if s.measured && c.lag != nil {
			lag, _ := clampLatency(t - s.start)
			_ = c.lag.RecordValue(lag)
		}
	}
	if t+int64(c.r.cfg.Timeout)/2 > c.wdl {
		c.wdl = t + int64(c.r.cfg.Timeout)
		if err := c.getConn().SetWriteDeadline(c.r.base.Add(time.Duration(c.wdl))); err != nil {
			return err
		}
	}
	_, err := c.getConn().Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

func (c *client) getConn() net.Conn { return *c.conn.Load() }

// await waits for replies, or until the next request is due, and handles
// what arrived. It returns false when the client must stop.
func (c *client) await() bool {
	timeout := int64(c.r.cfg.Timeout)
	var want int64 = math.MaxInt64
	if c.n > 0 {
		want = c.ring[c.head].sent + timeout
	}
	canSend := c.ph.openLoop && !c.stopping && c.n < c.ph.depth
	if canSend {
		want = min(want, c.next)
		c.idle.Store(true)
		defer c.idle.Store(false)
	}
	if want == math.MaxInt64 {
		return false // nothing in flight and nothing due: cannot happen while running
	}
	// A deadline later than needed only costs a spurious wake-up, so the
	// deadline is moved only when it must come earlier or has passed.
	now := c.now()
	if want < c.rdl || c.rdl <= now {
		c.rdl = want
		if err := c.getConn().SetReadDeadline(c.r.base.Add(time.Duration(want))); err != nil {
			return c.reconnect(err)
		}
	}
	// The runner (abort) and the pacer set a deadline in the past to wake
	// the client. Checking after our own deadline is set means either we
	// see why they woke us, or their deadline lands after ours and the read
	// returns at once.
	if c.r.aborted.Load() {
		return false
	}
	if canSend && (c.now() >= c.next || c.countUsedUp()) {
		return true // the claim that used -n up may have missed idle
	}
	if c.rhi == len(c.rbuf) {
		if c.rlo > 0 {
			c.rhi = copy(c.rbuf, c.rbuf[c.rlo:c.rhi])
			c.rlo = 0
		} else {
			c.rbuf = append(c.rbuf, make([]byte, len(c.rbuf))...)
		}
	}
	nr, err := c.getConn().Read(c.rbuf[c.rhi:])
	now = c.now()
	if nr > 0 {
		c.rhi += nr
		if perr := c.process(now); perr != nil {
			return c.reconnect(perr)
		}
	}
	if err == nil {
		return true
	}
	if c.r.aborted.Load() {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.rdl = 0 // someone else may have moved it: set it again next time
		if c.n > 0 && now-c.ring[c.head].sent >= timeout {
			return c.reconnect(fmt.Errorf("%v: no reply from %s within %v", c.ring[c.head].op, c.addr, c.r.cfg.Timeout))
		}
		return true
	}
	return c.reconnect(fmt.Errorf("read from %s: %w", c.addr, err))
}

// process matches every whole reply buffered to its request.
func (c *client) process(now int64) error {
	var done, measured int64
	for c.rlo < c.rhi {
		rep, n, err := c.w.decode(c.rbuf[c.rlo:c.rhi])
		if err != nil {
			return fmt.Errorf("bad reply from %s: %w", c.addr, err)
		}
		if n == 0 {
			break
		}
		c.rlo += n
		if rep.kind == replySkip {
			continue
		}
		if c.n == 0 {
			return fmt.Errorf("reply from %s with no request in flight", c.addr)
		}
		if c.complete(rep, now) {
			measured++
		}
		done++
	}
	if c.rlo == c.rhi {
		c.rlo, c.rhi = 0, 0
	}
	if done > 0 {
		c.live.done.Add(done)
		c.live.measured.Add(measured)
	}
	return nil
}

// complete handles the reply to the oldest request; it reports whether a
// measured request succeeded.
func (c *client) complete(rep reply, now int64) bool {
	s := c.ring[c.head]
	c.ring[c.head].sent = 0
	c.head = (c.head + 1) % len(c.ring)
	c.n--
	if !accepts(s.op, rep.kind) {
		c.fail(&s, now, describeReply(s.op, rep))
		return false
	}
	if s.op == OpGet && c.r.cfg.Verify && !c.ph.prefill {
		if msg := c.verify(&s, rep); msg != "" {
			c.fail(&s, now, msg)
			return false
		}
	}
	if !s.measured {
		return false
	}
	if s.op == OpGet && rep.kind == replyNotFound {
		c.misses[OpGet]++
	}
	lat, clamped := clampLatency(now - s.start)
	if clamped {
		c.clamped++
	}
	_ = c.hist[s.op].RecordValue(lat)
	c.count[s.op]++
	iv := c.intervalAt(now)
	_ = iv.hist.RecordValue(lat)
	iv.counts[s.op]++
	return true
}

// intervalAt returns the interval of the measured second holding now,
// handing the previous one to the collector when the second changes.
func (c *client) intervalAt(now int64) *interval {
	sec := (now - c.ph.warmupNs) / int64(time.Second)
	if c.iv.sec != sec {
		c.flushInterval()
		c.iv.sec = sec
	}
	return c.iv
}

func (c *client) flushInterval() {
	if c.iv.sec < 0 || c.iv.empty() {
		return
	}
	c.r.ivs <- c.iv
	c.iv = c.r.newInterval()
}

// finish hands the last interval over and notes when the client stopped.
func (c *client) finish() {
	c.flushInterval()
	c.endedAt = c.now()
	if c.ranToEnd {
		c.endedAt = max(c.endedAt, c.ph.endNs)
	}
}
