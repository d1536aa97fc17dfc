package lsm

import (
	"sync/atomic"
	"time"
)

// LevelMetrics describes one level of the tree.
type LevelMetrics struct {
	Files int
	Bytes int64
	// Score is the compaction urgency: >= 1 means the level is due (L0:
	// file count / L0CompactionTrigger; L1-L5: size / target size).
	Score float64
}

// Metrics is a snapshot of the DB's counters (cumulative since Open) and
// state.
type Metrics struct {
	// Levels is indexed by level (0-6).
	Levels []LevelMetrics

	// MemtableBytes is the memory in use by the mutable and immutable
	// memtables; ImmutableMemtables counts those waiting for flush.
	MemtableBytes      int64
	ImmutableMemtables int

	// WALBytes counts bytes appended to WALs; WALSyncs counts WAL fsyncs
	// (group commit makes it much smaller than the number of writes).
	WALBytes int64
	WALSyncs int64

	Flushes, Compactions   int64
	CompactionBytesRead    int64
	CompactionBytesWritten int64
	FlushBytes             int64

	// UserBytesWritten counts the encoded size of committed batches;
	// WriteAmp is (WAL + flush + compaction bytes written) / user bytes.
	UserBytesWritten int64
	WriteAmp         float64

	// StallCount counts commit groups that had to wait for a flush or a
	// compaction, StallDuration the time they waited; SlowdownCount counts
	// groups delayed by 1 ms because L0 is crowded.
	StallCount    int64
	StallDuration time.Duration
	SlowdownCount int64

	// WritesRefused counts batches refused because the memtables were full
	// while flushes failed (a full disk, say). ReadsNeedingDisk counts
	// GetNoWait calls that returned ErrWouldBlock.
	WritesRefused    int64
	ReadsNeedingDisk int64

	// CorruptReads counts reads (Get, GetNoWait, iterators: one per
	// iterator) that failed because a table is damaged (see Health).
	// Compactions that meet the damage are not counted.
	CorruptReads int64

	// CacheHits and CacheMisses are the block cache's counters (shared by
	// every DB using the cache).
	CacheHits, CacheMisses int64

	// TableFilesOpen is the number of table files held open and
	// TableFileReopens counts files reopened after the MaxOpenTables bound
	// closed them (both shared by every DB using the same TableFiles).
	TableFilesOpen, TableFileReopens int64

	// TableMemory is about the memory held by the open tables' indexes
	// and bloom filters (sstable.Reader.MemoryBytes). It is outside
	// every budget (MemtableBytes, the block cache) and grows with the
	// data: 30-35 MiB per GiB of tables with 16-byte keys and 100-byte
	// values. A table's are loaded at its first read and kept until the
	// table is obsolete.
	TableMemory int64

	// ApproxKeys estimates the number of live keys, never below zero:
	// each memtable's own estimate (memtable.Table.ApproxKeys: exact within
	// it) plus, for each table, its entries less two per tombstone (it is
	// no key and is assumed to hide one). A key with versions in several
	// tables or memtables counts once in each.
	ApproxKeys int64
	// Seq is the last visible sequence number.
	Seq uint64
}

// stallInProgress is how long the write stall in progress has lasted, so
// far (StallDuration grew only when a stall ended: a 5 s stall read as
// none until it was over).
func (d *DB) stallInProgress() time.Duration {
	if since := d.stallSince.Load(); since != 0 {
		return max(0, time.Since(time.Unix(0, since)))
	}
	return 0
}

// metricsCounters are the atomic counters behind Metrics.
type metricsCounters struct {
	walBytes, walSyncs            atomic.Int64
	flushes, flushBytes           atomic.Int64
	compactions, trivialMoves     atomic.Int64
	compactionBytesRead           atomic.Int64
	compactionBytesWritten        atomic.Int64
	userBytes                     atomic.Int64
	stalls, stallNanos, slowdowns atomic.Int64
	manifestRotations             atomic.Int64
	timedSyncs                    atomic.Int64 // by the SyncBatch timer
	writesRefused                 atomic.Int64
	readsNeedingDisk              atomic.Int64
	corruptReads                  atomic.Int64
}

