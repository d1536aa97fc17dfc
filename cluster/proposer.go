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
	// together in the next proposal: that is the group commit.
	maxInflightProposals = 8
	// maxProposalBytes stops adding writes to a proposal; a single larger
	// write still goes alone.
	maxProposalBytes = 4 << 20
	// retry backoff after a temporary refusal (no leader, busy).
	minRetryBackoff = 2 * time.Millisecond
	maxRetryBackoff = 50 * time.Millisecond
)

// writeOp is one queued change to a shard: the part of a Write call that
// falls in the shard (cmdWrite), or a whole command of another kind.
type writeOp struct {
	kind     byte
	data     []byte // batch repr (cmdWrite) or the whole command
	count    int    // operations in the batch
	deadline time.Time
	done     func(error)
}

// proposal is one raft proposal in flight and the writes it carries.
type proposal struct {
	ops   []*writeOp
	rs    *dragonboat.RequestState
	watch <-chan struct{} // the shard's leader-change signal at propose time
}

// proposer turns the writes queued for one shard into raft proposals.
//
// One goroutine (run) proposes, in queue order, everything queued since
// its last proposal, as long as fewer than maxInflightProposals are out; a
// second goroutine (wait) collects the results in proposal order and
// completes the writes. A proposal dragonboat dropped (no leader yet) never
// entered the log, so its writes go back to the front of the queue; any
// other unanswered proposal may still commit, so its writes fail with
// store.ErrTimeout.
type proposer struct {
	c       *Cluster
	shard   uint64
	session *client.Session
	leader  *shardLeader

	mu      sync.Mutex
	queue   []*writeOp
	stopped bool
	// lastRefusal says why queued writes are waiting, for the error they
	// get if their deadline passes first.
	lastRefusal error

	wake     chan struct{}  // cap 1: something was queued
	slots    chan struct{}  // a token per proposal in flight
	inflight chan *proposal // run -> wait, in proposal order
	merger   batchMerger
}

func newProposer(c *Cluster, shard uint64) *proposer {
	return &proposer{
		c:        c,
		shard:    shard,
		session:  c.nh.GetNoOPSession(shard),
		leader:   &c.leaders[shard-1],
		wake:     make(chan struct{}, 1),
		slots:    make(chan struct{}, maxInflightProposals),
		inflight: make(chan *proposal, maxInflightProposals),
	}
}

// enqueue adds op to the queue; it never blocks.
func (p *proposer) enqueue(op *writeOp) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		op.done(errClosed)
		return
	}
	p.queue = append(p.queue, op)
	p.mu.Unlock()
	p.signal()
}

func (p *proposer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// requeue puts the ops of a dropped proposal back at the front.
func (p *proposer) requeue(ops []*writeOp, why error) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		for _, op := range ops {
			op.done(errClosed)
		}
		return
	}
	p.queue = append(ops[:len(ops):len(ops)], p.queue...)
	p.lastRefusal = why
	p.mu.Unlock()
	p.signal()
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
	p.c.waiters.Add(1)
	go p.wait()
	defer close(p.inflight)
	for {
		select {
		case <-p.wake:
		case <-p.c.stop:
			p.shutdown()
			return
		}
		for {
			select {
			case p.slots <- struct{}{}:
			case <-p.c.stop:
				p.shutdown()
				return
			}
			ops := p.take()
			if len(ops) == 0 {
				<-p.slots
				break
			}
			if !p.propose(ops) {
				p.shutdown()
				return
			}
		}
	}
}

// shutdown fails everything still queued.
func (p *proposer) shutdown() {
	p.mu.Lock()
	p.stopped = true
	ops := p.queue
	p.queue = nil
	p.mu.Unlock()
	for _, op := range ops {
		op.done(errClosed)
	}
}

// command encodes ops as one raft command.
func (p *proposer) command(ops []*writeOp) []byte {
	if ops[0].kind != cmdWrite {
		return ops[0].data
	}
	p.merger.reset()
	for _, op := range ops {
		p.merger.add(op.data, op.count)
	}
	return p.merger.command()
}

