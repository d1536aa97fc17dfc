package cluster

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"

	"github.com/kvstore/kv/store"
)

// Proposal pipeline limits, per shard.
const (
	// maxInflightProposals is how many proposals of one shard may await
	// their result at once. While all are out, writes queue up and leave
	// together in the next proposal: that is the group commit. Two keeps
	// the pipe busy while making proposals large: with 512 writers on
	// three nodes, 1 or 2 cost 25% less CPU per write than 8 and gave
	// 40% more throughput on two cores; at 64 writers they were even.
	maxInflightProposals = 2
	// maxProposalBytes stops adding writes to a proposal; a single larger
	// write still goes alone.
	maxProposalBytes = 4 << 20
	// retry backoff after a temporary refusal (no leader, busy).
	minRetryBackoff = 2 * time.Millisecond
	maxRetryBackoff = 50 * time.Millisecond
	// A forwarded proposal's attempt of at most maxRecheckBytes that is
	// still unanswered after minRecheck (or the election timeout, if
	// longer) is sent again, then after twice that, and so on while that
	// is shorter than the attempt timeout (recheck).
	maxRecheckBytes = 64 << 10
	minRecheck      = 500 * time.Millisecond
)

// writeOp is one queued change to a shard: the part of a Write call that
// falls in the shard (cmdWrite, data is a batch repr), or a command of
// another kind (data is its body).
type writeOp struct {
	kind     byte
	data     []byte
	count    int // operations in a cmdWrite batch
	deadline time.Time
	done     func(error)
}

// proposal is one raft command of the proposer and the writes it carries.
type proposal struct {
	seq      uint64
	cmd      []byte
	ops      []*writeOp
	deadline time.Time // of its oldest op
	// grace, once the deadline passed with an attempt still out, is how
	// long that attempt's answer is awaited before the outcome is unknown.
	grace time.Time
	rs    *dragonboat.RequestState // the attempt in flight, if any
	// abandoned says an earlier attempt was left without a definite
	// answer (timed out, or dropped from sight at a leader change): it
	// may still commit, so giving up now means an unknown outcome.
	abandoned bool
	// recheckAt, if set, is when the current attempt, forwarded to another
	// node's leader, is sent again if still unanswered (recheck).
	recheckAt time.Time
	rechecks  int // early re-sends so far
}

// proposer turns the writes queued for one shard into raft proposals, in
// queue order, and completes them.
//
// One goroutine (run) does everything: it packs every op queued since the
// last proposal into the next one (as long as fewer than
// maxInflightProposals are out: that is the group commit), proposes, and
// waits for the oldest proposal's result. Proposals carry (proposer, seq,
// floor) and the state machine applies each seq once and in order (see
// seqState), so an attempt that went nowhere can simply be sent again:
// after a dropped or timed-out attempt, or when the shard's leader changes
// (a proposal forwarded to a leader that died is never answered), every
// proposal in flight is re-sent in seq order. A proposal still unconfirmed
// at its deadline is given up: its writes fail with store.ErrTimeout
// (outcome unknown), and later proposals carry a floor past it.
type proposer struct {
	c       *Cluster
	shard   uint64
	id      uint64 // proposer id, random per process
	session *client.Session
	leader  *shardLeader

	mu      sync.Mutex
	queue   []*writeOp
	stopped bool
	wake    chan struct{} // cap 1: something was queued

	// owned by run
	nextSeq     uint64
	inflight    []*proposal // by seq
	retryAt     time.Time   // no sends before, after a refusal
	backoff     time.Duration
	lastRefusal error
}

func newProposer(c *Cluster, shard, id uint64) *proposer {
	return &proposer{
		c:       c,
		shard:   shard,
		id:      id,
		session: c.nh.GetNoOPSession(shard),
		leader:  &c.leaders[shard-1],
		wake:    make(chan struct{}, 1),
		backoff: minRetryBackoff,
	}
}

