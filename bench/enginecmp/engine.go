package main

import (
	"context"
	"os"
	"path/filepath"
	"time"
)

// engine is one open database under test. The workloads see nothing else,
// so both engines do exactly the same work in the same order.
type engine interface {
	// Put writes one key with the write mode the engine was opened with.
	Put(key, value []byte) error
	// NewBatch returns a reusable batch for multi-key writes.
	NewBatch() writeBatch
	// Get looks key up and, when it is present, passes the value to fn. The
	// value is only valid during fn, which lets each engine use its natural
	// API (a copy for ours, a pinned slice plus closer for pebble).
	Get(key []byte, fn func(value []byte) error) (found bool, err error)
	// Scan iterates over every key in order and returns how many it saw.
	Scan(fn func(key, value []byte) error) (int, error)
	// Settle flushes the memtable and waits until no flush or compaction is
	// running or due, so background work of one phase never overlaps the
	// next measured phase (of either engine).
	Settle(ctx context.Context) error
	// Stats reports the engine's own counters.
	Stats() engineStats
	Close() error
}

// writeBatch collects writes that commit atomically.
type writeBatch interface {
	Put(key, value []byte) error
	// Commit applies the batch and empties it for reuse.
	Commit() error
	Close()
}

// engineStats are the counters each engine reports about itself.
type engineStats struct {
	Flushes, Compactions int64
	// WriteAmp is the engine's own write-amplification figure: bytes
	// written to WAL and tables over bytes written by the user.
	WriteAmp float64
}

// engineKind opens engines of one implementation.
type engineKind struct {
	name string
	// open opens (creating) a DB in dir. syncWrites selects fsync-on-commit
	// writes (SyncAlways / pebble.Sync) instead of unsynced ones.
	open func(dir string, cfg *config, syncWrites bool) (engine, error)
}

// settlePoll is how often Settle looks at the engine's metrics, and
// settleQuietPolls how many consecutive polls must see an idle engine with an
// unchanged compaction count before it is considered settled.
const (
	settlePoll       = 50 * time.Millisecond
	settleQuietPolls = 4
)

// waitIdle polls idle until it has reported true, with the same progress
// counter, settleQuietPolls times in a row.
func waitIdle(ctx context.Context, idle func() (bool, int64)) error {
	quiet := 0
	var last int64 = -1
	for quiet < settleQuietPolls {
		ok, progress := idle()
		if ok && progress == last {
			quiet++
		} else {
			quiet = 0
		}
		last = progress
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(settlePoll):
		}
	}
	return nil
}

// dirBytes is the total size of the regular files under dir, and of those
// that are tables (*.sst, the name both engines use).
func dirBytes(dir string) (all, tables int64) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			all += info.Size()
			if filepath.Ext(path) == ".sst" {
				tables += info.Size()
			}
		}
		return nil
	})
	return all, tables
}
