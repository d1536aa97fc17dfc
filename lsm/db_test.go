package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/cache"
)

func TestPutGetDelete(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	defer d.Close()
	checkGet(t, d, "a", "", false)
	mustPut(t, d, "a", "1")
	mustPut(t, d, "b", "")
	checkGet(t, d, "a", "1", true)
	checkGet(t, d, "b", "", true)
	mustPut(t, d, "a", "2")
	checkGet(t, d, "a", "2", true)
	if err := d.Delete([]byte("a")); err != nil {
		t.Fatal(err)
	}
	checkGet(t, d, "a", "", false)
	if err := d.Delete([]byte("never")); err != nil {
		t.Fatal(err)
	}
	// Get returns a copy the caller owns.
	v, _ := d.Get([]byte("b"))
	v = append(v, 'x')
	checkGet(t, d, "b", "", true)
	_ = v
}

func TestEmptyKey(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	defer d.Close()
	mustPut(t, d, "", "empty")
	checkGet(t, d, "", "empty", true)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	checkGet(t, d, "", "empty", true)
	if got := scan(t, d, nil, nil); len(got) != 1 || got[0] != [2]string{"", "empty"} {
		t.Fatalf("scan %q", got)
	}
}

func TestBatchIsAtomicAndOrdered(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	defer d.Close()
	b := NewBatch()
	b.Put([]byte("k"), []byte("1"))
	b.Put([]byte("k"), []byte("2"))
	b.Put([]byte("gone"), []byte("x"))
	b.Delete([]byte("gone"))
	if err := d.Write(b); err != nil {
		t.Fatal(err)
	}
	checkGet(t, d, "k", "2", true)
	checkGet(t, d, "gone", "", false)
	if err := d.Write(NewBatch()); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
	if m := d.Metrics(); m.Seq != 4 {
		t.Fatalf("seq %d after one 4-op batch and an empty one, want 4", m.Seq)
	}
}

func TestWriteAsync(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	defer d.Close()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		b := NewBatch()
		b.Put(fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "v%d", i))
		wg.Add(1)
		d.WriteAsync(b, func(err error) {
			errs <- err
			wg.Done()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		checkGet(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i), true)
	}
}