// enqueue adds op to the queue; it never blocks.
func (p *proposer) enqueue(op *writeOp) {
	if p.leader.failFast() {
		op.done(errNoLeader(p.shard))
		return
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		op.done(errClosed)
		return
	}
	p.queue = append(p.queue, op)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take removes the next proposal's worth of ops from the queue: a run of
// cmdWrite ops up to maxProposalBytes, or one op of another kind.
func (p *proposer) take() []*writeOp {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return nil
	}
	n, size := 0, 0
	for _, op := range p.queue {
		if n > 0 && (op.kind != cmdWrite || p.queue[0].kind != cmdWrite || size+len(op.data) > maxProposalBytes) {
			break
		}
		n++
		size += len(op.data)
	}
	ops := make([]*writeOp, n)
	copy(ops, p.queue)
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
	return ops
}

func (p *proposer) run() {
	defer p.c.loops.Done()
	defer p.shutdown()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	watch := p.leader.watch()
	for {
		p.fill()
		if !p.send() {
			return
		}
		var headC chan dragonboat.RequestResult
		var head *proposal
		if len(p.inflight) > 0 {
			head = p.inflight[0]
			if head.rs != nil {
				headC = head.rs.ResultC()
			}
		}
		var timerC <-chan time.Time
		if wakeAt := p.nextWake(); !wakeAt.IsZero() {
			timer.Reset(time.Until(wakeAt))
			timerC = timer.C
		}
		select {
		case r := <-headC:
			p.handle(head, r)
		case <-p.wake:
		case <-watch:
			watch = p.leader.watch()
			p.resendAll()
			p.retryAt = time.Time{}
		case <-timerC:
			p.recheck(time.Now())
			p.expireHead()
		case <-p.c.stop:
			return
		}
		if timerC != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// nextWake is when run must look again without an event: the oldest
// proposal's deadline, or the end of a retry pause.
func (p *proposer) nextWake() time.Time {
	var t time.Time
	if len(p.inflight) > 0 {
		t = p.inflight[0].deadline
		if head := p.inflight[0]; head.rs != nil && !head.grace.IsZero() {
			t = head.grace
		}
		if !p.retryAt.IsZero() && p.hasUnsent() && p.retryAt.Before(t) {
			t = p.retryAt
		}
		if head := p.inflight[0]; head.rs != nil && !head.recheckAt.IsZero() && head.recheckAt.Before(t) {
			t = head.recheckAt
		}
	}
	return t
}

// recheck sends every proposal in flight again if the oldest one's
// attempt went to another node's leader and is still unanswered at its
// recheckAt. A leader drops the proposals followers forward to it while it
// hands its leadership over (a leader transfer: the balancer's moves, a
// stopping node's hand-off) and tells only its own node; when the transfer
// is given up there is no leader change either, so without this the
// proposer would learn nothing until the attempt timeout (2 s by default).
// A second loss is common: a hand-off repeats failed transfers back to
// back, and a link that failed redials with a backoff; hence the doubling
// delays. Re-sending is safe (the state machine applies each seq once),
// and a cluster that is merely slow pays at most one extra copy of its
// small proposals in flight per recheck before the attempt timeout (two
// with the defaults: at 0.5 s and 1.5 s, then the 2 s timeout).
func (p *proposer) recheck(now time.Time) {
	if len(p.inflight) == 0 {
		return
	}
	head := p.inflight[0]
	if head.rs == nil || head.recheckAt.IsZero() || now.Before(head.recheckAt) {
		return
	}
	head.rechecks++
	p.c.rechecks.Add(1)
	p.resendAll()
}

func (p *proposer) hasUnsent() bool {
	for _, pr := range p.inflight {
		if pr.rs == nil {
			return true
		}
	}
	return false
}

// fill turns queued ops into proposals while there is room in flight.
func (p *proposer) fill() {
	for len(p.inflight) < maxInflightProposals {
		ops := p.take()
		if len(ops) == 0 {
			return
		}
		// Ops that waited past their deadline were never proposed.
		now := time.Now()
		live := ops[:0]
		for _, op := range ops {
			if now.Before(op.deadline) {
				live = append(live, op)
			} else {
				op.done(p.refusal(op.deadline))
			}
		}
		if len(live) == 0 {
			continue
		}
		pr := &proposal{seq: p.nextSeq, ops: live, deadline: live[0].deadline}
		p.nextSeq++
		h := cmdHeader{kind: live[0].kind, proposer: p.id, seq: pr.seq}
		if h.kind == cmdWrite {
			size := 0
			for _, op := range live {
				size += len(op.data)
			}
			var m batchMerger
			m.reset(h, size)
			for _, op := range live {
				m.add(op.data, op.count)
			}
			pr.cmd = m.command()
		} else {
			pr.cmd = append(appendHeader(nil, h), live[0].data...)
		}
		p.inflight = append(p.inflight, pr)
	}
}

// floor is the lowest seq not yet resolved: every seq below it was
// completed or given up.
func (p *proposer) floor() uint64 {
	if len(p.inflight) > 0 {
		return p.inflight[0].seq
	}
	return p.nextSeq
}

// send proposes, in seq order, every proposal without an attempt in
// flight, until dragonboat refuses one (then it pauses). It reports false
// when the node is stopping.
func (p *proposer) send() bool {
	now := time.Now()
	if now.Before(p.retryAt) {
		return true
	}
	for i := 0; i < len(p.inflight); i++ {
		pr := p.inflight[i]
		if pr.rs != nil {
			continue
		}
		left := time.Until(pr.deadline)
		if left < p.c.minTimeout() {
			// Too late for an attempt to get an answer: one sent now would
			// most likely still be out at the deadline, which makes the
			// outcome unknown even when it is dropped right after (no
			// leader). Later proposals wait for this one to expire.
			break
		}
		timeout := max(min(p.c.attemptTimeout, left), p.c.minTimeout())
		setFloor(pr.cmd, p.floor())
		rs, err := p.c.nh.Propose(p.session, pr.cmd, timeout)
		if err == nil {
			pr.rs = rs
			pr.recheckAt = time.Time{}
			if d := max(p.c.election, minRecheck) << pr.rechecks; d < p.c.attemptTimeout &&
				len(pr.cmd) <= maxRecheckBytes && p.leader.get() != p.c.nodeID {
				pr.recheckAt = now.Add(d)
			}
			continue
		}
		switch {
		case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized):
			p.pause(errNoLeader(p.shard))
			return true
		case errors.Is(err, dragonboat.ErrSystemBusy):
			p.pause(fmt.Errorf("cluster unavailable: shard %d is overloaded", p.shard))
			return true
		case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
			return false
		default:
			// Refused for good (too large, not hosted here any more): resolved,
			// unless an earlier attempt may still commit (this node was
			// removed while one was forwarded to the leader).
			p.complete(pr, pr.definite(p.c.mapError(p.shard, err)))
			p.inflight = append(p.inflight[:i], p.inflight[i+1:]...)
			i--
		}
	}
	p.backoff = minRetryBackoff
	return true
}

// pause stops sending for a growing while after a temporary refusal.
func (p *proposer) pause(why error) {
	p.lastRefusal = why
	p.retryAt = time.Now().Add(p.backoff)
	p.backoff = min(2*p.backoff, maxRetryBackoff)
}

// refusal is the error of writes that never entered the log, given when
// their deadline passes; without a leader all that time, the shard is
// marked down (shardLeader.failFast).
func (p *proposer) refusal(deadline time.Time) error {
	p.leader.markDown(deadline.Add(-p.c.timeout))
	if p.lastRefusal != nil {
		return p.lastRefusal
	}
	return fmt.Errorf("cluster unavailable: shard %d did not accept the write in time", p.shard)
}

// resendAll drops the current attempts (their results are ignored from now
// on, so their outcome is unknown) so that send proposes every proposal in
// flight again, in order.
func (p *proposer) resendAll() {
	for _, pr := range p.inflight {
		if pr.rs != nil {
			pr.abandoned = true
			pr.rs = nil
		}
	}
}

// handle acts on the result of the oldest proposal's current attempt.
func (p *proposer) handle(head *proposal, r dragonboat.RequestResult) {
	head.rs.Release()
	head.rs = nil
	switch {
	case r.Completed():
		switch r.GetResult().Value {
		case resultApplied, resultDuplicate:
			p.lastRefusal = nil
			p.pop(nil)
		case resultOutOfOrder:
			// An earlier proposal was given up after this one was sent;
			// the re-sent ones carry the floor that skips it.
			p.resendAll()
		default:
			p.pop(fmt.Errorf("storage unavailable: shard %d rejected a malformed command", p.shard))
		}
	case r.Dropped():
		// Never entered the log: no leader at the moment. Try again
		// shortly (sooner if a leader appears, see run).
		p.resendAll()
		p.pause(errNoLeader(p.shard))
	case r.Timeout():
		head.abandoned = true
		p.resendAll()
	case r.Terminated():
		// The node is stopping; shutdown resolves the rest.
		head.abandoned = true
	default:
		p.pop(head.definite(fmt.Errorf("cluster unavailable: shard %d refused the write", p.shard)))
	}
}

// unknown says whether pr might have been applied.
func (pr *proposal) unknown() bool { return pr.abandoned || pr.rs != nil }

// definite returns err, a refusal of pr's latest attempt, as pr's outcome
// when no earlier attempt can still commit, else store.ErrTimeout (the
// protocol's "outcome unknown", word for word).
func (pr *proposal) definite(err error) error {
	if pr.unknown() {
		return store.ErrTimeout
	}
	return err
}

// expireHead gives up the oldest proposal once its deadline passed.
func (p *proposer) expireHead() {
	if len(p.inflight) == 0 {
		return
	}
	head := p.inflight[0]
	now := time.Now()
	if now.Before(head.deadline) || head.rs != nil && now.Before(head.grace) {
		return
	}
	if head.rs != nil {
		// An attempt is still out. Its answer may be ready (run's select
		// picked the deadline) or come with the node's next step (dropped:
		// no leader), a few milliseconds, more on a loaded machine; waiting
		// up to ten ticks for it turns most "outcome unknown" into a
		// definite refusal.
		select {
		case r := <-head.rs.ResultC():
			p.handle(head, r)
			if len(p.inflight) == 0 || p.inflight[0] != head {
				return // resolved by the answer
			}
		default:
			if head.grace.IsZero() {
				head.grace = head.deadline.Add(5 * p.c.minTimeout())
				return
			}
		}
	}
	if head.unknown() {
		p.pop(store.ErrTimeout)
	} else {
		p.pop(p.refusal(head.deadline))
	}
}

// pop resolves the oldest proposal with err.
func (p *proposer) pop(err error) {
	pr := p.inflight[0]
	p.inflight[0] = nil
	p.inflight = p.inflight[1:]
	if len(p.inflight) == 0 {
		p.inflight = nil
	}
	p.complete(pr, err)
}

func (p *proposer) complete(pr *proposal, err error) {
	for _, op := range pr.ops {
		op.done(err)
	}
}

// shutdown fails everything queued (never proposed) and in flight (outcome
// unknown, unless no attempt can still commit).
func (p *proposer) shutdown() {
	p.mu.Lock()
	p.stopped = true
	queued := p.queue
	p.queue = nil
	p.mu.Unlock()
	for _, pr := range p.inflight {
		if pr.unknown() {
			p.complete(pr, fmt.Errorf("%w (node shutting down)", store.ErrTimeout))
		} else {
			p.complete(pr, errClosed)
		}
	}
	p.inflight = nil
	for _, op := range queued {
		op.done(errClosed)
	}
}

// minTimeout is the shortest timeout worth giving dragonboat: two ticks.
func (c *Cluster) minTimeout() time.Duration {
	return 2 * time.Duration(c.cfg.Cluster.RTTMillis) * time.Millisecond
}

// mapError turns a dragonboat error into the reply text of the protocol.
func (c *Cluster) mapError(shard uint64, err error) error {
	switch {
	case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized):
		return errNoLeader(shard)
	case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
		return errClosed
	case errors.Is(err, dragonboat.ErrShardNotFound) && c.removed.Load():
		return c.errRemovedNode()
	case errors.Is(err, dragonboat.ErrShardNotFound):
		return fmt.Errorf("cluster unavailable: shard %d is not hosted on this node", shard)
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return fmt.Errorf("request too large for shard %d", shard)
	}
	return fmt.Errorf("cluster unavailable: shard %d: %v", shard, err)
}
