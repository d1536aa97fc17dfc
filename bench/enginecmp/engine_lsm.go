package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvstore/kv/lsm"
)

// ourKind is our engine, package lsm.
var ourKind = engineKind{name: "ours", open: openLSM}

type lsmEngine struct{ db *lsm.DB }

func openLSM(dir string, cfg *config, syncWrites bool) (engine, error) {
	opts := lsm.Options{
		Sync:            lsm.SyncNone,
		MemtableBytes:   cfg.memtable,
		BlockCacheBytes: cfg.cache,
		BlockBytes:      cfg.blockSize,
		Compression:     lsm.CompressionS2,
		BloomBitsPerKey: cfg.bloomBits,
		// The L0 thresholds and level sizing are the defaults of both
		// engines; spelled out so a change of default shows up here.
		L0CompactionTrigger: 4,
		L0StopWrites:        12,
		LevelBaseBytes:      64 << 20,
	}
	if syncWrites {
		opts.Sync = lsm.SyncAlways
	}
	db, err := lsm.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open lsm %s: %w", dir, err)
	}
	return &lsmEngine{db: db}, nil
}

func (e *lsmEngine) Put(key, value []byte) error { return e.db.Put(key, value) }

func (e *lsmEngine) NewBatch() writeBatch { return &lsmBatch{db: e.db, b: lsm.NewBatch()} }

func (e *lsmEngine) Get(key []byte, fn func([]byte) error) (bool, error) {
	v, err := e.db.Get(key)
	if errors.Is(err, lsm.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, fn(v)
}

func (e *lsmEngine) Scan(fn func(key, value []byte) error) (int, error) {
	it := e.db.NewIterator(nil, nil)
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return n, err
		}
		n++
	}
	if err := it.Err(); err != nil {
		it.Close()
		return n, err
	}
	return n, it.Close()
}

func (e *lsmEngine) Settle(ctx context.Context) error {
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return waitIdle(ctx, func() (bool, int64) {
		m := e.db.Metrics()
		if m.ImmutableMemtables > 0 {
			return false, m.Compactions
		}
		// A level with score >= 1 is due (pickCompaction's rule); while a
		// compaction runs its input level keeps its score until the result
		// is installed, and the compaction counter moves when it is.
		for _, l := range m.Levels {
			if l.Score >= 1 {
				return false, m.Compactions
			}
		}
		return true, m.Compactions
	})
}

func (e *lsmEngine) Stats() engineStats {
	m := e.db.Metrics()
	return engineStats{Flushes: m.Flushes, Compactions: m.Compactions, WriteAmp: m.WriteAmp}
}

func (e *lsmEngine) Close() error { return e.db.Close() }

type lsmBatch struct {
	db *lsm.DB
	b  *lsm.Batch
}

func (b *lsmBatch) Put(key, value []byte) error {
	b.b.Put(key, value)
	return nil
}

func (b *lsmBatch) Commit() error {
	err := b.db.Write(b.b)
	b.b.Reset()
	return err
}

func (b *lsmBatch) Close() {}
