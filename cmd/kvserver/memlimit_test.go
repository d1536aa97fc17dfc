package main

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
)

func TestMemoryLimitFollowsBudgets(t *testing.T) {
	c := conf.Default()
	// Four 64 MiB memtables and a 256 MiB cache, a quarter more, 256 MiB.
	if got, want := memoryLimit(c), int64(896<<20); got != want {
		t.Fatalf("default budgets: limit %d, want %d", got, want)
	}
	c.Storage.MemtableBytes, c.Storage.BlockCacheBytes = 8<<20, 1<<30
	if got, want := memoryLimit(c), int64((32<<20+1<<30)*5/4+256<<20); got != want {
		t.Fatalf("limit %d, want %d", got, want)
	}
	// The engine caps a memtable at 2 GiB: so does the limit.
	c.Storage.MemtableBytes = conf.TiB
	if got, want := memoryLimit(c), int64((4*(2<<30-1)+1<<30)*5/4+256<<20); got != want {
		t.Fatalf("1 TiB memtables: limit %d, want %d", got, want)
	}
	// In cluster mode every shard has its memtables, at least 1 MiB each.
	c = conf.Default()
	c.Cluster.Enabled, c.Cluster.Shards, c.Storage.MemtableBytes = true, 64, 16<<20
	if got, want := memoryLimit(c), int64((64*4<<20+256<<20)*5/4+256<<20); got != want {
		t.Fatalf("64 shards: limit %d, want %d", got, want)
	}
}

func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	c := conf.Default()
	t.Setenv("GOMEMLIMIT", "")
	if got := setMemoryLimit(c); got != memoryLimit(c) || debug.SetMemoryLimit(-1) != got {
		t.Fatalf("limit in force %d, want %d", debug.SetMemoryLimit(-1), memoryLimit(c))
	}
	// GOMEMLIMIT wins: whatever the runtime has is left alone.
	debug.SetMemoryLimit(123 << 20)
	t.Setenv("GOMEMLIMIT", "123MiB")
	if got := setMemoryLimit(c); got != 123<<20 || debug.SetMemoryLimit(-1) != 123<<20 {
		t.Fatalf("with GOMEMLIMIT set: %d", got)
	}
}

// TestMemoryLimitFollowsTableMemory: the indexes and filters of open
// tables grow with the data and are in no budget; the limit must rise
// with them, or past it the collector runs back to back.
func TestMemoryLimitFollowsTableMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("GOMEMLIMIT", "")
	base := memoryLimit(conf.Default())
	debug.SetMemoryLimit(base)
	var tables atomic.Int64
	metrics := func() lsm.Metrics { return lsm.Metrics{TableMemory: tables.Load()} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		followTableMemory(ctx, base, time.Millisecond, metrics)
	}()
	waitLimit := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); debug.SetMemoryLimit(-1) != want; {
			if time.Now().After(deadline) {
				t.Fatalf("limit %d, want %d", debug.SetMemoryLimit(-1), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	tables.Store(400 << 20)
	waitLimit(base + 500<<20)
	// Tables compacted away give their memory back, and so does the limit.
	tables.Store(40 << 20)
	waitLimit(base + 50<<20)
	cancel()
	<-done

	// GOMEMLIMIT wins: the limit is left alone.
	debug.SetMemoryLimit(123 << 20)
	t.Setenv("GOMEMLIMIT", "123MiB")
	followTableMemory(context.Background(), base, time.Millisecond, metrics) // returns at once
	if got := debug.SetMemoryLimit(-1); got != 123<<20 {
		t.Fatalf("with GOMEMLIMIT set: limit %d", got)
	}
}
