package main

import (
	"context"
	"os"
	"runtime/debug"
	"time"

	"github.com/kvstore/kv/cluster"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
)

// memoryHeadroom is what the memory limit allows beyond the engine's
// budgets: connections' buffers, replies, batches, compactions, raft.
const memoryHeadroom = 256 << 20

// memoryLimit is the soft memory limit kvserver gives the Go runtime:
// the engine's budgets (every memtable that can exist at once, in every
// shard in cluster mode, and the block cache) plus a quarter and
// memoryHeadroom.
//
// Why: memtable arenas and cached blocks live on the Go heap, and with the
// default GOGC the heap grows to twice what is live before a collection.
// With the default budgets (64 MiB memtables, 256 MiB cache) a loaded
// server sat at 1.2-1.3 GB RSS, four times what its configuration
// suggests; with this limit, 0.8-0.9 GB. The limit is soft: if more is live (many
// clients with large pending replies), the collector works harder (the
// runtime caps it at half the CPU) rather than failing.
func memoryLimit(cfg conf.Config) int64 {
	memtables := lsm.MemtableMemory(int64(cfg.Storage.MemtableBytes))
	if cfg.Cluster.Enabled {
		memtables = int64(cfg.Cluster.Shards) * lsm.MemtableMemory(cluster.ShardMemtableBytes(cfg))
	}
	budget := memtables + int64(cfg.Storage.BlockCacheBytes)
	return budget + budget/4 + memoryHeadroom
}

// setMemoryLimit applies memoryLimit unless GOMEMLIMIT is set, and returns
// the limit in force.
func setMemoryLimit(cfg conf.Config) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	limit := memoryLimit(cfg)
	debug.SetMemoryLimit(limit)
	return limit
}

// tableMemoryInterval is how often the memory limit is brought in line
// with the engine's table memory.
const tableMemoryInterval = 5 * time.Second

// limitWithTables is the memory limit given base (memoryLimit) when the
// engine's open tables hold tables bytes, and a quarter more for the
// garbage collector's slack, as the budgets have.
func limitWithTables(base, tables int64) int64 {
	return base + tables + tables/4
}

// followTableMemory keeps the memory limit at limitWithTables, looking at
// the engine's metrics every interval, until ctx is done, unless
// GOMEMLIMIT is set.
//
// Why: every open table keeps its index and bloom filter on the heap
// (lsm.Metrics.TableMemory), outside the budgets memoryLimit counts, and
// they grow with the data: ~414 MiB at 12 GB of 16-byte keys and 100-byte
// values. Once they bring the live heap to the limit the collector runs
// back to back: with that data, a server with the default budgets ran
// four collections a second and spent a third of its CPU marking; one
// with a 64 MiB cache and 16 MiB memtables (limit 416 MiB) served 11-18K
// random GETs a second at p99 12-27 ms, and 33-41K at 3-5 ms with the
// limit following the tables.
func followTableMemory(ctx context.Context, base int64, every time.Duration, metrics func() lsm.Metrics) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		debug.SetMemoryLimit(limitWithTables(base, metrics().TableMemory))
	}
}
