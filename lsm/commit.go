package lsm

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/kvstore/kv/lsm/memtable"
)

// maxBatchBytes is the largest batch the DB accepts. A batch is one WAL
// record and lives in one memtable, so it must stay well below both limits.
const maxBatchBytes = 64 << 20

// ErrBatchTooLarge is returned for a batch above the 64 MiB limit.
var ErrBatchTooLarge = errors.New("lsm: batch too large")

// A commitPipeline takes batches from any number of writers and makes each
// durable (under the sync mode) and then visible, atomically and in one
// total order. It must maintain two invariants:
//
//  1. Batches are written to the WAL in sequence number order, each as one
//     record, so that replay rebuilds exactly a prefix of the commit order.
//  2. Batches become visible to readers in sequence number order, and only
//     whole: readers read at the published sequence number d.visibleSeq, and
//     it only moves past a batch once all of the batch is in the memtable.
//
// The simplest design, one writer at a time doing write + fsync + insert,
// costs one fsync (hundreds of microseconds) per batch. Instead the
// pipeline batches the expensive step: writers only append their batch to
// a queue (WriteAsync never blocks on I/O) and one committer goroutine
// repeatedly takes everything queued as a group, then
//
//	assigns consecutive sequence numbers (written into each batch header)
//	appends each batch to the WAL buffer as one record
//	issues one write(2) for the group, and one fsync under SyncAlways
//	inserts every batch into the memtable (the only memtable writer)
//	publishes the group's last sequence number (atomic store)
//	calls every done callback
//
// While the committer waits for an fsync, new batches pile up in the queue
// and form the next group, so N concurrent SyncAlways writers share about
// one fsync per group instead of paying N (Metrics.WALSyncs counts them).
// After acknowledging a group the committer yields briefly so that the
// writers it just woke can queue again before the next group starts;
// otherwise closed-loop writers settle into two alternating half-groups
// and every fsync serves only half of them.
// Only one committer at a time touches the WAL and the mutable memtable
// (readers of the memtable are lock-free), and invariant 1 holds by
// construction.
//
// Where we differ from pebble on purpose: pebble publishes a batch (makes it
// visible to readers) as soon as it is in the memtable and lets the writer
// wait for the WAL sync afterwards, so a reader can see data a crash would
// lose. We publish only after the group is durable under the sync mode
// (after the fsync for SyncAlways; after write(2) for SyncBatch and
// SyncNone; after the memtable insert with DisableWAL), because the server
// promises that no reader sees a value before its write could be
// acknowledged (PROTOCOL.md §3). Do not "optimise" the publish to before the
// sync. The price is that applying to the memtable is serial; in exchange
// there is no per-batch synchronisation at all.
//
// Also on the committer, because they must be ordered with the WAL and the
// memtable: memtable rotation (a full memtable becomes immutable and a new
// WAL starts), write stalls (a group waits while L0 or the immutable
// memtables pile up), the SyncBatch timer, and Flush requests (a marker in
// the queue that rotates the memtable in commit order).
//
// One shortcut: a blocking Write that finds the queue empty and the
// committer idle commits its batch itself, on its own goroutine, instead
// of paying two goroutine hand-offs (LevelDB's leader writer, for the
// uncontended case). "The committer" is therefore whoever holds active;
// the committer goroutine takes active before it takes the queue, and the
// shortcut requires an empty queue, so commit order is still queue order.
type commitPipeline struct {
	// active is held by whoever commits: the committer goroutine for a
	// group, or a Write taking the shortcut. It guards the committer-owned
	// state of the DB (WAL, mutable memtable, logSeq, walErr).
	active sync.Mutex

	mu      sync.Mutex
	pending []commitReq
	closed  bool
	// wake has room for one token: a writer that finds the queue empty
	// leaves one, so the committer, if it sleeps, wakes up.
	wake chan struct{}
}

// commitReq is a queued batch, or (with flush set) a request to rotate the
// memtable at this point of the commit order.
type commitReq struct {
	b     *Batch
	done  func(error)
	flush chan<- flushTicket
	// pin (with flush) asks for the version holding exactly the batches
	// committed before this point: see flushTicket.pin.
	pin bool
}

