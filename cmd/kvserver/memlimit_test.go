package main

import (
	"runtime/debug"
	"testing"

	"github.com/kvstore/kv/conf"
)

func TestMemoryLimitFollowsBudgets(t *testing.T) {
	s := conf.Default().Storage
	// Four 64 MiB memtables and a 256 MiB cache, a quarter more, 256 MiB.
	if got, want := memoryLimit(s), int64(896<<20); got != want {
		t.Fatalf("default budgets: limit %d, want %d", got, want)
	}
	s.MemtableBytes, s.BlockCacheBytes = 8<<20, 1<<30
	if got, want := memoryLimit(s), int64((32<<20+1<<30)*5/4+256<<20); got != want {
		t.Fatalf("limit %d, want %d", got, want)
	}
}

func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	s := conf.Default().Storage
	t.Setenv("GOMEMLIMIT", "")
	if got := setMemoryLimit(s); got != memoryLimit(s) || debug.SetMemoryLimit(-1) != got {
		t.Fatalf("limit in force %d, want %d", debug.SetMemoryLimit(-1), memoryLimit(s))
	}
	// GOMEMLIMIT wins: whatever the runtime has is left alone.
	debug.SetMemoryLimit(123 << 20)
	t.Setenv("GOMEMLIMIT", "123MiB")
	if got := setMemoryLimit(s); got != 123<<20 || debug.SetMemoryLimit(-1) != 123<<20 {
		t.Fatalf("with GOMEMLIMIT set: %d", got)
	}
}