// TestWriteAsyncInline checks where WriteAsync's done runs: on the
// caller's goroutine, before it returns, when the pipeline is idle and the
// sync mode needs no fsync; never so under SyncAlways (the fsync belongs to
// the committer goroutine, not to an event loop). Concurrent writers mixing
// both paths lose nothing and keep each writer's order.
func TestWriteAsyncInline(t *testing.T) {
	for _, c := range []struct {
		sync       SyncMode
		wantInline bool
	}{{SyncNone, true}, {SyncBatch, true}, {SyncAlways, false}} {
		t.Run(fmt.Sprint(c.sync), func(t *testing.T) {
			opts := testOptions(vfs.NewMem())
			opts.Sync = c.sync
			d := mustOpen(t, "/db", opts)
			defer d.Close()
			// The committer goroutine takes the pipeline briefly when it
			// starts, so an inline commit may take a few tries; one that
			// never happens, or one under SyncAlways, is the bug.
			inline := false
			for try := 0; try < 100 && !inline; try++ {
				var called atomic.Bool
				b := NewBatch()
				b.Put([]byte("k"), []byte("v"))
				ch := make(chan error, 1)
				if !c.wantInline {
					// Hold the committer off, so that a done that did not
					// run inline cannot have run yet either.
					d.commit.active.Lock()
				}
				d.WriteAsync(b, func(err error) {
					called.Store(true)
					ch <- err
				})
				inline = called.Load()
				if !c.wantInline {
					d.commit.active.Unlock()
				}
				if err := <-ch; err != nil {
					t.Fatal(err)
				}
				if !c.wantInline {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if inline != c.wantInline {
				t.Fatalf("done ran inline: %v, want %v", inline, c.wantInline)
			}

			// Writers on several goroutines, each writing its own keys in
			// order, some commits inline and some queued.
			const writers, perWriter = 4, 300
			var wg sync.WaitGroup
			errs := make(chan error, writers*perWriter)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var done sync.WaitGroup
					for i := range perWriter {
						b := NewBatch()
						b.Put(fmt.Appendf(nil, "w%d", w), fmt.Appendf(nil, "%d", i))
						b.Put(fmt.Appendf(nil, "w%d-%03d", w, i), []byte("x"))
						done.Add(1)
						d.WriteAsync(b, func(err error) {
							if err != nil {
								errs <- err
							}
							done.Done()
						})
					}
					done.Wait()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for w := range writers {
				// The last write of each writer is the one visible.
				checkGet(t, d, fmt.Sprintf("w%d", w), fmt.Sprint(perWriter-1), true)
				for i := range perWriter {
					checkGet(t, d, fmt.Sprintf("w%d-%03d", w, i), "x", true)
				}
			}
		})
	}
}

func TestLargeValues(t *testing.T) {
	fs := vfs.NewMem()
	opts := Options{BlockCacheBytes: testCacheBytes, FS: fs, MemtableBytes: 1 << 20}
	d := mustOpen(t, "/db", opts)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	if err := d.Put([]byte("big"), big); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "small", "s")
	check := func() {
		t.Helper()
		v, err := d.Get([]byte("big"))
		if err != nil || !bytes.Equal(v, big) {
			t.Fatalf("get big: %d bytes, %v", len(v), err)
		}
		checkGet(t, d, "small", "s", true)
	}
	check()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, "/db", opts) // replays the WAL, flushes to a table
	check()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	check()

	tooBig := NewBatch()
	tooBig.Put([]byte("huge"), make([]byte, maxBatchBytes))
	if err := d.Write(tooBig); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("oversized batch: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flush bool
		sync  SyncMode
	}{
		{"wal-always", false, SyncAlways},
		{"wal-batch", false, SyncBatch},
		{"wal-none", false, SyncNone},
		{"flushed", true, SyncAlways},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			opts := smallOptions(fs)
			opts.Sync = tc.sync
			d := mustOpen(t, "/db", opts)
			for i := range 3000 {
				mustPut(t, d, fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i))
			}
			for i := 0; i < 3000; i += 3 {
				if err := d.Delete(fmt.Appendf(nil, "k%05d", i)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.flush {
				if err := d.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			seq := d.Metrics().Seq
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d = mustOpen(t, "/db", opts)
			defer d.Close()
			for i := range 3000 {
				checkGet(t, d, fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i), i%3 != 0)
			}
			if got := d.Metrics().Seq; got != seq {
				t.Fatalf("seq after reopen %d, want %d", got, seq)
			}
			mustPut(t, d, "after", "reopen")
			if got := d.Metrics().Seq; got != seq+1 {
				t.Fatalf("first write after reopen got seq %d, want %d", got, seq+1)
			}
		})
	}
}

func TestDisableWALFlushIsDurable(t *testing.T) {
	fs := vfs.NewStrictMem()
	opts := Options{BlockCacheBytes: testCacheBytes, FS: fs, DisableWAL: true}
	d := mustOpen(t, "/db", opts)
	mustPut(t, d, "flushed", "1")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "unflushed", "2")
	checkGet(t, d, "unflushed", "2", true)
	if logs := filesOfType(t, fs, "/db", fileTypeLog); len(logs) != 0 {
		t.Fatalf("DisableWAL created WALs %v", logs)
	}
	if m := d.Metrics(); m.WALBytes != 0 || m.WALSyncs != 0 {
		t.Fatalf("DisableWAL metrics %+v", m)
	}
	crash(t, fs, d)
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	checkGet(t, d, "flushed", "1", true)
	checkGet(t, d, "unflushed", "", false)
}

// crash simulates a power loss: nothing d does from now on reaches stable
// storage, and unsynced data disappears.
func crash(t testing.TB, fs *vfs.MemFS, d *DB) {
	t.Helper()
	fs.SetIgnoreSyncs(true)
	d.Close()
	fs.ResetToSyncedState()
	fs.SetIgnoreSyncs(false)
}

