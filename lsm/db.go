// Package lsm is the storage engine: a log-structured merge tree with a
// write-ahead log and group commit, hash-indexed memtables (ordered
// lazily), immutable sorted tables in seven levels, and background flush
// and leveled compaction.
//
// A write is a Batch. The commit pipeline (commit.go) gives it consecutive
// sequence numbers, appends it to the WAL as one record, fsyncs once per
// group of concurrent batches, inserts it into the mutable memtable and only
// then publishes it (durable before visible). A full memtable becomes
// immutable and is flushed to an L0 table; compaction merges tables down
// the levels (compaction.go), dropping versions no reader can see.
//
// Invariants the rest of the package relies on:
//   - Every key version carries a sequence number; readers read at one
//     published sequence number through a ref-counted read state (memtables
//     plus version), so a read sees a consistent prefix of the commit order
//     and never a partial batch.
//   - Files are immutable once written. Recovery depends only on CURRENT,
//     the manifest it names, the tables that manifest lists and the WALs
//     from its log number on; every creation, rename or deletion of those is
//     synced (file and directory) in an order that keeps them consistent at
//     every instant (manifest.go).
//   - File numbers and sequence numbers only grow, across restarts too.
//   - A table is deleted only when no version references it, and a WAL
//     only when a synced manifest edit says its memtables are in tables.
package lsm

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/internal/ratelog"
	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/kvstore/kv/lsm/memtable"
	"github.com/kvstore/kv/lsm/sstable"
)

// ErrReadOnly is returned by writes, Flush and Checkpoint on a DB opened
// with Options.ReadOnly.
var ErrReadOnly = errors.New("lsm: read-only")

// DB is an open database. All methods are safe for concurrent use.
type DB struct {
	dirname string
	opts    Options
	lock    *dirLock

	cache    *cache.Cache
	ownCache bool
	tc       tableCache

	// visibleSeq is the last published sequence number: reads see exactly
	// the writes at or below it.
	visibleSeq atomic.Uint64
	readState  atomic.Pointer[readState]
	closed     atomic.Bool

	nextFileNum atomic.Uint64

	// Committer-owned state (see commitPipeline): only the holder of
	// commit.active (or Open and Close, when no commit can run) touches it.
	commit commitPipeline
	wal    *walWriter
	logSeq uint64 // last sequence number assigned
	walErr error

	// damagedWALs are the WALs Open's recovery dropped (RecoverDamagedWAL);
	// used by Open only.
	damagedWALs []uint64

	// manifestMu serialises manifest writes (logAndApply, Checkpoint).
	manifestMu      sync.Mutex
	manifest        *manifestWriter
	manifestLogNum  uint64
	manifestLastSeq uint64
	closedManifest  bool
	// After a failed manifest edit that may still be on disk: the tables it
	// added (each holding an extra reference) and the manifests abandoned
	// (still CURRENT until the next one is). The next manifest written in
	// full settles them: from then on no durable manifest names them.
	unsettled          []*fileMetadata
	abandonedManifests []uint64

	mu   sync.Mutex
	cond sync.Cond // on mu: flush/compaction progress, errors, close
	// Protected by mu:
	current        *version
	mem            *memTable
	imm            []*memTable // oldest first
	nextMemID      uint64
	flushedMemID   uint64 // every memtable with a smaller or equal id is in a table
	flushErr       error  // the last flush failure (Flush callers wait on flushFailures)
	flushFailures  int
	flushPins      []*flushPin // checkpoints waiting for the version of a flush
	flushFailing   error       // the last flush attempt's error: nil once one succeeds
	compactFailing error       // the last compaction attempt's error: nil once one succeeds
	bgErr          error
	closing        bool
	snapshots      snapshotNode // sentinel of the pinned-sequence list
	walNums        []uint64     // WAL files on disk, ascending
	// recovering: Open could not write the replayed memtables (d.imm) to
	// tables (a full disk); finishRecovery, retried by the flush goroutine,
	// still has to. Until it has, their WALs are the log, the manifest is
	// the one Open found, and writes are refused (rotateMemtable).
	recovering bool
	// spareMem is a preallocated arena for the next rotation.
	spareMem        *memtable.Table
	spareMemBytes   int64
	spareMemPending bool

	obsoleteMu     sync.Mutex
	obsoleteTables []*fileMetadata

	flushCh   chan struct{}
	compactCh chan struct{}
	closeCh   chan struct{}
	wg        sync.WaitGroup
	prefaults sync.WaitGroup // memtable memory being prepared (goPrefaultLocked)

	metrics metricsCounters

	nowaitWarned atomic.Bool // the RWF_NOWAIT fallback was logged

	// Rarely touched, so kept apart from the fields above.
	damaged damagedTables
	// walCreateTried is the last attempt to create a WAL (committer only);
	// walCreateFailing, under mu, the last failed WAL creation of a
	// rotation: nil once one succeeds.
	walCreateTried   time.Time
	walCreateFailing error
	// stallSince is when the write stall in progress began (unix nanos,
	// 0 when none): Metrics counts it before it ends. stallLog rate-limits
	// the warnings of long stalls (stallEnded).
	stallSince atomic.Int64
	stallLog   ratelog.Limiter
	deleteMu   sync.Mutex // serializes deleteObsoleteTables
}

