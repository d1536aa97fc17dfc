package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// Get reads key from the shard that owns it: after a ReadIndex round by
// default, directly from the local replica in stale mode.
func (c *Cluster) Get(key []byte, done func([]byte, error)) {
	if err := c.serving(); err != nil {
		done(nil, err)
		return
	}
	shard := shardOf(key, c.shards)
	req := &readReq{
		op:      readOp{key: bytes.Clone(key)},
		getDone: done,
	}
	if c.stale {
		c.staleRead(shard, req)
		return
	}
	req.deadline = time.Now().Add(c.timeout)
	c.readers[shard-1].enqueue(req)
}

// staleRead serves req from the local replica on the caller's goroutine.
func (c *Cluster) staleRead(shard uint64, req *readReq) {
	_, err := c.nh.StaleRead(shard, &readBatch{ops: []*readOp{&req.op}})
	if err != nil {
		err = c.mapError(shard, err)
	}
	req.complete(err)
}

// Write splits b by shard and proposes each part; done runs once every
// part is committed and applied here, or with the first failure. A batch
// is atomic within each shard, not across shards.
func (c *Cluster) Write(b *lsm.Batch, done func(error)) {
	if err := c.serving(); err != nil {
		done(err)
		return
	}
	n := b.Len()
	if n == 0 {
		done(nil)
		return
	}
	if err := c.spaceRefusal(b); err != nil {
		// A member is short of disk space (space.go): refused before
		// anything is proposed, so the refusal is definite.
		done(err)
		return
	}
	deadline := time.Now().Add(c.timeout)
	shard, single := c.singleShard(b)
	if single {
		if len(b.Repr())+cmdHeaderLen > maxCommandBytes {
			done(errCommandTooLarge(shard, len(b.Repr())+cmdHeaderLen))
			return
		}
		c.proposers[shard-1].enqueue(&writeOp{kind: cmdWrite, data: b.Repr(), count: n, deadline: deadline, done: done})
		return
	}
	parts := make([]*lsm.Batch, c.shards)
	err := b.Each(func(del bool, key, value []byte) error {
		s := shardOf(key, c.shards) - 1
		if parts[s] == nil {
			parts[s] = lsm.NewBatch()
		}
		if del {
			parts[s].Delete(key)
		} else {
			parts[s].Put(key, value)
		}
		return nil
	})
	if err != nil {
		done(fmt.Errorf("bad batch: %w", err))
		return
	}
	count := 0
	for i, p := range parts {
		if p == nil {
			continue
		}
		if n := len(p.Repr()) + cmdHeaderLen; n > maxCommandBytes {
			// Refused before any part is proposed: nothing applied.
			done(errCommandTooLarge(uint64(i+1), n))
			return
		}
		count++
	}
	j := newJoiner(count, done)
	for i, p := range parts {
		if p != nil {
			c.proposers[i].enqueue(&writeOp{kind: cmdWrite, data: p.Repr(), count: p.Len(), deadline: deadline, done: j.part})
		}
	}
}

// singleShard reports whether every key of b is in one shard, and which.
func (c *Cluster) singleShard(b *lsm.Batch) (uint64, bool) {
	var shard uint64
	errSplit := errors.New("split")
	err := b.Each(func(_ bool, key, _ []byte) error {
		s := shardOf(key, c.shards)
		if shard == 0 {
			shard = s
		} else if s != shard {
			return errSplit
		}
		return nil
	})
	return shard, err == nil && shard != 0
}

// joiner completes a request made of parts once every part is done. If
// every part succeeded the request did; if every part failed definitely
// (nothing applied) the request failed with the first error; otherwise
// some part may have been applied, and the request's outcome is unknown.
type joiner struct {
	total     int
	mu        sync.Mutex
	remaining int
	failed    int
	unknown   bool
	first     error
	done      func(error)
}

func newJoiner(parts int, done func(error)) *joiner {
	return &joiner{total: parts, remaining: parts, done: done}
}

func (j *joiner) part(err error) {
	j.mu.Lock()
	if err != nil {
		j.failed++
		if j.first == nil {
			j.first = err
		}
		if errors.Is(err, store.ErrTimeout) {
			j.unknown = true
		}
	}
	j.remaining--
	last := j.remaining == 0
	failed := j.failed
	j.mu.Unlock()
	if !last {
		return
	}
	switch {
	case j.first == nil:
		j.done(nil)
	case j.unknown && errors.Is(j.first, store.ErrTimeout):
		j.done(j.first)
	case j.unknown || failed < j.total:
		j.done(fmt.Errorf("%w (partly applied: %v)", store.ErrTimeout, j.first))
	default:
		j.done(j.first)
	}
}

