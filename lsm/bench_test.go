package lsm

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// Benchmarks use the OS filesystem, 16-byte keys and 100-byte values (the
// db_bench shape), and options close to the defaults with an 8 MiB
// memtable.

func benchOptions(sync SyncMode) Options {
	return Options{Sync: sync, MemtableBytes: 8 << 20, BlockCacheBytes: 64 << 20}
}

func benchKey(buf []byte, i uint64) []byte {
	buf = append(buf[:0], "key-"...)
	return binary.BigEndian.AppendUint64(buf, i)[:4+8]
}

func benchValue() []byte {
	v := make([]byte, 100)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range v[:50] { // half random, half zeros: ~50% compressible
		v[i] = byte(rng.Uint32())
	}
	return v
}

func BenchmarkPutNoSync(b *testing.B) {
	d := mustOpen(b, b.TempDir(), benchOptions(SyncNone))
	defer d.Close()
	value := benchValue()
	var key []byte
	b.SetBytes(int64(16 + len(value)))
	rng := rand.New(rand.NewPCG(3, 4))
	for b.Loop() {
		key = benchKey(key, rng.Uint64())
		if err := d.Put(key, value); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBatchNoSync is fillrandom: 1000-key batches.
func BenchmarkBatchNoSync(b *testing.B) {
	d := mustOpen(b, b.TempDir(), benchOptions(SyncNone))
	defer d.Close()
	value := benchValue()
	var key []byte
	rng := rand.New(rand.NewPCG(3, 4))
	batch := NewBatch()
	b.SetBytes(int64(16 + len(value)))
	n := 0
	for b.Loop() {
		key = benchKey(key, rng.Uint64())
		batch.Put(key, value)
		if n++; n == 1000 {
			if err := d.Write(batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
			n = 0
		}
	}
	if err := d.Write(batch); err != nil {
		b.Fatal(err)
	}
	reportStalls(b, d)
}

func reportStalls(b *testing.B, d *DB) {
	m := d.Metrics()
	b.ReportMetric(m.StallDuration.Seconds()*1e3, "stall-ms")
	b.ReportMetric(float64(m.SlowdownCount), "slowdowns")
}

// BenchmarkPutSync measures fsynced single-key writes from 1, 8 and 32
// concurrent writers (group commit shares fsyncs between them).
func BenchmarkPutSync(b *testing.B) {
	for _, writers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			d := mustOpen(b, b.TempDir(), benchOptions(SyncAlways))
			defer d.Close()
			value := benchValue()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var key []byte
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						key = benchKey(key, uint64(i))
						if err := d.Put(key, value); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(d.Metrics().WALSyncs), "writes/fsync")
		})
	}
}

func fillForRead(b *testing.B, n int) *DB {
	d := mustOpen(b, b.TempDir(), benchOptions(SyncNone))
	value := benchValue()
	batch := NewBatch()
	var key []byte
	for i := range n {
		key = benchKey(key, uint64(i)*7919%uint64(n))
		batch.Put(key, value)
		if batch.Len() == 1000 {
			if err := d.Write(batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	if err := d.Write(batch); err != nil {
		b.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		b.Fatal(err)
	}
	return d
}

func BenchmarkGet(b *testing.B) {
	const n = 200_000
	d := fillForRead(b, n)
	defer d.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	var key []byte
	b.ResetTimer()
	for b.Loop() {
		key = benchKey(key, rng.Uint64N(n))
		if _, err := d.Get(key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetMemtable reads keys that are still in the memtable.
func BenchmarkGetMemtable(b *testing.B) {
	d := mustOpen(b, b.TempDir(), benchOptions(SyncNone))
	defer d.Close()
	const n = 10_000
	value := benchValue()
	batch := NewBatch()
	var key []byte
	for i := range n {
		batch.Put(benchKey(key, uint64(i)), value)
	}
	if err := d.Write(batch); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	b.ReportAllocs()
	for b.Loop() {
		key = benchKey(key, rng.Uint64N(n))
		if _, err := d.Get(key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIterate(b *testing.B) {
	const n = 200_000
	d := fillForRead(b, n)
	defer d.Close()
	b.ResetTimer()
	keys := 0
	for b.Loop() {
		it := d.NewIterator(nil, nil)
		for ok := it.First(); ok; ok = it.Next() {
			keys++
		}
		if err := it.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(keys)/b.Elapsed().Seconds(), "keys/s")
}