// Get returns a copy of the value of key, or ErrNotFound.
func (d *DB) Get(key []byte) ([]byte, error) {
	return d.get(key, false)
}

// GetNoWait is Get for a caller that must not wait for the disk, such as
// an event loop serving many connections: when the answer needs a table
// block that is in neither the block cache nor the OS page cache, or a
// table not opened yet, it returns ErrWouldBlock, having waited for
// nothing, and the caller retries with Get where waiting is fine. On a
// filesystem that cannot tell what is cached (tmpfs, some network and
// FUSE filesystems) it reads as Get does.
func (d *DB) GetNoWait(key []byte) ([]byte, error) {
	v, err := d.get(key, true)
	if errors.Is(err, ErrWouldBlock) {
		d.metrics.readsNeedingDisk.Add(1)
	}
	return v, err
}

func (d *DB) get(key []byte, nowait bool) ([]byte, error) {
	v, err := d.lookup(key, nowait)
	if err != nil {
		d.noteReadErr(err)
	}
	return v, err
}

func (d *DB) lookup(key []byte, nowait bool) ([]byte, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	rs := d.acquireReadState()
	defer rs.unref()
	// Loaded after the read state: every write at or below seq that the
	// state lacks went to a newer memtable than all of the state's, so the
	// state shows a prefix of the commit order that includes every write
	// acknowledged before Get was called.
	seq := d.visibleSeq.Load()
	if v, kind, ok := rs.mem.t.Get(key, seq); ok {
		return found(v, kind)
	}
	for i := len(rs.imm) - 1; i >= 0; i-- {
		if v, kind, ok := rs.imm[i].t.Get(key, seq); ok {
			return found(v, kind)
		}
	}
	for _, f := range rs.v.levels[0] {
		if !f.containsUkey(key) {
			continue
		}
		if v, kind, ok, err := d.getFromTable(f, key, seq, nowait); err != nil || ok {
			if err != nil {
				return nil, err
			}
			return found(v, kind)
		}
	}
	for level := 1; level < numLevels; level++ {
		files := rs.v.levels[level]
		i := findFile(files, key)
		if i == len(files) || !files[i].containsUkey(key) {
			continue
		}
		if v, kind, ok, err := d.getFromTable(files[i], key, seq, nowait); err != nil || ok {
			if err != nil {
				return nil, err
			}
			return found(v, kind)
		}
	}
	return nil, ErrNotFound
}

func (d *DB) getFromTable(f *fileMetadata, key []byte, seq uint64, nowait bool) ([]byte, base.Kind, bool, error) {
	var r *sstable.Reader
	var err error
	if nowait {
		// Opening a table reads its index and filter from the disk.
		if r = f.reader.Load(); r == nil {
			return nil, 0, false, ErrWouldBlock
		}
	} else {
		r, err = d.tc.reader(f)
	}
	if err == nil {
		var v []byte
		var kind base.Kind
		var ok bool
		get := r.Get
		if nowait {
			get = r.GetNoWait
		}
		v, kind, ok, err = get(key, seq)
		if nowait && r.ReadsMayWait() && !d.nowaitWarned.Swap(true) {
			d.opts.Logger.Warn("lsm: this filesystem does not support RWF_NOWAIT reads: point reads that miss the block cache wait for the disk on the caller's goroutine (an event loop)", "dir", d.dirname)
		}
		if err == nil {
			return v, kind, ok, nil
		}
		if errors.Is(err, ErrWouldBlock) {
			return nil, 0, false, err
		}
	}
	if d.closed.Load() {
		return nil, 0, false, ErrClosed // the table was closed under us
	}
	return nil, 0, false, fmt.Errorf("lsm: get %q: %w", key, err)
}

