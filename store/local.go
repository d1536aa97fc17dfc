package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
)

// ErrStandalone is returned by membership operations on a standalone node.
var ErrStandalone = errors.New("cluster mode is not enabled on this node")

// LSMOptions maps the [storage] section to engine options.
func LSMOptions(s conf.Storage, logger *slog.Logger) lsm.Options {
	o := lsm.Options{
		SyncInterval:        s.SyncInterval.D(),
		MemtableBytes:       int64(s.MemtableBytes),
		BlockCacheBytes:     int64(s.BlockCacheBytes),
		MaxOpenTables:       s.MaxOpenTables,
		BlockBytes:          int(s.BlockBytes),
		L0CompactionTrigger: s.L0CompactionTrigger,
		L0StopWrites:        s.L0StopWrites,
		LevelBaseBytes:      int64(s.LevelBaseBytes),
		Logger:              logger,
	}
	switch s.Sync {
	case "batch":
		o.Sync = lsm.SyncBatch
	case "none":
		o.Sync = lsm.SyncNone
	default:
		o.Sync = lsm.SyncAlways
	}
	switch s.Compression {
	case "zstd":
		o.Compression = lsm.CompressionZstd
	case "none":
		o.Compression = lsm.CompressionNone
	default:
		o.Compression = lsm.CompressionDefault
	}
	if o.L0StopWrites > 0 {
		// Slow writes down two-thirds of the way to the stop, as LevelDB does.
		o.L0SlowdownWrites = o.L0CompactionTrigger + (o.L0StopWrites-o.L0CompactionTrigger)*2/3
	}
	return o
}

// asyncRangeBytes is the memtable backlog above which Range runs on a
// goroutine of its own: the first ordered read after a burst of writes
// sorts and links that burst (~300 ns an entry, 64 MiB of entries ~100 ms),
// which on the caller's goroutine would stall every connection of its
// event loop. Below it (a few hundred microseconds at most) the hand-off
// would cost more than it saves.
const asyncRangeBytes = 256 << 10

// asyncRangeSkips is the count of entries a scan may step over without
// returning them (lsm.DB.RangeSkipsOver) above which Range runs on a
// goroutine of its own: ~0.25 µs each, so ~2.5 ms of the event loop.
const asyncRangeSkips = 10000

// Local is the standalone Store: one lsm engine on local disk, answering
// as a cluster of one node and one shard that is always healthy.
type Local struct {
	db     *lsm.DB
	client string
	clear  sync.Mutex

	bgMu     sync.Mutex
	bgClosed bool
	bg       sync.WaitGroup // ranges, clears and disk reads running on their own goroutines

	// diskReads bounds the reads waiting for the disk at once: each
	// blocked read holds an OS thread, and a burst of cold reads (an MGET
	// of thousands of keys) must not approach Go's thread limit. Reads
	// beyond it wait as goroutines, which hold none.
	diskReads chan struct{}
}

// maxDiskReads is how many reads may wait for the disk at once.
const maxDiskReads = 64

// NewLocal serves db; client is the node's client address for CLUSTER_*.
func NewLocal(db *lsm.DB, client string) *Local {
	return &Local{db: db, client: client, diskReads: make(chan struct{}, maxDiskReads)}
}

// Backup writes a consistent copy of the data to w as a tar archive of
// engine files (lsm.DB.WriteBackup): extracted into an empty directory, it
// is a data directory to start on.
func (l *Local) Backup(w io.Writer) error { return l.db.WriteBackup(w) }

// DB returns the engine.
func (l *Local) DB() *lsm.DB { return l.db }

// Get reads key. What is in memory (memtables, the block cache, the OS
// page cache) is read on the caller's goroutine: the engine's reads never
// wait on a sync. A read that needs the disk runs on a goroutine of its
// own (Close waits for it; at most maxDiskReads at once), so that the
// caller, an event loop, does not hold up its other connections for it;
// once the store is closing it is answered on the caller's goroutine.
func (l *Local) Get(key []byte, done func([]byte, error)) {
	v, err := l.GetSync(key)
	if errors.Is(err, ErrWouldBlock) {
		key = bytes.Clone(key)
		if l.background(func() {
			l.diskReads <- struct{}{}
			defer func() { <-l.diskReads }()
			done(readResult(l.db.Get(key)))
		}) {
			return
		}
		v, err = readResult(l.db.Get(key))
	}
	done(v, err)
}

// GetSync reads key on the caller's goroutine if that needs no disk read,
// and returns ErrWouldBlock otherwise.
func (l *Local) GetSync(key []byte) ([]byte, error) {
	return readResult(l.db.GetNoWait(key))
}

// readResult maps an engine read's error to the store's.
func readResult(v []byte, err error) ([]byte, error) {
	if err != nil && err != lsm.ErrNotFound && !errors.Is(err, lsm.ErrWouldBlock) {
		err = storageErr(err)
	}
	return v, err
}

// Write hands b to the engine's commit pipeline; done runs once b is
// durable under the sync policy.
func (l *Local) Write(b *lsm.Batch, done func(error)) {
	l.db.WriteAsync(b, func(err error) {
		if err != nil {
			err = storageErr(err)
		}
		done(err)
	})
}