func TestClosed(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	mustPut(t, d, "k", "v")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := d.Put([]byte("k"), []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
	if err := d.Delete([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delete after Close: %v", err)
	}
	if _, err := d.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := d.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after Close: %v", err)
	}
	if err := d.Checkpoint("/cp"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Checkpoint after Close: %v", err)
	}
	it := d.NewIterator(nil, nil)
	if it.First() || !errors.Is(it.Close(), ErrClosed) {
		t.Fatal("iterator after Close")
	}
	done := make(chan error, 1)
	b := NewBatch()
	b.Put([]byte("k"), nil)
	d.WriteAsync(b, func(err error) { done <- err })
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteAsync after Close: %v", err)
	}
	_ = d.Metrics()
}

func TestCloseFailsQueuedWrites(t *testing.T) {
	// Writes racing with Close either commit or fail with ErrClosed; none
	// is left without an answer.
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				err := d.Put(fmt.Appendf(nil, "g%d-%d", g, i), []byte("v"))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for d.Metrics().Seq < 500 {
		mustPut(t, d, "tick", "")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func TestLock(t *testing.T) {
	t.Run("memfs", func(t *testing.T) {
		fs := vfs.NewMem()
		d := mustOpen(t, "/db", testOptions(fs))
		if _, err := Open("/db", testOptions(fs)); !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open: %v", err)
		}
		// Another filesystem instance is another namespace.
		d2 := mustOpen(t, "/db", testOptions(vfs.NewMem()))
		d2.Close()
		d.Close()
		d = mustOpen(t, "/db", testOptions(fs))
		d.Close()
	})
	t.Run("os", func(t *testing.T) {
		dir := t.TempDir()
		d := mustOpen(t, dir, Options{BlockCacheBytes: testCacheBytes})
		_, err := Open(dir, Options{BlockCacheBytes: testCacheBytes})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open: %v", err)
		}
		// The same directory through another path.
		_, err = Open(filepath.Join(dir, "..", filepath.Base(dir)), Options{BlockCacheBytes: testCacheBytes})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open via another path: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d = mustOpen(t, dir, Options{BlockCacheBytes: testCacheBytes})
		d.Close()
	})
}

