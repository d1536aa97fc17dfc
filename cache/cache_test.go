package cache

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func newCache(t testing.TB, capacity int64) *Cache {
	t.Helper()
	c, err := New(capacity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestNewRejectsBadCapacity(t *testing.T) {
	for _, n := range []int64{0, -1} {
		if c, err := New(n); err == nil {
			c.Close()
			t.Errorf("New(%d) succeeded", n)
		}
	}
}

func TestHitAfterWait(t *testing.T) {
	c := newCache(t, 1<<20)
	id := c.NewID()
	if _, ok := c.Get(id, 1, 0); ok {
		t.Fatal("empty cache hit")
	}
	block := []byte("block at 4096")
	c.Set(id, 1, 4096, block)
	c.Wait()
	got, ok := c.Get(id, 1, 4096)
	if !ok || !bytes.Equal(got, block) {
		t.Fatalf("Get = %q, %v; want %q, true", got, ok, block)
	}
	if _, ok := c.Get(id, 1, 0); ok {
		t.Fatal("hit at another offset")
	}
	if _, ok := c.Get(id, 2, 4096); ok {
		t.Fatal("hit in another file")
	}
}

func TestNamespacesDoNotCollide(t *testing.T) {
	c := newCache(t, 1<<20)
	a, b := c.NewID(), c.NewID()
	if a == b {
		t.Fatalf("NewID returned %d twice", a)
	}
	c.Set(a, 7, 0, []byte("from a"))
	c.Set(b, 7, 0, []byte("from b"))
	c.Wait()
	for _, tc := range []struct {
		id   uint64
		want string
	}{{a, "from a"}, {b, "from b"}} {
		got, ok := c.Get(tc.id, 7, 0)
		if !ok || string(got) != tc.want {
			t.Errorf("Get(%d, 7, 0) = %q, %v; want %q", tc.id, got, ok, tc.want)
		}
	}
}

// A key-hash collision must read as a miss, never as another block. Real
// xxhash collisions cannot be produced on demand, so plant an entry whose
// identity differs from the one its key hash stands for.
func TestHashCollisionIsMiss(t *testing.T) {
	c := newCache(t, 1<<20)
	c.rc.Set(key(1, 2, 3), entry{id: 9, fileNum: 2, offset: 3, block: []byte("other")}, 5)
	c.rc.Wait()
	if got, ok := c.Get(1, 2, 3); ok {
		t.Fatalf("collision returned %q", got)
	}
	if s := c.Stats(); s.Collisions != 1 || s.Misses != 1 || s.Hits != 0 {
		t.Fatalf("stats = %+v; want 1 collision, 1 miss", s)
	}
}

func TestStatsCount(t *testing.T) {
	c := newCache(t, 1<<20)
	id := c.NewID()
	c.Set(id, 1, 0, make([]byte, 1000))
	c.Wait()
	for range 3 {
		c.Get(id, 1, 0)
	}
	for range 2 {
		c.Get(id, 1, 1)
	}
	s := c.Stats()
	if s.Hits != 3 || s.Misses != 2 || s.Sets != 1 || s.Capacity != 1<<20 {
		t.Fatalf("stats = %+v; want 3 hits, 2 misses, 1 set, capacity 1 MiB", s)
	}
	if s.Bytes < 1000 {
		t.Fatalf("Bytes = %d after caching a 1000-byte block", s.Bytes)
	}
}

func TestCapacityRespected(t *testing.T) {
	const (
		capacity  = 256 << 10
		blockSize = 4096
		blocks    = 10 * capacity / blockSize
	)
	c := newCache(t, capacity)
	id := c.NewID()
	for i := range uint64(blocks) {
		c.Set(id, 1, i*blockSize, make([]byte, blockSize))
		if i%64 == 63 {
			c.Wait() // keep ristretto's Set buffer from dropping most of them
		}
	}
	c.Wait()
	s := c.Stats()
	if s.Bytes > capacity {
		t.Fatalf("cache holds %d bytes, capacity %d", s.Bytes, capacity)
	}
	held := 0
	for i := range uint64(blocks) {
		if _, ok := c.Get(id, 1, i*blockSize); ok {
			held++
		}
	}
	if held*blockSize > capacity {
		t.Fatalf("%d blocks of %d bytes held in a %d-byte cache", held, blockSize, capacity)
	}
	if held == 0 {
		t.Fatal("nothing held after filling the cache")
	}
}

func TestCloseThenUse(t *testing.T) {
	c, err := New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	id := c.NewID()
	c.Set(id, 1, 0, []byte("x"))
	c.Wait()
	c.Close()
	c.Close()
	c.Set(id, 1, 0, []byte("x"))
	c.Wait()
	if _, ok := c.Get(id, 1, 0); ok {
		t.Fatal("hit after Close")
	}
	if s := c.Stats(); s.Bytes != 0 {
		t.Fatalf("Bytes = %d after Close", s.Bytes)
	}
}

func TestConcurrentUse(t *testing.T) {
	c := newCache(t, 1<<20)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			id := c.NewID()
			for i := range uint64(500) {
				want := fmt.Appendf(nil, "%d/%d", g, i)
				c.Set(id, i%7, i, want)
				if got, ok := c.Get(id, i%7, i); ok && !bytes.Equal(got, want) {
					t.Errorf("Get = %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestCloseRacesUse closes the cache while Gets and Sets run, as a DB's
// Close may race reads still in progress on it: no panic (ristretto's own
// Close closes channels a Set may still send on), and nothing is found
// afterwards.
func TestCloseRacesUse(t *testing.T) {
	for round := range 50 {
		c, err := New(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		id := c.NewID()
		var done atomic.Bool
		var started, wg sync.WaitGroup
		for g := range 4 {
			started.Add(1)
			wg.Go(func() {
				block := make([]byte, 64)
				for i := uint64(0); !done.Load(); i++ {
					if i == 100 {
						started.Done()
					}
					c.Set(id, uint64(g), i, block)
					c.Get(id, uint64(g), i/2)
				}
			})
		}
		started.Wait()
		c.Close()
		done.Store(true)
		wg.Wait()
		if _, ok := c.Get(id, 0, 0); ok {
			t.Fatalf("round %d: hit after Close", round)
		}
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	c := newCache(t, 1<<20)
	id := c.NewID()
	c.Set(id, 1, 0, make([]byte, 100))
	c.Wait()
	allocs := testing.AllocsPerRun(100, func() {
		c.Get(id, 1, 0)
		c.Get(id, 1, 1)
	})
	if allocs != 0 {
		t.Fatalf("Get allocates %.1f times per call pair", allocs)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := newCache(b, 64<<20)
	id := c.NewID()
	const n = 1024
	for i := range uint64(n) {
		c.Set(id, 1, i*4096, make([]byte, 4096))
	}
	c.Wait()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := uint64(0)
		for pb.Next() {
			c.Get(id, 1, (i%n)*4096)
			i++
		}
	})
}

func BenchmarkGetMiss(b *testing.B) {
	c := newCache(b, 64<<20)
	id := c.NewID()
	b.ReportAllocs()
	for i := range uint64(b.N) {
		c.Get(id, 2, i)
	}
}

func BenchmarkSet(b *testing.B) {
	c := newCache(b, 64<<20)
	id := c.NewID()
	block := make([]byte, 4096)
	b.ReportAllocs()
	for i := range uint64(b.N) {
		c.Set(id, 1, i*4096, block)
	}
}
