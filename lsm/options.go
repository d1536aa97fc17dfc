package lsm

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/lsm/sstable"
)

// SyncMode says when a write is acknowledged relative to the WAL fsync.
type SyncMode int

const (
	// SyncAlways acknowledges a write only after the WAL holding it is
	// fsynced. Concurrent writers share one fsync (group commit).
	SyncAlways SyncMode = iota
	// SyncBatch acknowledges a write once it reaches the OS (write(2)) and
	// fsyncs the WAL at least every Options.SyncInterval.
	SyncBatch
	// SyncNone acknowledges a write once it reaches the OS and leaves the
	// fsync to the OS (and to memtable rotation and Close).
	SyncNone
)

func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncBatch:
		return "batch"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// Compression selects the block compression of new tables.
type Compression int

const (
	// CompressionDefault uses s2 above the bottom level and zstd at the
	// bottom level, where data is rewritten least often.
	CompressionDefault Compression = iota
	// CompressionS2 uses s2 on every level.
	CompressionS2
	// CompressionZstd uses zstd on every level.
	CompressionZstd
	// CompressionNone stores blocks uncompressed.
	CompressionNone
)

// Options configures a DB. The zero value selects the documented defaults.
type Options struct {
	// Sync is the durability of an acknowledged write; default SyncAlways.
	Sync SyncMode
	// SyncInterval is the SyncBatch fsync period; default 100ms.
	SyncInterval time.Duration
	// MemtableBytes is the size at which a memtable becomes immutable and
	// is flushed; default 64 MiB. Up to MemtableMemory(MemtableBytes) of
	// memtables exist at once; their arenas take memory as they are written.
	MemtableBytes int64
	// BlockCacheBytes sizes the DB's own block cache; default 256 MiB.
	// Ignored when Cache is set.
	BlockCacheBytes int64
	// Cache, when set, is a block cache shared with other DBs of the
	// process. The DB does not close it; close it after every DB using it.
	Cache *cache.Cache
	// MaxOpenTables bounds the table files the DB holds open at once;
	// default 1000. A table over the bound keeps its index and filter in
	// memory and reopens its file when a read misses the block cache.
	// Ignored when TableFiles is set.
	MaxOpenTables int
	// TableFiles, when set, is a bound on open table files shared with
	// other DBs of the process.
	TableFiles *sstable.FileCache
	// BlockBytes is the target size of a table data block; default 4096.
	BlockBytes int
	// Compression of table blocks; default CompressionDefault.
	Compression Compression
	// BloomBitsPerKey sizes the per-table bloom filter; default 10. A
	// negative value disables the filter.
	BloomBitsPerKey int
	// L0CompactionTrigger is the L0 file count that starts an L0->L1
	// compaction; default 4.
	L0CompactionTrigger int
	// L0SlowdownWrites is the L0 file count from which each commit group is
	// delayed by 1 ms; default 8.
	L0SlowdownWrites int
	// L0StopWrites is the L0 file count at which commits wait for
	// compaction; default 12.
	L0StopWrites int
	// LevelBaseBytes is the target size of L1; each deeper level is ten
	// times larger. Default 64 MiB.
	LevelBaseBytes int64
	// TargetFileBytes is the size at which compaction cuts output tables;
	// default 8 MiB.
	TargetFileBytes int64
	// DisableWAL turns the WAL off: writes are acknowledged once in the
	// memtable and become durable only when Flush returns. For callers that
	// keep their own log (cluster mode: raft).
	DisableWAL bool
	// ReadOnly opens without writing anything: writes, Flush and
	// Checkpoint fail with ErrReadOnly, and WAL contents are replayed into
	// memory only.
	ReadOnly bool
	// RecoverDamagedWAL opens a DB whose WAL holds a damaged record, which
	// Open otherwise refuses with ErrCorruption, by keeping every batch
	// before the damage and dropping the rest: the damaged record, the
	// records after it and every later WAL (point-in-time recovery, what
	// redis-check-aof --fix does to an AOF). Writes acknowledged after the
	// damage are lost, so it is an operator's decision for one start, never
	// a default. The dropped WALs stay in the directory as NAME.corrupt.
	// A damaged last record of the newest WAL is a torn tail either way
	// (dropped with a warning). Ignored with ReadOnly, which writes nothing.
	RecoverDamagedWAL bool
	// FS is the filesystem; default vfs.Default.
	FS vfs.FS
	// Logger receives warnings (a repaired WAL tail, background errors);
	// default discards.
	Logger *slog.Logger

	// maxManifestBytes is the manifest size that triggers a rewrite into a
	// new manifest; tests lower it to exercise rotation.
	maxManifestBytes int64
}