// Metrics returns current counters and state.
func (d *DB) Metrics() Metrics {
	c := &d.metrics
	m := Metrics{
		WALBytes:               c.walBytes.Load(),
		WALSyncs:               c.walSyncs.Load(),
		Flushes:                c.flushes.Load(),
		Compactions:            c.compactions.Load(),
		CompactionBytesRead:    c.compactionBytesRead.Load(),
		CompactionBytesWritten: c.compactionBytesWritten.Load(),
		FlushBytes:             c.flushBytes.Load(),
		UserBytesWritten:       c.userBytes.Load(),
		StallCount:             c.stalls.Load(),
		StallDuration:          time.Duration(c.stallNanos.Load()) + d.stallInProgress(),
		SlowdownCount:          c.slowdowns.Load(),
		WritesRefused:          c.writesRefused.Load(),
		ReadsNeedingDisk:       c.readsNeedingDisk.Load(),
		CorruptReads:           c.corruptReads.Load(),
		Seq:                    d.visibleSeq.Load(),
	}
	m.WriteAmp = m.writeAmp()
	cs := d.cache.Stats()
	m.CacheHits, m.CacheMisses = cs.Hits, cs.Misses
	m.TableFilesOpen, m.TableFileReopens = d.tc.files.Open(), d.tc.files.Reopens()
	m.TableMemory = d.tc.memory.Load()

	rs := d.acquireReadState()
	defer rs.unref()
	scores := levelScores(rs.v, d.pickerOptions())
	m.Levels = make([]LevelMetrics, numLevels)
	for level, files := range rs.v.levels {
		lm := &m.Levels[level]
		lm.Files = len(files)
		lm.Score = scores[level]
		for _, f := range files {
			lm.Bytes += f.size
			m.ApproxKeys += f.entries - 2*f.deletions
		}
	}
	for _, mem := range append([]*memTable{rs.mem}, rs.imm...) {
		m.MemtableBytes += mem.t.Size()
		m.ApproxKeys += mem.t.ApproxKeys()
	}
	m.ApproxKeys = max(m.ApproxKeys, 0)
	m.ImmutableMemtables = len(rs.imm)
	return m
}

// Add adds o to m, for one total over several DBs: counters and sizes add
// up, levels level by level, and WriteAmp is recomputed from the sums.
// The cache counters are left alone, since DBs that share a block cache
// report the same ones, and so is Seq: sequence numbers of different DBs
// do not add up.
func (m *Metrics) Add(o Metrics) {
	for len(m.Levels) < len(o.Levels) {
		m.Levels = append(m.Levels, LevelMetrics{})
	}
	for i, l := range o.Levels {
		ml := &m.Levels[i]
		ml.Files += l.Files
		ml.Bytes += l.Bytes
		ml.Score = max(ml.Score, l.Score)
	}
	m.MemtableBytes += o.MemtableBytes
	m.ImmutableMemtables += o.ImmutableMemtables
	m.WALBytes += o.WALBytes
	m.WALSyncs += o.WALSyncs
	m.Flushes += o.Flushes
	m.Compactions += o.Compactions
	m.CompactionBytesRead += o.CompactionBytesRead
	m.CompactionBytesWritten += o.CompactionBytesWritten
	m.FlushBytes += o.FlushBytes
	m.UserBytesWritten += o.UserBytesWritten
	m.StallCount += o.StallCount
	m.StallDuration += o.StallDuration
	m.SlowdownCount += o.SlowdownCount
	m.WritesRefused += o.WritesRefused
	m.ReadsNeedingDisk += o.ReadsNeedingDisk
	m.CorruptReads += o.CorruptReads
	m.ApproxKeys += o.ApproxKeys
	m.TableMemory += o.TableMemory
	m.WriteAmp = m.writeAmp()
}

// writeAmp is WriteAmp computed from m's byte counters.
func (m *Metrics) writeAmp() float64 {
	if m.UserBytesWritten == 0 {
		return 0
	}
	return float64(m.WALBytes+m.FlushBytes+m.CompactionBytesWritten) / float64(m.UserBytesWritten)
}