// Range collects up to limit pairs from every shard and merges them.
func (c *Cluster) Range(start, end []byte, limit int, done func([]store.KV, error)) {
	if err := c.serving(); err != nil {
		done(nil, err)
		return
	}
	if limit <= 0 || (len(end) > 0 && bytes.Compare(start, end) >= 0) {
		done(nil, nil)
		return
	}
	rc := &rangeCollector{remaining: c.shards, limit: limit, done: done}
	start, end = bytes.Clone(start), bytes.Clone(end)
	deadline := time.Now().Add(c.timeout)
	for s := uint64(1); s <= uint64(c.shards); s++ {
		req := &readReq{
			// The shards share the byte budget, so the whole Range stays
			// within it.
			op:       readOp{isRange: true, start: start, end: end, limit: limit, maxBytes: store.MaxRangeBytes / c.shards},
			deadline: deadline,
			kvDone:   rc.add,
		}
		if c.stale {
			c.staleRead(s, req)
		} else {
			c.readers[s-1].enqueue(req)
		}
	}
}

// rangeCollector merges the per-shard answers of a Range.
type rangeCollector struct {
	mu        sync.Mutex
	remaining int
	parts     [][]store.KV
	err       error
	limit     int
	done      func([]store.KV, error)
	// cut, once a shard stopped at its byte budget, is the smallest last
	// key of such a shard: past it, the merge could miss that shard's keys.
	cut       []byte
	truncated bool
}

func (rc *rangeCollector) add(kvs []store.KV, err error) {
	rc.mu.Lock()
	if errors.Is(err, store.ErrRangeTruncated) {
		if last := kvs[len(kvs)-1].Key; !rc.truncated || bytes.Compare(last, rc.cut) < 0 {
			rc.cut = last
		}
		rc.truncated = true
		err = nil
	}
	if err != nil && rc.err == nil {
		rc.err = err
	}
	if len(kvs) > 0 {
		rc.parts = append(rc.parts, kvs)
	}
	rc.remaining--
	last := rc.remaining == 0
	rc.mu.Unlock()
	if !last {
		return
	}
	if rc.err != nil {
		rc.done(nil, rc.err)
		return
	}
	merged := mergeKVs(rc.parts, rc.limit)
	if rc.truncated {
		n, _ := slices.BinarySearchFunc(merged, rc.cut, func(kv store.KV, k []byte) int { return bytes.Compare(kv.Key, k) })
		if n < len(merged) && bytes.Equal(merged[n].Key, rc.cut) {
			n++
		}
		if n < len(merged) || len(merged) < rc.limit {
			rc.done(merged[:n], store.ErrRangeTruncated)
			return
		}
	}
	rc.done(merged, nil)
}

// mergeKVs merges sorted runs of distinct keys (each shard owns its keys)
// and keeps the first limit.
func mergeKVs(parts [][]store.KV, limit int) []store.KV {
	switch len(parts) {
	case 0:
		return nil
	case 1:
		return parts[0][:min(limit, len(parts[0]))]
	}
	var all []store.KV
	for _, p := range parts {
		all = append(all, p...)
	}
	slices.SortFunc(all, func(a, b store.KV) int { return bytes.Compare(a.Key, b.Key) })
	return all[:min(limit, len(all))]
}

// Clear deletes every key in every shard (FLUSHALL).
func (c *Cluster) Clear(done func(error)) {
	if err := c.serving(); err != nil {
		done(err)
		return
	}
	deadline := time.Now().Add(c.timeout)
	j := newJoiner(c.shards, done)
	for _, p := range c.proposers {
		p.enqueue(&writeOp{kind: cmdClear, deadline: deadline, done: j.part})
	}
}

// serving returns why this node takes no requests now (closed, or removed
// from the cluster), or nil.
func (c *Cluster) serving() error {
	switch {
	case c.closed.Load():
		return errClosed
	case c.removed.Load():
		return c.errRemovedNode()
	}
	return nil
}

// Health reports why a local replica's storage cannot take writes now
// (its engine, or this node or a member short of disk space), or a
// damaged table that its reads found, or nil (/healthz, INFO). Only the
// free-space guard is acted on (Write refuses writes while it is up).
func (c *Cluster) Health() error {
	if c.removed.Load() {
		return c.errRemovedNode()
	}
	if err := c.spaceErr(); err != nil {
		return err
	}
	c.smMu.Lock()
	defer c.smMu.Unlock()
	for id, s := range c.sms {
		if err := s.health(); err != nil {
			return fmt.Errorf("storage unavailable: shard %d: %w", id, err)
		}
	}
	return nil
}

// EngineMetrics adds up the metrics of the local replicas' engines (INFO,
// /metrics); the block cache and table file counters, shared by all of
// them, are counted once.
func (c *Cluster) EngineMetrics() lsm.Metrics {
	c.smMu.Lock()
	defer c.smMu.Unlock()
	var total lsm.Metrics
	for _, s := range c.sms {
		if m, ok := s.metrics(); ok {
			total.Add(m)
		}
	}
	cs := c.cache.Stats()
	total.CacheHits, total.CacheMisses = cs.Hits, cs.Misses
	total.TableFilesOpen, total.TableFileReopens = c.tableFiles.Open(), c.tableFiles.Reopens()
	return total
}

// ApproxKeys sums the local replicas' estimates of their user keys (which,
// like the engine's, count overwritten and deleted entries until
// compaction).
func (c *Cluster) ApproxKeys() int64 {
	c.smMu.Lock()
	defer c.smMu.Unlock()
	var n int64
	for _, s := range c.sms {
		n += s.approxKeys()
	}
	return n
}
