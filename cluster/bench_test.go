package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
)

// BenchmarkClusterPut measures puts through a three-node cluster in this
// process (all nodes share the machine's cores and disk), from many
// concurrent writers spread over the nodes. Compare with
// BenchmarkStandalonePut, the durable lsm alone under the same load.
func BenchmarkClusterPut(b *testing.B) {
	for _, writers := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			tc := newBenchCluster(b)
			runWriters(b, writers, func(w int, key, value []byte) error {
				bt := lsm.NewBatch()
				bt.Put(key, value)
				return write(tc[w%len(tc)], bt)
			})
		})
	}
}

// BenchmarkClusterGet measures linearizable gets of present keys through
// a three-node cluster from many concurrent readers.
func BenchmarkClusterGet(b *testing.B) {
	for _, readers := range []int{64, 512} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			tc := newBenchCluster(b)
			bt := lsm.NewBatch()
			for i := range 1000 {
				bt.Put([]byte(fmt.Sprintf("key%013d", i)), make([]byte, 100))
			}
			if err := write(tc[0], bt); err != nil {
				b.Fatal(err)
			}
			runWriters(b, readers, func(w int, key, _ []byte) error {
				k := fmt.Sprintf("key%013d", (int(key[len(key)-1])*7+w)%1000)
				_, err := get(tc[w%len(tc)], k)
				return err
			})
		})
	}
}

// BenchmarkStandalonePut is the reference: one lsm with SyncAlways.
func BenchmarkStandalonePut(b *testing.B) {
	for _, writers := range []int{64, 512} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db, err := lsm.Open(b.TempDir(), lsm.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			runWriters(b, writers, func(_ int, key, value []byte) error {
				bt := lsm.NewBatch()
				bt.Put(key, value)
				ch := make(chan error, 1)
				db.WriteAsync(bt, func(err error) { ch <- err })
				return <-ch
			})
		})
	}
}

func newBenchCluster(b *testing.B) []*Cluster {
	addrs := freeAddrs(b, 6)
	var members []conf.Member
	for i := range 3 {
		members = append(members, conf.Member{ID: uint64(i + 1), Raft: addrs[2*i], Client: addrs[2*i+1]})
	}
	var cfgs []conf.Config
	for i := range 3 {
		// The sample node files' settings: 8 shards, defaults otherwise.
		cfg := baseConfig(b, uint64(i+1), addrs[2*i], addrs[2*i+1], 8)
		cfg.Storage.MemtableBytes = conf.Default().Storage.MemtableBytes
		cfg.Storage.BlockCacheBytes = conf.Default().Storage.BlockCacheBytes
		cfg.Cluster.Members = members
		cfgs = append(cfgs, cfg)
	}
	nodes := make([]*Cluster, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := open(context.Background(), cfgs[i], testLogger(b), fsForTest())
			if err != nil {
				b.Error(err)
				return
			}
			nodes[i] = n
		}()
	}
	wg.Wait()
	b.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	})
	if b.Failed() {
		b.FailNow()
	}
	waitFor(b, 20*time.Second, "leaders", func() bool {
		for _, n := range nodes {
			for s := uint64(1); s <= uint64(n.shards); s++ {
				if _, _, ok, _ := n.nh.GetLeaderID(s); !ok {
					return false
				}
			}
		}
		return true
	})
	return nodes
}

func runWriters(b *testing.B, writers int, put func(w int, key, value []byte) error) {
	var next atomic.Int64
	var failed atomic.Int64
	value := make([]byte, 100)
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			key := make([]byte, 16)
			for next.Add(1) <= int64(b.N) {
				copy(key, fmt.Sprintf("key%013d", rng.Uint64()%1e12))
				if err := put(w, key, value); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	// CPU per operation (whole process: every node and the writers) is what
	// bounds throughput on a machine with few cores, and it is far less
	// sensitive to other load than puts/s.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d puts failed", f)
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
