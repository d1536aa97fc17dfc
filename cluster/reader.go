package cluster

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/kvstore/kv/store"
)

// maxInflightReads is how many ReadIndex rounds of one shard may be out at
// once; reads arriving meanwhile share the next round.
const maxInflightReads = 4

// readReq is one queued linearizable read of a shard.
type readReq struct {
	op       readOp
	deadline time.Time
	getDone  func([]byte, error)     // for a get
	kvDone   func([]store.KV, error) // for a range
}

func (r *readReq) complete(err error) {
	if err == nil {
		err = r.op.err
	}
	if r.op.isRange {
		if errors.Is(err, store.ErrRangeTruncated) {
			r.kvDone(r.op.kvs, err)
			return
		}
		if err != nil {
			r.kvDone(nil, err)
			return
		}
		r.kvDone(r.op.kvs, nil)
		return
	}
	if err != nil {
		r.getDone(nil, err)
		return
	}
	r.getDone(r.op.val, nil)
}

// readRound is one ReadIndex in flight and the reads it will serve.
type readRound struct {
	reqs  []*readReq
	rs    *dragonboat.RequestState
	watch <-chan struct{}
}

// reader serves the linearizable reads of one shard. Reads queue up; one
// goroutine (run) starts a ReadIndex for everything queued, up to
// maxInflightReads rounds at once, and a second (wait) runs each round's
// reads against the local replica once dragonboat says the replica has
// applied everything committed before the round started. Every read in a
// round arrived before its ReadIndex was issued, which is what makes the
// shared round linearizable. Reads are retried freely (they change
// nothing) until their deadline.
type reader struct {
	c      *Cluster
	shard  uint64
	leader *shardLeader

	mu      sync.Mutex
	queue   []*readReq
	stopped bool

	wake     chan struct{}
	slots    chan struct{}
	inflight chan *readRound
}

func newReader(c *Cluster, shard uint64) *reader {
	return &reader{
		c:        c,
		shard:    shard,
		leader:   &c.leaders[shard-1],
		wake:     make(chan struct{}, 1),
		slots:    make(chan struct{}, maxInflightReads),
		inflight: make(chan *readRound, maxInflightReads),
	}
}

func (r *reader) enqueue(req *readReq) {
	if r.leader.failFast() {
		req.complete(errNoLeader(r.shard))
		return
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		req.complete(errClosed)
		return
	}
	r.queue = append(r.queue, req)
	r.mu.Unlock()
	r.signal()
}

func (r *reader) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reader) requeue(reqs []*readReq) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		for _, req := range reqs {
			req.complete(errClosed)
		}
		return
	}
	r.queue = append(reqs[:len(reqs):len(reqs)], r.queue...)
	r.mu.Unlock()
	r.signal()
}

func (r *reader) take() []*readReq {
	r.mu.Lock()
	defer r.mu.Unlock()
	reqs := r.queue
	r.queue = nil
	return reqs
}

func (r *reader) run() {
	defer r.c.loops.Done()
	r.c.waiters.Add(1)
	go r.wait()
	defer close(r.inflight)
	for {
		select {
		case <-r.wake:
		case <-r.c.stop:
			r.shutdown()
			return
		}
		for {
			select {
			case r.slots <- struct{}{}:
			case <-r.c.stop:
				r.shutdown()
				return
			}
			reqs := r.take()
			if len(reqs) == 0 {
				<-r.slots
				break
			}
			if !r.issue(reqs) {
				r.shutdown()
				return
			}
		}
	}
}

func (r *reader) shutdown() {
	r.mu.Lock()
	r.stopped = true
	reqs := r.queue
	r.queue = nil
	r.mu.Unlock()
	for _, req := range reqs {
		req.complete(errClosed)
	}
}

// expire fails reads whose deadline passed and returns the rest.
func (r *reader) expire(reqs []*readReq) []*readReq {
	now := time.Now()
	keep := reqs[:0]
	for _, req := range reqs {
		if now.Before(req.deadline) {
			keep = append(keep, req)
			continue
		}
		req.complete(r.timeoutError(req.deadline))
	}
	return keep
}

func (r *reader) timeoutError(deadline time.Time) error {
	if r.leader.get() == 0 {
		r.leader.markDown(deadline.Add(-r.c.timeout))
		return errNoLeader(r.shard)
	}
	return fmt.Errorf("cluster unavailable: read on shard %d timed out", r.shard)
}

// issue starts a ReadIndex for reqs, retrying temporary refusals. It holds
// one slot, which passes to the waiter on success. It reports false when
// the node is stopping.
func (r *reader) issue(reqs []*readReq) bool {
	backoff := minRetryBackoff
	for {
		reqs = r.expire(reqs)
		if len(reqs) == 0 {
			<-r.slots
			return true
		}
		timeout := r.c.attemptTimeout
		for _, req := range reqs {
			timeout = min(timeout, time.Until(req.deadline))
		}
		timeout = max(timeout, r.c.minTimeout())
		watch := r.leader.watch()
		rs, err := r.c.nh.ReadIndex(r.shard, timeout)
		if err == nil {
			r.inflight <- &readRound{reqs: reqs, rs: rs, watch: watch}
			return true
		}
		switch {
		case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized),
			errors.Is(err, dragonboat.ErrSystemBusy):
		case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
			r.failAll(reqs, errClosed)
			<-r.slots
			return false
		default:
			r.failAll(reqs, r.c.mapError(r.shard, err))
			<-r.slots
			return true
		}
		if r.c.sleepOrStop(backoff, watch) {
			r.failAll(reqs, errClosed)
			<-r.slots
			return false
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

func (r *reader) failAll(reqs []*readReq, err error) {
	for _, req := range reqs {
		req.complete(err)
	}
}

func (r *reader) wait() {
	defer r.c.waiters.Done()
	for rd := range r.inflight {
		r.await(rd)
		<-r.slots
	}
}

func (r *reader) await(rd *readRound) {
	select {
	case res := <-rd.rs.ResultC():
		switch {
		case res.Completed():
			batch := &readBatch{ops: make([]*readOp, len(rd.reqs))}
			for i, req := range rd.reqs {
				batch.ops[i] = &req.op
			}
			_, err := r.c.nh.ReadLocalNode(rd.rs, batch)
			rd.rs.Release()
			if err != nil {
				err = r.c.mapError(r.shard, err)
			}
			r.failAll(rd.reqs, err)
		case res.Dropped(), res.Timeout():
			rd.rs.Release()
			if res.Dropped() {
				r.c.sleepOrStop(minRetryBackoff*5, r.leader.watch())
			}
			r.requeue(rd.reqs)
		case res.Terminated():
			r.failAll(rd.reqs, errClosed)
		default:
			r.failAll(rd.reqs, fmt.Errorf("cluster unavailable: read on shard %d refused", r.shard))
		}
	case <-rd.watch:
		// A ReadIndex sent to a leader that has since lost its place may
		// never be answered; reads are safe to repeat, so start over.
		r.requeue(rd.reqs)
	}
}
