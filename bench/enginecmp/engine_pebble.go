package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
)

// pebbleKind is github.com/cockroachdb/pebble/v2, configured as its serious
// users run it: bloom filters on every level and an explicit cache.
var pebbleKind = engineKind{name: "pebble", open: openPebble}

type pebbleEngine struct {
	db *pebble.DB
	wo *pebble.WriteOptions
}

func pebbleOptions(cfg *config, cache *pebble.Cache) *pebble.Options {
	opts := &pebble.Options{
		Cache:        cache,
		MemTableSize: uint64(cfg.memtable),
		// Pebble's defaults, which match ours (L0 trigger 4, stop 12,
		// 64 MiB base level, one compaction at a time, writes stop
		// when two memtables wait for flush); spelled out so both sides
		// visibly use the same shape.
		MemTableStopWritesThreshold: 2,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       12,
		LBaseMaxBytes:               64 << 20,
		CompactionConcurrencyRange:  func() (int, int) { return 1, 1 },
		Logger:                      quietLogger{},
	}
	switch cfg.pebbleFormat {
	case "newest":
		// What a new deployment gets: columnar blocks (on by default in
		// v2.1.7 once the format allows them).
		opts.FormatMajorVersion = pebble.FormatNewest
	case "min":
		// Pebble's default format: row blocks.
		opts.FormatMajorVersion = pebble.FormatMinSupported
	}
	for i := range opts.Levels {
		l := &opts.Levels[i]
		l.BlockSize = cfg.blockSize
		if cfg.bloomBits > 0 {
			l.FilterPolicy = bloom.FilterPolicy(cfg.bloomBits)
		}
		l.Compression = func() *sstable.CompressionProfile { return sstable.SnappyCompression }
	}
	return opts
}

func openPebble(dir string, cfg *config, syncWrites bool) (engine, error) {
	cache := pebble.NewCache(cfg.cache)
	// The DB takes its own reference.
	defer cache.Unref()
	db, err := pebble.Open(dir, pebbleOptions(cfg, cache))
	if err != nil {
		return nil, fmt.Errorf("open pebble %s: %w", dir, err)
	}
	e := &pebbleEngine{db: db, wo: pebble.NoSync}
	if syncWrites {
		e.wo = pebble.Sync
	}
	return e, nil
}

func (e *pebbleEngine) Put(key, value []byte) error { return e.db.Set(key, value, e.wo) }

func (e *pebbleEngine) NewBatch() writeBatch {
	return &pebbleBatch{db: e.db, wo: e.wo, b: e.db.NewBatch()}
}

func (e *pebbleEngine) Get(key []byte, fn func([]byte) error) (bool, error) {
	v, closer, err := e.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = fn(v)
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	return true, err
}

func (e *pebbleEngine) Scan(fn func(key, value []byte) error) (int, error) {
	it, err := e.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			err = fn(it.Key(), v)
		}
		if err != nil {
			it.Close()
			return n, err
		}
		n++
	}
	if err := it.Error(); err != nil {
		it.Close()
		return n, err
	}
	return n, it.Close()
}

func (e *pebbleEngine) Settle(ctx context.Context) error {
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return waitIdle(ctx, func() (bool, int64) {
		m := e.db.Metrics()
		if m.Flush.NumInProgress > 0 || m.Compact.NumInProgress > 0 {
			return false, m.Compact.Count
		}
		// The bottom level is only ever a compaction output (as in pebble's
		// own `bench --wait-compactions`).
		for _, l := range m.Levels[:len(m.Levels)-1] {
			if l.Score >= 1 {
				return false, m.Compact.Count
			}
		}
		return true, m.Compact.Count
	})
}

func (e *pebbleEngine) Stats() engineStats {
	m := e.db.Metrics()
	total := m.Total()
	return engineStats{Flushes: m.Flush.Count, Compactions: m.Compact.Count, WriteAmp: total.WriteAmp()}
}

func (e *pebbleEngine) Close() error { return e.db.Close() }

type pebbleBatch struct {
	db *pebble.DB
	wo *pebble.WriteOptions
	b  *pebble.Batch
}

func (b *pebbleBatch) Put(key, value []byte) error { return b.b.Set(key, value, nil) }

func (b *pebbleBatch) Commit() error {
	err := b.b.Commit(b.wo)
	// Closing returns the batch to pebble's pool; a fresh one from the pool
	// is pebble's idiomatic reuse.
	if cerr := b.b.Close(); err == nil {
		err = cerr
	}
	b.b = b.db.NewBatch()
	return err
}

func (b *pebbleBatch) Close() { _ = b.b.Close() }

// quietLogger drops pebble's informational messages ("Found N WALs", ...)
// and keeps its errors on stderr.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}

func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
}

func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: fatal: "+format+"\n", args...)
	os.Exit(2)
}
