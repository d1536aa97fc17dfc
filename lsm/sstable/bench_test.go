package sstable

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/lni/vfs"
)

// benchKeys are n sorted 16-byte user keys.
func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		k := make([]byte, 16)
		binary.BigEndian.PutUint64(k, uint64(i)*7)
		copy(k[8:], "userkey!")
		keys[i] = k
	}
	return keys
}

func BenchmarkWriterAdd(b *testing.B) {
	for _, comp := range compressions {
		b.Run(comp.String(), func(b *testing.B) {
			const perTable = 100_000
			rng := rand.New(rand.NewPCG(1, 1))
			value := compressibleValue(rng, 100)
			keys := make([][]byte, perTable)
			for i, k := range benchKeys(perTable) {
				keys[i] = base.AppendKey(nil, k, 1, base.KindSet)
			}
			fs := vfs.NewMem()
			var w *Writer
			b.ResetTimer()
			b.SetBytes(int64(len(keys[0]) + len(value)))
			b.ReportAllocs()
			for i := range b.N {
				if i%perTable == 0 {
					if w != nil {
						if _, err := w.Finish(); err != nil {
							b.Fatal(err)
						}
					}
					f, err := fs.Create(fmt.Sprintf("%d.sst", i))
					if err != nil {
						b.Fatal(err)
					}
					w = NewWriter(f, WriterOptions{Compression: comp})
				}
				if err := w.Add(keys[i%perTable], value); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := w.Finish(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// benchTable is a table of n entries with 16-byte keys and 100-byte values.
func benchTable(b *testing.B, n int, comp Compression) ([]byte, [][]byte) {
	rng := rand.New(rand.NewPCG(2, 2))
	keys := benchKeys(n)
	es := make([]entry, n)
	for i, k := range keys {
		es[i] = entry{ukey: string(k), seq: 1, kind: base.KindSet, value: compressibleValue(rng, 100)}
	}
	data, _ := buildTable(b, es, WriterOptions{Compression: comp})
	return data, keys
}

func BenchmarkReaderGet(b *testing.B) {
	const n = 100_000
	data, keys := benchTable(b, n, S2)
	c, err := cache.New(64 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cached := mustOpen(b, data, ReaderOptions{Cache: c, CacheID: c.NewID(), FileNum: 1})
	uncached := mustOpen(b, data, ReaderOptions{FileNum: 1})
	// Warm the cache.
	for _, k := range keys {
		cached.Get(k, base.MaxSeq)
		c.Wait()
	}
	order := rand.New(rand.NewPCG(3, 3)).Perm(n)
	absent := make([][]byte, n)
	for i, k := range keys {
		a := append([]byte(nil), k...)
		a[7]++ // between two present keys
		absent[i] = a
	}
	run := func(name string, r *Reader, keys [][]byte, wantFound bool) {
		b.Run(name, func(b *testing.B) {
			b.ResetTimer()
			b.ReportAllocs()
			for i := range b.N {
				_, _, found, err := r.Get(keys[order[i%n]], base.MaxSeq)
				if err != nil || found != wantFound {
					b.Fatalf("Get: found %v, err %v", found, err)
				}
			}
		})
	}
	run("hit-cached", cached, keys, true)
	run("hit-uncached", uncached, keys, true)
	run("miss-bloom", cached, absent, false)
}

func BenchmarkIter(b *testing.B) {
	const n = 100_000
	for _, comp := range []Compression{NoCompression, S2} {
		b.Run(comp.String(), func(b *testing.B) {
			data, _ := benchTable(b, n, comp)
			r := mustOpen(b, data, ReaderOptions{FileNum: 1})
			b.ResetTimer()
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for range b.N {
				it := r.NewIter()
				count := 0
				for it.First(); it.Valid(); it.Next() {
					count++
				}
				if err := it.Close(); err != nil || count != n {
					b.Fatalf("iterated %d, err %v", count, err)
				}
			}
		})
	}
}