func found(v []byte, kind base.Kind) ([]byte, error) {
	if kind != base.KindSet {
		return nil, ErrNotFound
	}
	return append(make([]byte, 0, len(v)), v...), nil
}

// Close stops background work (finishing a flush in progress, abandoning a
// compaction), fails writes still queued with ErrClosed, syncs and closes
// the WAL and releases the directory lock. Unflushed memtable contents stay
// in the WAL for the next Open; with DisableWAL they are lost unless Flush
// ran. Close it after every iterator. Calling Close again does nothing.
func (d *DB) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	d.mu.Lock()
	d.closing = true
	d.cond.Broadcast()
	d.mu.Unlock()
	close(d.closeCh)
	d.wg.Wait()
	d.prefaults.Wait()
	// Requests queued after the committer's last look (none can be added
	// now: the queue is closed) and when no committer ran (ReadOnly).
	for _, r := range d.commit.close() {
		r.fail(ErrClosed)
	}

	var err error
	if d.wal != nil {
		err = d.wal.close()
	}
	d.manifestMu.Lock()
	d.closedManifest = true
	d.manifest.close()
	d.manifest = nil
	d.manifestMu.Unlock()

	d.deleteObsoleteTables()
	d.tc.closeAll()
	if d.ownCache {
		d.cache.Close()
	}
	if lerr := d.lock.release(); err == nil {
		err = lerr
	}
	return err
}

// markObsolete queues a table no version references for deletion.
func (d *DB) markObsolete(f *fileMetadata) {
	d.obsoleteMu.Lock()
	d.obsoleteTables = append(d.obsoleteTables, f)
	d.obsoleteMu.Unlock()
	d.maybeScheduleCompaction()
}

// deleteObsoleteTables closes and deletes the queued obsolete tables.
// Losing a deletion to a crash is harmless: Open removes unreferenced
// tables. Callers take turns (deleteMu): when it returns, every table
// queued before the call is gone, including those another caller had
// taken off the queue and was still deleting.
func (d *DB) deleteObsoleteTables() {
	d.deleteMu.Lock()
	defer d.deleteMu.Unlock()
	d.obsoleteMu.Lock()
	files := d.obsoleteTables
	d.obsoleteTables = nil
	d.obsoleteMu.Unlock()
	for _, f := range files {
		d.tc.evict(f)
		if !d.opts.ReadOnly {
			d.removeTable(f.fileNum)
		}
	}
}

// deleteObsoleteWALs deletes the WALs older than logNum, which a synced
// manifest edit has declared covered by tables.
func (d *DB) deleteObsoleteWALs(logNum uint64) {
	d.mu.Lock()
	i := 0
	for i < len(d.walNums) && d.walNums[i] < logNum {
		i++
	}
	obsolete := slices.Clone(d.walNums[:i])
	d.walNums = d.walNums[i:]
	d.mu.Unlock()
	for _, n := range obsolete {
		name := d.opts.FS.PathJoin(d.dirname, makeFilename(fileTypeLog, n))
		if err := d.opts.FS.Remove(name); err != nil {
			d.opts.Logger.Warn("lsm: remove obsolete WAL", "wal", name, "err", err)
		}
	}
}

// Health reports what is wrong with the DB right now, or nil: a failed
// commit or a compaction that met a damaged table disabled writes (for
// good, until the DB is reopened); a read found a damaged table (for good
// too: reads of its damaged blocks fail until an operator restores it, but
// writes and other reads go on); or memtables cannot be flushed (a full
// disk, say: writes go on until memtables pile up, then fail; see
// rotateMemtable). It only reports: nothing refuses writes because of what
// it returns.
func (d *DB) Health() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bgErr != nil {
		return d.bgErr
	}
	// Before the transient conditions below: damage does not go away, and
	// a flush failing for a while must not hide it.
	if err := d.damageErr(); err != nil {
		return err
	}
	if d.walCreateFailing != nil {
		return d.walCreateFailing
	}
	if d.flushFailing != nil {
		return fmt.Errorf("lsm: flushes failing: %w", d.flushFailing)
	}
	if d.compactFailing != nil && len(d.current.levels[0]) >= d.opts.L0SlowdownWrites {
		return fmt.Errorf("lsm: compactions failing with %d level-0 tables: %w", len(d.current.levels[0]), d.compactFailing)
	}
	return nil
}