func TestSharedCache(t *testing.T) {
	c, err := cache.New(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fs := vfs.NewMem()
	var dbs []*DB
	for i := range 2 {
		d := mustOpen(t, fmt.Sprintf("/db%d", i), Options{FS: fs, Cache: c})
		dbs = append(dbs, d)
		// Same keys and file numbers in both DBs: the cache must keep them
		// apart.
		mustPut(t, d, "k", fmt.Sprint(i))
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		for i, d := range dbs {
			checkGet(t, d, "k", fmt.Sprint(i), true)
		}
		c.Wait()
		_ = round
	}
	if m := dbs[0].Metrics(); m.CacheHits == 0 {
		t.Fatalf("no cache hits: %+v", m)
	}
	for _, d := range dbs {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadOnly(t *testing.T) {
	fs := vfs.NewMem()
	if _, err := Open("/none", Options{BlockCacheBytes: testCacheBytes, FS: fs, ReadOnly: true}); err == nil {
		t.Fatal("read-only Open of a missing DB succeeded")
	}
	d := mustOpen(t, "/db", smallOptions(fs))
	for i := range 2000 {
		mustPut(t, d, fmt.Sprintf("k%05d", i), "v")
	}
	mustPut(t, d, "last", "in the WAL")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := fs.List("/db")
	ro := mustOpen(t, "/db", Options{BlockCacheBytes: testCacheBytes, FS: fs, ReadOnly: true})
	checkGet(t, ro, "k00042", "v", true)
	checkGet(t, ro, "last", "in the WAL", true)
	if err := ro.Put([]byte("x"), nil); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Put on read-only: %v", err)
	}
	if err := ro.Flush(); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Flush on read-only: %v", err)
	}
	if n := len(scan(t, ro, nil, nil)); n != 2001 {
		t.Fatalf("scan found %d keys", n)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := fs.List("/db")
	if strings.Join(sortStrings(before), ",") != strings.Join(sortStrings(after), ",") {
		t.Fatalf("read-only open changed the directory: %v -> %v", before, after)
	}
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestOptionsValidation(t *testing.T) {
	fs := vfs.NewMem()
	for _, o := range []Options{
		{FS: fs, Sync: SyncMode(7)},
		{FS: fs, Compression: Compression(9)},
		{FS: fs, L0CompactionTrigger: 10, L0SlowdownWrites: 5, L0StopWrites: 20},
	} {
		if _, err := Open("/db", o); err == nil {
			t.Fatalf("Open accepted %+v", o)
		}
	}
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.Sync != SyncAlways || o.MemtableBytes != 64<<20 || o.BlockCacheBytes != 256<<20 ||
		o.BlockBytes != 4096 || o.BloomBitsPerKey != 10 || o.L0CompactionTrigger != 4 ||
		o.L0SlowdownWrites != 8 || o.L0StopWrites != 12 || o.LevelBaseBytes != 64<<20 ||
		o.TargetFileBytes != 8<<20 || o.SyncInterval != defaultSyncInterval || o.FS != vfs.Default {
		t.Fatalf("defaults: %+v", o)
	}
}

// TestMissingCurrentWithData: a DB whose CURRENT was removed is refused
// as corruption, with the line that recreates it; recreated, it opens.
func TestMissingCurrentWithData(t *testing.T) {
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", testOptions(fs))
	mustPut(t, d, "k", "v")
	d.Close()
	manifests := filesOfType(t, fs, "/db", fileTypeManifest)
	if len(manifests) != 1 {
		t.Fatalf("manifests %v", manifests)
	}
	if err := fs.Remove("/db/CURRENT"); err != nil {
		t.Fatal(err)
	}
	_, err := Open("/db", testOptions(fs))
	want := "echo " + makeFilename(fileTypeManifest, manifests[0]) + " > /db/CURRENT"
	if !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), want) {
		t.Fatalf("open without CURRENT: %v, want corruption saying %q", err, want)
	}
	writeFile(t, fs, "/db/"+currentName, []byte(makeFilename(fileTypeManifest, manifests[0])+"\n"))
	d = mustOpen(t, "/db", testOptions(fs))
	checkGet(t, d, "k", "v", true)
	d.Close()
}

func TestMissingTable(t *testing.T) {
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", testOptions(fs))
	mustPut(t, d, "k", "v")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	tables := filesOfType(t, fs, "/db", fileTypeTable)
	if len(tables) != 1 {
		t.Fatalf("tables %v", tables)
	}
	if err := fs.Remove("/db/" + makeFilename(fileTypeTable, tables[0])); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("/db", testOptions(fs)); !errors.Is(err, ErrCorruption) {
		t.Fatalf("open with a missing table: %v", err)
	}
}

func TestOSFilesystem(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "db")
	opts := smallOptions(nil)
	opts.FS = nil
	d := mustOpen(t, dir, opts)
	for i := range 3000 {
		mustPut(t, d, fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, dir, opts)
	defer d.Close()
	for i := 0; i < 3000; i += 7 {
		checkGet(t, d, fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i), true)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, _, ok := parseFilename(e.Name()); !ok && e.Name() != formatName {
			t.Fatalf("unexpected file %s", e.Name())
		}
	}
}