// flushTicket tells a Flush caller which memtable to wait for.
type flushTicket struct {
	memID uint64 // 0: nothing to flush
	err   error
	// pin, for a request with pin set, receives the version installed by
	// the flush of memtable memID (or, with nothing to flush, the current
	// one, already in pin.v), referenced for the caller. Its tables hold
	// every batch committed before the request and none after, each whole:
	// later flushes install later versions, and one of them may hold the
	// first part of a batch split across two memtables.
	pin *flushPin
}

// flushPin is a Checkpoint's wait for one flush; d.mu guards it.
type flushPin struct {
	memID uint64
	v     *version
}

// enqueue adds r unless the pipeline is closed.
func (p *commitPipeline) enqueue(r commitReq) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.pending = append(p.pending, r)
	first := len(p.pending) == 1
	p.mu.Unlock()
	if first {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// tryActivate takes active for a caller that wants to commit by itself:
// only when the pipeline is open, nothing is queued and nobody commits.
func (p *commitPipeline) tryActivate() bool {
	p.mu.Lock()
	ok := !p.closed && len(p.pending) == 0 && p.active.TryLock()
	p.mu.Unlock()
	return ok
}

// take swaps the queue with buf (emptied) and returns what was queued.
func (p *commitPipeline) take(buf []commitReq) []commitReq {
	p.mu.Lock()
	reqs := p.pending
	p.pending = buf[:0]
	p.mu.Unlock()
	return reqs
}

// close rejects further requests and returns those still queued.
func (p *commitPipeline) close() []commitReq {
	p.mu.Lock()
	p.closed = true
	reqs := p.pending
	p.pending = nil
	p.mu.Unlock()
	return reqs
}

// WriteAsync queues b for commit and returns without waiting on I/O
// beyond a write(2). done runs once b is durable under the sync mode and
// visible (or with the error that prevented it), on the pipeline goroutine
// or, when the pipeline is idle and the mode needs no fsync, on the
// caller's before WriteAsync returns; it must not block. b belongs to the
// DB until done runs: the pipeline writes its sequence number into it.
func (d *DB) WriteAsync(b *Batch, done func(error)) {
	switch {
	case b.Len() == 0:
		done(nil)
		return
	case b.Size() > maxBatchBytes:
		done(fmt.Errorf("lsm: write batch of %d bytes (limit %d): %w", b.Size(), maxBatchBytes, ErrBatchTooLarge))
		return
	case d.opts.ReadOnly:
		done(ErrReadOnly)
		return
	}
	if d.opts.Sync != SyncAlways && d.commit.tryActivate() && d.commitInline(b, done) {
		return
	}
	if !d.commit.enqueue(commitReq{b: b, done: done}) {
		done(ErrClosed)
	}
}

// commitInline is WriteAsync's shortcut when the pipeline is idle and the
// commit cannot block: no fsync (not SyncAlways), no write stall or
// slowdown due, and the batch fits the mutable memtable (no rotation, which
// creates a WAL). It commits b on the caller's goroutine, done included,
// saving the hand-off to the committer and back: for an event loop that is
// the difference between one write(2) and two goroutine wake-ups per
// request. The caller holds active; commitInline releases it. It reports
// false, having done nothing, when b must take the queue.
func (d *DB) commitInline(b *Batch, done func(error)) bool {
	defer d.commit.active.Unlock()
	if d.walErr != nil || (d.wal != nil && d.wal.closed) || !d.mem.fits(b.Len(), d.batchBytes(b)) {
		return false
	}
	d.mu.Lock()
	calm := !d.closing && len(d.current.levels[0]) < d.opts.L0SlowdownWrites
	d.mu.Unlock()
	if !calm {
		return false
	}
	reqs := [1]commitReq{{b: b, done: done}}
	d.commitSegment(reqs[:])
	return true
}

// waiter turns WriteAsync into a blocking call without allocating: done is
// bound once, and waiters are pooled.
type waiter struct {
	ch   chan struct{}
	err  error
	done func(error)
}

var waiterPool = sync.Pool{New: func() any {
	w := &waiter{ch: make(chan struct{}, 1)}
	w.done = func(err error) {
		w.err = err
		w.ch <- struct{}{}
	}
	return w
}}

// Write commits b atomically and waits until it is durable under the sync
// mode and visible.
func (d *DB) Write(b *Batch) error {
	w := waiterPool.Get().(*waiter)
	if b.Len() > 0 && b.Size() <= maxBatchBytes && !d.opts.ReadOnly && d.commit.tryActivate() {
		// Uncontended: commit on this goroutine.
		reqs := [1]commitReq{{b: b, done: w.done}}
		d.commitGroup(reqs[:])
		// Requests queued meanwhile left a wake token when the queue became
		// non-empty; the committer waits for active and then takes them.
		d.commit.active.Unlock()
	} else {
		d.WriteAsync(b, w.done)
	}
	<-w.ch
	err := w.err
	w.err = nil
	waiterPool.Put(w)
	return err
}

// maxPooledBatch keeps batches that carried large values out of the pool.
const maxPooledBatch = 64 << 10

var batchPool = sync.Pool{New: func() any { return NewBatch() }}

// Put sets key to value.
func (d *DB) Put(key, value []byte) error {
	b := batchPool.Get().(*Batch)
	b.Reset()
	b.Put(key, value)
	err := d.Write(b)
	if cap(b.data) <= maxPooledBatch {
		batchPool.Put(b)
	}
	return err
}

// Delete removes key (it is not an error if key is absent).
func (d *DB) Delete(key []byte) error {
	b := batchPool.Get().(*Batch)
	b.Reset()
	b.Delete(key)
	err := d.Write(b)
	if cap(b.data) <= maxPooledBatch {
		batchPool.Put(b)
	}
	return err
}

// commitLoop is the committer goroutine.
func (d *DB) commitLoop() {
	defer d.wg.Done()
	var tick <-chan time.Time
	if !d.opts.DisableWAL && d.opts.Sync == SyncBatch {
		t := time.NewTicker(d.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	// While a WAL cannot be created, writes retry the creation; without
	// writes this does, so that Health clears once the cause has (an idle
	// server reported a full disk as unhealthy until its next write).
	var probe <-chan time.Time
	if !d.opts.DisableWAL {
		t := time.NewTicker(walCreateProbe)
		defer t.Stop()
		probe = t.C
	}
	var buf []commitReq
	for {
		d.commit.active.Lock()
		reqs := d.commit.take(buf)
		if len(reqs) > 0 {
			d.commitGroup(reqs)
			clear(reqs)
		}
		if len(reqs) > 1 && d.opts.Sync == SyncAlways {
			// Let the writers just acknowledged queue their next batch
			// before the next group starts, so that all of them share the
			// next fsync.
			for range 2 {
				runtime.Gosched()
			}
		}
		// Under sustained load the loop never waits in the select below,
		// so look at the SyncBatch timer here too.
		select {
		case <-tick:
			d.syncWALIfDirty()
		default:
		}
		d.commit.active.Unlock()
		buf = reqs
		if len(reqs) > 0 {
			continue
		}
		select {
		case <-d.commit.wake:
		case <-probe:
			d.commit.active.Lock()
			d.retryWALCreate()
			d.commit.active.Unlock()
		case <-tick:
			d.commit.active.Lock()
			d.syncWALIfDirty()
			d.commit.active.Unlock()
		case <-d.closeCh:
			d.commit.active.Lock()
			for _, r := range d.commit.close() {
				r.fail(ErrClosed)
			}
			d.commit.active.Unlock()
			return
		}
	}
}

// onlyFlushes reports whether reqs holds Flush requests and no write.
func onlyFlushes(reqs []commitReq) bool {
	for _, r := range reqs {
		if r.flush == nil {
			return false
		}
	}
	return true
}

func failAll(reqs []commitReq, err error) {
	for _, r := range reqs {
		r.fail(err)
	}
}

// countRefused counts the writes among reqs as refused (a definite
// refusal while the disk cannot take more: writesRefused).
func (d *DB) countRefused(reqs []commitReq) {
	for _, r := range reqs {
		if r.flush == nil {
			d.metrics.writesRefused.Add(1)
		}
	}
}

func (r commitReq) fail(err error) {
	if r.flush != nil {
		r.flush <- flushTicket{err: err}
		return
	}
	r.done(err)
}

// commitGroup commits a group of queued requests in order.
func (d *DB) commitGroup(reqs []commitReq) {
	// A group of Flush requests alone writes nothing, and the memtable it
	// hands over is flushed whatever L0 holds, so it does not wait out an
	// L0 stall. It used to: Close, which kvserver calls after a Flush,
	// then waited for every compaction ahead of the L0 one, over a minute
	// with 12 GB of data, and kvserver gave up closing the store.
	if !onlyFlushes(reqs) {
		if err := d.stallIfNeeded(); err != nil {
			if errors.Is(err, errCompactionsFailing) {
				d.countRefused(reqs)
			}
			failAll(reqs, err)
			return
		}
	}
	for len(reqs) > 0 {
		if d.walErr != nil {
			failAll(reqs, d.walErr)
			return
		}
		if reqs[0].flush != nil {
			t := d.rotateForFlush(reqs[0].pin)
			reqs[0].flush <- t
			reqs = reqs[1:]
			if errors.Is(t.err, ErrClosed) {
				failAll(reqs, ErrClosed)
				return
			}
			continue
		}
		if d.wal != nil && d.wal.closed {
			// A rotation failed to create the next WAL: create it before
			// anything is written.
			if err := d.rotateMemtable(0); err != nil {
				if errors.Is(err, errFlushesFailing) {
					d.countRefused(reqs)
				}
				failAll(reqs, err)
				return
			}
			continue
		}
		// The longest prefix of batches that fits the mutable memtable.
		var need int64
		n, entries := 0, 0
		for n < len(reqs) && reqs[n].flush == nil {
			sz := d.batchBytes(reqs[n].b)
			if !d.mem.fits(entries+reqs[n].b.Len(), need+sz) {
				if n == 0 {
					need = batchMaxMemBytes(reqs[n].b)
				}
				break
			}
			need += sz
			entries += reqs[n].b.Len()
			n++
		}
		if n == 0 {
			if err := d.rotateMemtable(need); err != nil {
				// Only these requests: the next group tries again.
				if errors.Is(err, errFlushesFailing) {
					d.countRefused(reqs)
				}
				failAll(reqs, err)
				return
			}
			continue
		}
		d.commitSegment(reqs[:n])
		reqs = reqs[n:]
	}
}

// commitSegment writes, syncs, applies and publishes batches that fit the
// mutable memtable, then acknowledges them.
func (d *DB) commitSegment(reqs []commitReq) {
	seq := d.logSeq
	var userBytes int64
	for _, r := range reqs {
		r.b.setSeq(seq + 1)
		seq += uint64(r.b.Len())
		userBytes += int64(r.b.Size())
	}
	if d.wal != nil {
		n, err := d.wal.write(reqs, d.opts.Sync == SyncAlways)
		d.metrics.walBytes.Add(n)
		if err != nil {
			d.setWALErr(err)
			failAll(reqs, fmt.Errorf("%w: %w", ErrOutcomeUnknown, d.walErr))
			return
		}
		if d.opts.Sync == SyncAlways {
			d.metrics.walSyncs.Add(1)
		}
	}
	for _, r := range reqs {
		if err := d.applyToMemtable(r.b); err != nil {
			// The batch is in the WAL but only partly in memory: nothing can
			// be published safely any more, and a restart replays the WAL.
			d.setWALErr(err)
			failAll(reqs, fmt.Errorf("%w: %w", ErrOutcomeUnknown, d.walErr))
			return
		}
	}
	d.logSeq = seq
	d.visibleSeq.Store(seq)
	d.metrics.userBytes.Add(userBytes)
	for _, r := range reqs {
		r.done(nil)
	}
}

// batchBytes is the arena room the commit path checks for before b goes
// into the mutable memtable: the typical size (batchMemBytes), so that a
// memtable fills up completely, except without a WAL. There a batch split
// across two memtables (see applyToMemtable) could be half durable: the
// first memtable flushed alone, then a crash; the caller's state (a raft
// state machine's applied index and dedup records, written in the same
// batch) would then disagree with its data. So it is the most b can take,
// and b never splits.
func (d *DB) batchBytes(b *Batch) int64 {
	if d.opts.DisableWAL {
		return batchMaxMemBytes(b)
	}
	return batchMemBytes(b)
}

// applyToMemtable inserts b into the mutable memtable. The size check
// before the write uses the typical entry size (batchBytes), so a memtable
// fills up completely; when the estimate falls short, the rest of the
// batch goes to a fresh memtable that shares the current WAL (its logNum
// is the same, so the WAL is kept until both are flushed, and replay
// restores the whole batch). The batch stays invisible until the whole
// group is published, so the split is never observable.
func (d *DB) applyToMemtable(b *Batch) error {
	done := 0
	for {
		n, err := d.mem.apply(b, done)
		if err == nil {
			return nil
		}
		if !errors.Is(err, memtable.ErrFull) || n == done && d.mem.empty() {
			return fmt.Errorf("lsm: apply batch to memtable: %w", err)
		}
		done = n
		d.mu.Lock()
		d.installMemtableLocked(d.newMemTableLocked(batchMaxMemBytes(b), d.mem.logNum))
		d.mu.Unlock()
	}
}

// setWALErr records a failure after which the committer cannot keep its
// invariants (a WAL write or sync failed, so the log holds an unknown
// prefix; or a batch is in the WAL but not in the memtable): every later
// write fails with this error.
func (d *DB) setWALErr(err error) {
	if d.walErr != nil {
		return
	}
	d.walErr = fmt.Errorf("lsm: commit failed, writes disabled: %w", err)
	d.opts.Logger.Error("lsm: write path failed; refusing further writes", "err", err)
	d.mu.Lock()
	if d.bgErr == nil {
		d.bgErr = d.walErr
	}
	d.mu.Unlock()
}

// stallIfNeeded delays a commit group while L0 is crowded: a short sleep
// from L0SlowdownWrites files, a wait for compaction from L0StopWrites.
// It returns ErrClosed if the DB closes meanwhile, and the background error
// if compaction has failed for good while writes are stopped. While writes
// are stopped and compactions keep failing (a disk with room for a flush
// but not for a compaction's outputs, say), it refuses the group with the
// compaction's error rather than waiting for the disk to recover: the
// writes, and a Flush or Close queued behind them, would otherwise hang
// with no error at all. Nothing was written, so the refusal is definite;
// the first group after a compaction succeeds goes through. Without a WAL
// it waits regardless, as rotateMemtable does.
func (d *DB) stallIfNeeded() error {
	d.mu.Lock()
	var start time.Time
	var refused error
	for !d.closing && d.bgErr == nil && len(d.current.levels[0]) >= d.opts.L0StopWrites {
		if d.compactFailing != nil && !d.opts.DisableWAL {
			refused = fmt.Errorf("%w: %w", errCompactionsFailing, d.compactFailing)
			break
		}
		if start.IsZero() {
			start = d.stallBegan()
			d.maybeScheduleCompaction()
		}
		d.cond.Wait()
	}
	closing := d.closing
	stalled := len(d.current.levels[0]) >= d.opts.L0StopWrites
	bgErr := d.bgErr
	slow := len(d.current.levels[0]) >= d.opts.L0SlowdownWrites
	d.mu.Unlock()
	if !start.IsZero() {
		d.stallEnded(start, "level 0 full: waiting for compaction")
	}
	switch {
	case closing:
		return ErrClosed
	case refused != nil:
		return refused
	case stalled && bgErr != nil:
		return bgErr
	}
	if slow {
		d.metrics.slowdowns.Add(1)
		time.Sleep(time.Millisecond)
	}
	return nil
}

// stallBegan counts a write stall starting now and returns its start.
func (d *DB) stallBegan() time.Time {
	start := time.Now()
	d.metrics.stalls.Add(1)
	d.stallSince.CompareAndSwap(0, start.UnixNano())
	return start
}

// longStall is the stall that is logged when it ends (at most one line per
// stallLogEvery, with the count of those not logged).
const (
	longStall     = time.Second
	stallLogEvery = 10 * time.Second
)

// stallEnded adds a stall that began at start to the metrics and warns of
// a long one: writes that stop for seconds are the engine's most visible
// failure to keep up, and were in no log.
func (d *DB) stallEnded(start time.Time, why string) {
	took := time.Since(start)
	d.metrics.stallNanos.Add(int64(took))
	d.stallSince.CompareAndSwap(start.UnixNano(), 0)
	if took < longStall {
		return
	}
	if ok, missed := d.stallLog.Allow(time.Now()); ok {
		d.opts.Logger.Warn("lsm: writes stalled", "for", took.Round(time.Millisecond), "why", why,
			"more_long_stalls_not_logged", missed)
	}
}

// maxImmutableMemtables bounds the memtables waiting for flush; a rotation
// beyond it waits, which stalls writes until the flush catches up.
const maxImmutableMemtables = 2

// MemtableMemory is the most memory the memtables of a DB with the given
// Options.MemtableBytes hold at once: the mutable one, the spare allocated
// ahead of the next rotation, and those waiting for flush.
func MemtableMemory(memtableBytes int64) int64 {
	o, _ := Options{MemtableBytes: memtableBytes}.withDefaults()
	return (2 + maxImmutableMemtables) * o.MemtableBytes
}

// errFlushesFailing is wrapped by rotateMemtable's refusals.
var errFlushesFailing = errors.New("lsm: memtables full and flushes failing")

// errWALCreateFailing is wrapped by the refusals of writes while the next
// WAL cannot be created (see rotateMemtable).
var errWALCreateFailing = errors.New("lsm: cannot create the next WAL")

// walCreateRetry is the least time between two attempts to create the next
// WAL after a failed one; walCreateProbe the time between the attempts the
// committer makes by itself while no write does (retryWALCreate).
const (
	walCreateRetry = 100 * time.Millisecond
	walCreateProbe = time.Second
)

// retryWALCreate retries the creation of the WAL a rotation failed to
// create, as the next write would. The caller holds active.
func (d *DB) retryWALCreate() {
	d.mu.Lock()
	failing := d.walCreateFailing != nil
	d.mu.Unlock()
	if !failing || d.walErr != nil || d.wal == nil || !d.wal.closed {
		return
	}
	// Its failure is logged (once) and kept in walCreateFailing; a refusal
	// because flushes fail leaves both as they are.
	_ = d.rotateMemtable(0)
}

// errCompactionsFailing is wrapped by stallIfNeeded's refusals.
var errCompactionsFailing = errors.New("lsm: level 0 full and compactions failing")

// rotateMemtable makes the mutable memtable immutable and starts a new one
// (and a new WAL) with room for at least need bytes. It waits while too
// many memtables already wait for flush, except while flushes are failing
// (a full disk, say): then the writes that need the room are refused with
// the flush's error instead of hanging until the disk recovers, and the
// first write after a flush succeeds goes through. Nothing was written for
// them, so the refusal is definite. Without a WAL it waits regardless: the
// caller keeps its own log and cannot refuse what it logged (cluster mode:
// a raft entry that committed), so it resumes when a flush succeeds.
func (d *DB) rotateMemtable(need int64) error {
	d.mu.Lock()
	var start time.Time
	var refused error
	for !d.closing && len(d.imm) >= maxImmutableMemtables {
		if d.flushFailing != nil && !d.opts.DisableWAL {
			refused = fmt.Errorf("%w: %w", errFlushesFailing, d.flushFailing)
			break
		}
		if d.recovering {
			break // refused below, not waited for
		}
		if start.IsZero() {
			start = d.stallBegan()
		}
		d.cond.Wait()
	}
	if refused == nil && !d.closing && d.recovering {
		// Open met a full disk and the replayed memtables are not in
		// tables yet (finishRecovery): no WAL may start before they are.
		// Refused, not waited for: the caller holds active, which
		// finishRecovery needs, and a full disk may last. Open set
		// flushFailing and only a successful finishRecovery clears it.
		refused = fmt.Errorf("%w: %w", errFlushesFailing, d.flushFailing)
	}
	closing := d.closing
	d.mu.Unlock()
	if !start.IsZero() {
		d.stallEnded(start, "memtables full: waiting for flush")
	}
	switch {
	case closing:
		return ErrClosed
	case refused != nil:
		return refused
	}

	var logNum uint64
	if d.wal != nil {
		// The old WAL must be complete on disk before the new one gets
		// writes: recovery treats damage in any but the newest WAL as
		// corruption. It is still closed after a failed creation below
		// (the rotation is being retried).
		if !d.wal.closed {
			if err := d.wal.close(); err != nil {
				d.setWALErr(err)
				return d.walErr
			}
			d.metrics.walSyncs.Add(1)
		}
		if d.wal.closed && d.walCreateFailing != nil && time.Since(d.walCreateTried) < walCreateRetry {
			// Refused without a new attempt (and a file number spent) for
			// every write while the cause lasts.
			return d.walCreateFailing
		}
		d.walCreateTried = time.Now()
		logNum = d.nextFileNum.Add(1) - 1
		nw, err := createWAL(d.opts.FS, d.dirname, logNum, d.memtableBytes(need))
		if err != nil {
			// Nothing was written for the requests that asked for this
			// rotation and the old WAL is complete on disk, so the refusal
			// is definite and the state is sound: the old WAL stays closed
			// (no write goes to it again) and the next write retries the
			// creation (commitGroup). A transient cause (EMFILE, ENOSPC, a
			// read-only directory) must not disable writes until a restart.
			d.opts.FS.Remove(d.opts.FS.PathJoin(d.dirname, makeFilename(fileTypeLog, logNum)))
			err = fmt.Errorf("%w: %w", errWALCreateFailing, err)
			d.mu.Lock()
			if d.walCreateFailing == nil {
				d.opts.Logger.Error("lsm: cannot create the next WAL; refusing writes until it can", "err", err)
			}
			d.walCreateFailing = err
			d.mu.Unlock()
			return err
		}
		d.wal = nw
	}
	d.mu.Lock()
	if d.walCreateFailing != nil {
		d.opts.Logger.Info("lsm: WAL created after failures; accepting writes again")
		d.walCreateFailing = nil
	}
	if d.wal != nil {
		d.walNums = append(d.walNums, logNum)
	}
	d.installMemtableLocked(d.newMemTableLocked(need, logNum))
	d.mu.Unlock()
	return nil
}

// newMemTableLocked returns the next memtable, taking the spare one when it
// has the right size, and has a spare prepared in the background for the
// rotation after this one, so that committing never waits for a large
// arena to be allocated and zeroed, nor faults its pages in
// (memtable.Table.Prefault). d.mu must be held.
func (d *DB) newMemTableLocked(need int64, logNum uint64) *memTable {
	d.nextMemID++
	size := d.memtableBytes(need)
	m := &memTable{id: d.nextMemID, capacity: size, logNum: logNum}
	if d.spareMem != nil && d.spareMemBytes == size {
		m.t, d.spareMem = d.spareMem, nil
	} else {
		t := memtable.New(int(size))
		m.t = t
		d.goPrefaultLocked(func() { t.Prefault(d.closeCh) })
	}
	if next := d.memtableBytes(0); d.spareMem == nil && !d.spareMemPending {
		d.spareMemPending = true
		d.goPrefaultLocked(func() {
			t := memtable.New(int(next))
			t.Prefault(d.closeCh)
			d.mu.Lock()
			d.spareMem, d.spareMemBytes, d.spareMemPending = t, next, false
			d.mu.Unlock()
		})
	}
	return m
}

// goPrefaultLocked runs f, which prepares memtable memory, on a goroutine
// Close waits for (f gives up early once closeCh is closed). Once closing
// is set nothing is started: the DB will not need the memory, and Close's
// Wait must not race an Add. d.mu must be held, or Open still running.
func (d *DB) goPrefaultLocked(f func()) {
	if d.closing {
		return
	}
	d.prefaults.Add(1)
	go func() {
		defer d.prefaults.Done()
		f()
	}()
}

// installMemtableLocked makes m the mutable memtable and queues the current
// one for flush. d.mu must be held.
func (d *DB) installMemtableLocked(m *memTable) {
	d.imm = append(d.imm, d.mem)
	d.mem = m
	d.publishReadStateLocked()
	d.scheduleFlushLocked()
}

// rotateForFlush serves a Flush request: it rotates a non-empty mutable
// memtable and returns the id of the newest memtable the caller must wait
// for (0 when there is nothing to flush). With pin, the ticket also carries
// the caller's pin (see flushTicket.pin), registered before the flush can
// install its version.
func (d *DB) rotateForFlush(pin bool) flushTicket {
	if !d.mem.empty() {
		if err := d.rotateMemtable(0); err != nil {
			return flushTicket{err: err}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.imm) == 0 {
		if !pin {
			return flushTicket{}
		}
		d.current.ref()
		return flushTicket{pin: &flushPin{v: d.current}}
	}
	t := flushTicket{memID: d.imm[len(d.imm)-1].id}
	if pin {
		t.pin = &flushPin{memID: t.memID}
		d.flushPins = append(d.flushPins, t.pin)
	}
	return t
}

// syncWALIfDirty is the SyncBatch timer's work.
func (d *DB) syncWALIfDirty() {
	if d.wal == nil || d.walErr != nil || !d.wal.dirty {
		return
	}
	if err := d.wal.sync(); err != nil {
		d.setWALErr(err)
		return
	}
	d.metrics.walSyncs.Add(1)
	d.metrics.timedSyncs.Add(1)
}