// Range scans [start, end) on the caller's goroutine, without waiting for
// the disk, unless the memtables hold more than asyncRangeBytes of entries
// not yet in key order or the scan may step over more than
// asyncRangeSkips entries it does not return (tombstones, overwritten
// versions): those, and a scan that meets a block it would have to read
// from the disk (started again from the beginning), run on a goroutine of
// their own. limit bounds the work.
func (l *Local) Range(start, end []byte, limit int, done func([]KV, error)) {
	if len(end) == 0 {
		end = nil
	}
	if l.db.UnorderedBytes() <= asyncRangeBytes && !l.db.RangeSkipsOver(start, end, asyncRangeSkips) {
		kvs, err := l.scan(start, end, limit, true)
		if !errors.Is(err, lsm.ErrWouldBlock) {
			done(kvs, err)
			return
		}
	}
	start, end = bytes.Clone(start), bytes.Clone(end)
	if !l.background(func() { done(l.scan(start, end, limit, false)) }) {
		done(l.scan(start, end, limit, false))
	}
}

// scan collects the pairs of [start, end), at most limit of them and
// MaxRangeBytes; with nowait it fails with lsm.ErrWouldBlock rather than
// wait for the disk.
func (l *Local) scan(start, end []byte, limit int, nowait bool) ([]KV, error) {
	newIter := l.db.NewIterator
	if nowait {
		newIter = l.db.NewIteratorNoWait
	}
	it := newIter(start, end)
	var kvs []KV
	size := 0
	for ok := it.First(); ok && len(kvs) < limit && size <= MaxRangeBytes; ok = it.Next() {
		kvs = append(kvs, KV{Key: bytes.Clone(it.Key()), Value: bytes.Clone(it.Value())})
		size += len(it.Key()) + len(it.Value())
	}
	if err := it.Close(); err != nil {
		if errors.Is(err, lsm.ErrWouldBlock) {
			return nil, err
		}
		return nil, storageErr(err)
	}
	if size > MaxRangeBytes {
		return kvs, ErrRangeTruncated
	}
	return kvs, nil
}

// background runs f on a goroutine Close waits for; false means the store
// is closing and f was not started.
func (l *Local) background(f func()) bool {
	l.bgMu.Lock()
	defer l.bgMu.Unlock()
	if l.bgClosed {
		return false
	}
	l.bg.Add(1)
	go func() {
		defer l.bg.Done()
		f()
	}()
	return true
}

// Clear deletes every key, in batches, on a goroutine of its own. Writes
// that race with it may survive; FLUSHALL is an administrative command.
func (l *Local) Clear(done func(error)) {
	run := func() {
		l.clear.Lock()
		defer l.clear.Unlock()
		done(l.clearAll())
	}
	if !l.background(run) {
		done(storageErr(lsm.ErrClosed))
	}
}

func (l *Local) clearAll() error {
	it := l.db.NewIterator(nil, nil)
	b := lsm.NewBatch()
	for ok := it.First(); ok; ok = it.Next() {
		b.Delete(it.Key())
		if b.Len() >= 1000 {
			if err := l.db.Write(b); err != nil {
				it.Close()
				return storageErr(err)
			}
			b = lsm.NewBatch()
		}
	}
	if err := it.Close(); err != nil {
		return storageErr(err)
	}
	if b.Len() > 0 {
		if err := l.db.Write(b); err != nil {
			return storageErr(err)
		}
	}
	return nil
}

// ApproxKeys estimates live keys from engine metrics.
func (l *Local) ApproxKeys() int64 { return l.db.Metrics().ApproxKeys }

// Health reports why the engine cannot take writes now, or a damaged
// table that reads found, or nil (/healthz, INFO).
func (l *Local) Health() error {
	if err := l.db.Health(); err != nil {
		return storageErr(err)
	}
	return nil
}

// EngineMetrics reports the engine's metrics (INFO, /metrics).
func (l *Local) EngineMetrics() lsm.Metrics { return l.db.Metrics() }

// Status reports a one-node, one-shard cluster that is always healthy.
func (l *Local) Status() Status {
	return Status{Mode: "standalone", State: "healthy", NodeID: 1, Nodes: 1, NodesUp: 1, Shards: 1, ShardsWithLeader: 1, ShardsLed: 1}
}

// Nodes reports this node.
func (l *Local) Nodes() []Node { return []Node{{ID: 1, Client: l.client, Up: true}} }

// Leader is always this node.
func (l *Local) Leader([]byte) (Node, error) { return Node{ID: 1, Client: l.client, Up: true}, nil }

// Join is refused: a standalone node has no raft groups to join.
func (l *Local) Join(_ uint64, _, _ string, done func(error)) { done(ErrStandalone) }

// Remove is refused like Join.
func (l *Local) Remove(_ uint64, done func(error)) { done(ErrStandalone) }

// Deployment is 0: a standalone node has no raft deployment.
func (l *Local) Deployment() uint64 { return 0 }

// Close waits for the ranges, clears and disk reads running on their own
// goroutines, then closes the engine.
func (l *Local) Close() error {
	l.bgMu.Lock()
	l.bgClosed = true
	l.bgMu.Unlock()
	l.bg.Wait()
	// Flush the memtable first, so the next start has no log to replay.
	// Its writes are durable in the WAL either way: a failed flush (a full
	// disk) loses nothing, but is reported.
	flushErr := l.db.Flush()
	if err := l.db.Close(); err != nil {
		return err
	}
	if flushErr != nil && !errors.Is(flushErr, lsm.ErrClosed) {
		return fmt.Errorf("flush at close (the WAL still holds its writes): %w", flushErr)
	}
	return nil
}

func storageErr(err error) error {
	if errors.Is(err, lsm.ErrClosed) {
		return fmt.Errorf("storage unavailable: shutting down")
	}
	return fmt.Errorf("storage unavailable: %w", err)
}