// propose hands ops to dragonboat, retrying temporary refusals until the
// ops' deadlines; it holds one slot, which passes to the waiter on
// success. It reports false when the node is stopping.
func (p *proposer) propose(ops []*writeOp) bool {
	backoff := minRetryBackoff
	var refusal error
	for {
		ops = p.expire(ops, refusal)
		if len(ops) == 0 {
			<-p.slots
			return true
		}
		// Ops leave the queue in order, so the first has the earliest
		// deadline; the proposal may not outlive it.
		timeout := time.Until(ops[0].deadline)
		if timeout < p.c.minTimeout() {
			refusal = p.refusalOr(refusal)
			p.failAll(ops, refusal)
			<-p.slots
			return true
		}
		watch := p.leader.watch()
		rs, err := p.c.nh.Propose(p.session, p.command(ops), timeout)
		if err == nil {
			p.inflight <- &proposal{ops: ops, rs: rs, watch: watch}
			return true
		}
		switch {
		case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized):
			refusal = errNoLeader(p.shard)
		case errors.Is(err, dragonboat.ErrSystemBusy):
			refusal = fmt.Errorf("cluster unavailable: shard %d is overloaded", p.shard)
		case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
			p.failAll(ops, errClosed)
			<-p.slots
			return false
		default:
			p.failAll(ops, p.c.mapError(p.shard, err))
			<-p.slots
			return true
		}
		if p.c.sleepOrStop(backoff, watch) {
			p.failAll(ops, errClosed)
			<-p.slots
			return false
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// refusalOr returns why, or the last refusal recorded for requeued ops,
// or a generic timeout: the op never entered the log either way.
func (p *proposer) refusalOr(why error) error {
	if why != nil {
		return why
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastRefusal != nil {
		return p.lastRefusal
	}
	return fmt.Errorf("cluster unavailable: shard %d did not accept the write in time", p.shard)
}

// expire fails ops whose deadline passed before they were proposed (they
// were never in the log) and returns the rest.
func (p *proposer) expire(ops []*writeOp, why error) []*writeOp {
	now := time.Now()
	keep := ops[:0]
	for _, op := range ops {
		if now.Before(op.deadline) {
			keep = append(keep, op)
			continue
		}
		op.done(p.refusalOr(why))
	}
	return keep
}

func (p *proposer) failAll(ops []*writeOp, err error) {
	for _, op := range ops {
		op.done(err)
	}
}

// wait completes proposals in the order they were made.
func (p *proposer) wait() {
	defer p.c.waiters.Done()
	for pr := range p.inflight {
		p.await(pr)
		<-p.slots
	}
}

func (p *proposer) await(pr *proposal) {
	var grace <-chan time.Time
	watch := pr.watch
	for {
		select {
		case r := <-pr.rs.ResultC():
			p.finish(pr, r)
			pr.rs.Release()
			return
		case <-watch:
			// The leader changed after the proposal: if it went to a
			// leader that died, no answer will ever come.
			watch = nil
			t := time.NewTimer(p.c.abandonAfter)
			defer t.Stop()
			grace = t.C
		case <-grace:
			p.failAll(pr.ops, fmt.Errorf("%w (leader of shard %d changed)", store.ErrTimeout, p.shard))
			return
		}
	}
}

// finish completes the ops of an answered proposal.
func (p *proposer) finish(pr *proposal, r dragonboat.RequestResult) {
	switch {
	case r.Completed():
		p.mu.Lock()
		p.lastRefusal = nil
		p.mu.Unlock()
		if r.GetResult().Value == resultApplied {
			p.failAll(pr.ops, nil)
		} else {
			p.failAll(pr.ops, fmt.Errorf("storage unavailable: shard %d rejected a malformed command", p.shard))
		}
	case r.Dropped():
		// Never entered the log: safe to propose again, after a pause
		// (or as soon as a leader is known).
		p.c.sleepOrStop(minRetryBackoff*5, p.leader.watch())
		p.requeue(pr.ops, errNoLeader(p.shard))
	case r.Timeout():
		p.failAll(pr.ops, store.ErrTimeout)
	case r.Terminated():
		p.failAll(pr.ops, fmt.Errorf("%w (node shutting down)", store.ErrTimeout))
	default:
		p.failAll(pr.ops, fmt.Errorf("cluster unavailable: shard %d refused the write", p.shard))
	}
}

// minTimeout is the shortest timeout dragonboat accepts: one tick.
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
	case errors.Is(err, dragonboat.ErrShardNotFound):
		return fmt.Errorf("cluster unavailable: shard %d is not hosted on this node", shard)
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return fmt.Errorf("request too large for shard %d", shard)
	case errors.Is(err, dragonboat.ErrTimeout):
		return store.ErrTimeout
	}
	return fmt.Errorf("cluster unavailable: shard %d: %v", shard, err)
}
