package main

import (
	"os"
	"runtime/debug"

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