const (
	defaultSyncInterval     = 100 * time.Millisecond
	defaultMemtableBytes    = 64 << 20
	defaultBlockCacheBytes  = 256 << 20
	defaultBlockBytes       = 4096
	defaultMaxOpenTables    = 1000
	defaultBloomBitsPerKey  = 10
	defaultL0Compaction     = 4
	defaultL0Slowdown       = 8
	defaultL0Stop           = 12
	defaultLevelBaseBytes   = 64 << 20
	defaultTargetFileBytes  = 8 << 20
	defaultMaxManifestBytes = 64 << 20

	// minMemtableBytes is the smallest memtable: it must hold the skiplist's
	// fixed overhead and a few entries.
	minMemtableBytes = 64 << 10
	// maxMemtableBytes keeps arena offsets within 32 bits.
	maxMemtableBytes = 2<<30 - 1
)

// withDefaults returns a copy of o with zero fields replaced by defaults, or
// an error for settings that cannot work.
func (o Options) withDefaults() (Options, error) {
	if o.Sync < SyncAlways || o.Sync > SyncNone {
		return o, fmt.Errorf("lsm: options: unknown sync mode %d", int(o.Sync))
	}
	if o.Compression < CompressionDefault || o.Compression > CompressionNone {
		return o, fmt.Errorf("lsm: options: unknown compression %d", int(o.Compression))
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = defaultSyncInterval
	}
	if o.MemtableBytes <= 0 {
		o.MemtableBytes = defaultMemtableBytes
	}
	o.MemtableBytes = min(max(o.MemtableBytes, minMemtableBytes), maxMemtableBytes)
	if o.BlockCacheBytes <= 0 {
		o.BlockCacheBytes = defaultBlockCacheBytes
	}
	if o.BlockBytes <= 0 {
		o.BlockBytes = defaultBlockBytes
	}
	if o.MaxOpenTables <= 0 {
		o.MaxOpenTables = defaultMaxOpenTables
	}
	switch {
	case o.BloomBitsPerKey == 0:
		o.BloomBitsPerKey = defaultBloomBitsPerKey
	case o.BloomBitsPerKey < 0:
		o.BloomBitsPerKey = 0
	}
	if o.L0CompactionTrigger <= 0 {
		o.L0CompactionTrigger = defaultL0Compaction
	}
	if o.L0SlowdownWrites <= 0 {
		o.L0SlowdownWrites = max(defaultL0Slowdown, o.L0CompactionTrigger)
	}
	if o.L0StopWrites <= 0 {
		o.L0StopWrites = max(defaultL0Stop, o.L0SlowdownWrites)
	}
	if o.L0SlowdownWrites < o.L0CompactionTrigger || o.L0StopWrites < o.L0SlowdownWrites {
		return o, fmt.Errorf("lsm: options: need L0CompactionTrigger (%d) <= L0SlowdownWrites (%d) <= L0StopWrites (%d)",
			o.L0CompactionTrigger, o.L0SlowdownWrites, o.L0StopWrites)
	}
	if o.LevelBaseBytes <= 0 {
		o.LevelBaseBytes = defaultLevelBaseBytes
	}
	if o.TargetFileBytes <= 0 {
		o.TargetFileBytes = defaultTargetFileBytes
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.maxManifestBytes <= 0 {
		o.maxManifestBytes = defaultMaxManifestBytes
	}
	return o, nil
}