// TestApproxKeys: overwrites count once, and a tombstone takes a key off.
// The memtable is large enough for every write here, and one table below
// it cannot be compacted, so the estimate is exact.
func TestApproxKeys(t *testing.T) {
	opts := smallOptions(vfs.NewMem())
	opts.MemtableBytes = 8 << 20
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	const n = 3000
	for i := range n {
		mustPut(t, d, fmt.Sprintf("k%05d", i), "value")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	check := func(what string, want int64) {
		t.Helper()
		if got := d.Metrics().ApproxKeys; got != want {
			t.Fatalf("ApproxKeys %s: %d, want %d", what, got, want)
		}
	}
	check("after the flush", n)
	mustPut(t, d, "unflushed", "x")
	for range 5 {
		mustPut(t, d, "unflushed", "y")
	}
	check("after overwrites", n+1)
	for i := range 1000 {
		mustDelete(t, d, fmt.Sprintf("k%05d", i))
	}
	check("after 1000 deletes", n+1-1000)
	mustDelete(t, d, "unflushed")
	mustPut(t, d, "unflushed", "z")
	check("after a delete and a put again", n+1-1000)
	for i := range 5000 {
		mustDelete(t, d, fmt.Sprintf("missing%05d", i))
	}
	check("with more tombstones than keys", 0)
}

func TestMetrics(t *testing.T) {
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", smallOptions(fs))
	defer d.Close()
	m := d.Metrics()
	if len(m.Levels) != numLevels || m.Seq != 0 || m.ApproxKeys != 0 {
		t.Fatalf("fresh metrics %+v", m)
	}
	const n = 3000
	for i := range n {
		mustPut(t, d, fmt.Sprintf("k%05d", i), "value")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "unflushed", "x")
	m = d.Metrics()
	if m.Seq != n+1 || m.UserBytesWritten == 0 || m.WALBytes < m.UserBytesWritten || m.WALSyncs == 0 {
		t.Fatalf("write counters %+v", m)
	}
	if m.Flushes == 0 || m.FlushBytes == 0 || m.WriteAmp <= 1 || m.MemtableBytes == 0 {
		t.Fatalf("flush counters %+v", m)
	}
	if m.ApproxKeys < n+1 {
		t.Fatalf("ApproxKeys %d < %d", m.ApproxKeys, n+1)
	}
	tables := 0
	for _, l := range m.Levels {
		tables += l.Files
		if l.Files > 0 && l.Bytes == 0 {
			t.Fatalf("level with files but no bytes: %+v", m.Levels)
		}
	}
	if tables == 0 {
		t.Fatalf("no tables: %+v", m.Levels)
	}
	for range 2 {
		checkGet(t, d, "k00010", "value", true)
	}
	if m := d.Metrics(); m.CacheHits+m.CacheMisses == 0 {
		t.Fatalf("cache counters %+v", m)
	}
}

// TestCompactionsBypassTheBlockCache: compactions read their inputs without
// the block cache, so writes alone count no cache lookups and cache no
// blocks (they would evict what readers use).
func TestCompactionsBypassTheBlockCache(t *testing.T) {
	d := mustOpen(t, "/db", smallOptions(vfs.NewMem()))
	defer d.Close()
	value := strings.Repeat("v", 100)
	for i := 0; d.Metrics().CompactionBytesRead == 0; i++ {
		if i == 200000 {
			t.Fatalf("no compaction after %d writes: %+v", i, d.Metrics())
		}
		mustPut(t, d, fmt.Sprintf("k%06d", i%20000), value)
	}
	d.tc.cache.Wait()
	if m := d.Metrics(); m.CacheHits+m.CacheMisses != 0 {
		t.Fatalf("cache hits %d, misses %d with no reads", m.CacheHits, m.CacheMisses)
	}
	if st := d.tc.cache.Stats(); st.Sets != 0 || st.Bytes != 0 {
		t.Fatalf("compactions filled the block cache: %+v", st)
	}
}

func TestFlushWithConcurrentWrites(t *testing.T) {
	fs := vfs.NewStrictMem()
	opts := smallOptions(fs)
	opts.DisableWAL = true
	d := mustOpen(t, "/db", opts)
	var wg sync.WaitGroup
	var acked sync.Map
	stop := make(chan struct{})
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("g%d-%05d", g, i)
				if err := d.Put([]byte(k), []byte(k)); err != nil {
					t.Error(err)
					return
				}
				acked.Store(k, true)
			}
		}()
	}
	// Every write acknowledged before a Flush call is durable once it
	// returns.
	var durable []string
	for range 5 {
		var before []string
		acked.Range(func(k, _ any) bool { before = append(before, k.(string)); return true })
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		durable = before
	}
	close(stop)
	wg.Wait()
	crash(t, fs, d)
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	for _, k := range durable {
		checkGet(t, d, k, k, true)
	}
}
