package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/lni/vfs"
	"golang.org/x/sys/unix"
)

// evictTables drops every table of dir from the OS page cache and checks
// that none of their pages is left resident. FADV_DONTNEED is advice:
// once in a CI run under load a block stayed cached and a read expected to
// need the disk did not, so it is repeated until mincore sees no page.
func evictTables(t *testing.T, dir string) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(names) == 0 {
		t.Fatalf("tables in %s: %v %v", dir, names, err)
	}
	for _, name := range names {
		for attempt := 0; ; attempt++ {
			resident := evictFile(t, name)
			if resident == 0 {
				break
			}
			if attempt == 50 {
				t.Fatalf("%s: %d pages still in the page cache after %d evictions", name, resident, attempt+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// evictFile advises the kernel to drop name's pages and returns how many
// are resident afterwards.
func evictFile(t *testing.T, name string) int {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() == 0 {
		return 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore %s: %v", name, errno)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident
}

// skipWithoutNoWait skips the test where dir's filesystem refuses
// RWF_NOWAIT reads (tmpfs, some overlay, network and FUSE filesystems).
func skipWithoutNoWait(t *testing.T, dir string) {
	t.Helper()
	name := filepath.Join(dir, "probe")
	if err := os.WriteFile(name, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(name)
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = unix.Preadv2(int(f.Fd()), [][]byte{make([]byte, 4096)}, 0, unix.RWF_NOWAIT)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		t.Skipf("%s does not support RWF_NOWAIT reads: %v", dir, err)
	}
}

// TestGetNoWaitNeverWaitsForTheDisk: on a real filesystem, GetNoWait
// answers from memtables, the block cache and the OS page cache, and
// returns ErrWouldBlock for a block only the disk has (and for a table not
// opened yet), where Get reads it; after that GetNoWait finds it cached.
func TestGetNoWaitNeverWaitsForTheDisk(t *testing.T) {
	dir := t.TempDir()
	skipWithoutNoWait(t, dir)
	opts := Options{FS: vfs.Default, BlockCacheBytes: 1 << 20, Sync: SyncNone}
	d := mustOpen(t, dir, opts)
	defer d.Close()
	value := strings.Repeat("v", 200)
	key := func(i int) string { return fmt.Sprintf("key%06d", i) }
	const n = 20000 // ~4 MB of blocks: first and last key far apart
	for i := range n {
		mustPut(t, d, key(i), value)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "in-memtable", "m")

	// The table is not open yet: opening it would read the disk.
	if _, err := d.GetNoWait([]byte(key(0))); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("GetNoWait before the table is open: %v", err)
	}
	checkGet(t, d, key(0), value, true) // opens it; key(0)'s block is cached
	d.tc.cache.Wait()
	evictTables(t, dir)

	if v, err := d.GetNoWait([]byte("in-memtable")); err != nil || string(v) != "m" {
		t.Fatalf("GetNoWait from the memtable: %q %v", v, err)
	}
	if v, err := d.GetNoWait([]byte(key(0))); err != nil || string(v) != value {
		t.Fatalf("GetNoWait of a block in the block cache: %q %v", v, err)
	}
	before := d.Metrics()
	if _, err := d.GetNoWait([]byte(key(n - 1))); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("GetNoWait of a block only on disk: %v", err)
	}
	if got := d.Metrics().ReadsNeedingDisk; got != 2 {
		t.Fatalf("ReadsNeedingDisk = %d after two reads that needed the disk", got)
	}
	checkGet(t, d, key(n-1), value, true)
	// The read that would have waited and its retry are one cache miss.
	if m := d.Metrics(); m.CacheMisses-before.CacheMisses != 1 || m.CacheHits != before.CacheHits {
		t.Fatalf("cache misses +%d, hits +%d for one block read from disk; want +1, +0",
			m.CacheMisses-before.CacheMisses, m.CacheHits-before.CacheHits)
	}
	d.tc.cache.Wait()
	if v, err := d.GetNoWait([]byte(key(n - 1))); err != nil || string(v) != value {
		t.Fatalf("GetNoWait once Get has read the block: %q %v", v, err)
	}
	// In the page cache but not the block cache: read without waiting.
	names, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, name := range names {
		if _, err := os.ReadFile(name); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := d.GetNoWait([]byte(key(n / 2))); err != nil || string(v) != value {
		t.Fatalf("GetNoWait of a block in the page cache only: %q %v", v, err)
	}
	if _, err := d.GetNoWait([]byte("absent")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetNoWait of a missing key: %v", err)
	}
}

// TestCloseRacesGetNoWait: Close while many GetNoWait and Get run on an
// open table whose blocks are in the page cache but not the block cache
// (so preadv2 runs): every read returns its value, ErrClosed or
// ErrWouldBlock, never another file's bytes or a crash.
func TestCloseRacesGetNoWait(t *testing.T) {
	for round := 0; round < 10; round++ {
		dir := t.TempDir()
		d := mustOpen(t, dir, Options{FS: vfs.Default, BlockCacheBytes: 1, Sync: SyncNone})
		value := strings.Repeat("v", 200)
		const n = 5000
		for i := range n {
			mustPut(t, d, fmt.Sprintf("key%06d", i), value)
		}
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		checkGet(t, d, "key000000", value, true) // open the table
		var stop atomic.Bool
		var wg sync.WaitGroup
		var other atomic.Value
		var wouldBlock, ok, closed atomic.Int64
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; !stop.Load(); i += 7 {
					k := []byte(fmt.Sprintf("key%06d", i%n))
					get := d.GetNoWait
					if i%3 == 0 {
						get = d.Get
					}
					v, err := get(k)
					switch {
					case err == nil && string(v) == value:
						ok.Add(1)
					case errors.Is(err, ErrClosed):
						closed.Add(1)
						return
					case errors.Is(err, ErrWouldBlock):
						wouldBlock.Add(1)
					default:
						other.Store(fmt.Sprintf("%q %v", v, err))
					}
				}
			}()
		}
		for ok.Load() < 2000 {
			runtime.Gosched()
		}
		d.Close()
		stop.Store(true)
		wg.Wait()
		if o := other.Load(); o != nil {
			t.Fatalf("round %d: unexpected result %v (ok %d, closed %d, wouldblock %d)", round, o, ok.Load(), closed.Load(), wouldBlock.Load())
		}
	}
}

// TestGetNoWaitOnTmpfsWarnsOnce: tmpfs refuses RWF_NOWAIT; GetNoWait then
// reads as Get does (its pages are memory anyway) and the DB says once, in
// its log, that reads missing the block cache wait there.
func TestGetNoWaitOnTmpfsWarnsOnce(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "lsm-nowait-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	var log bytes.Buffer
	opts := Options{FS: vfs.Default, BlockCacheBytes: 1 << 20, Sync: SyncNone, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	d := mustOpen(t, dir, opts)
	defer d.Close()
	for i := range 2000 {
		mustPut(t, d, fmt.Sprintf("key%05d", i), strings.Repeat("v", 100))
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	checkGet(t, d, "key00000", strings.Repeat("v", 100), true) // opens the table
	for _, k := range []string{"key01999", "key01000", "key00500"} {
		if v, err := d.GetNoWait([]byte(k)); err != nil || len(v) != 100 {
			t.Fatalf("GetNoWait %s on tmpfs: %d bytes, %v", k, len(v), err)
		}
	}
	if n := strings.Count(log.String(), "does not support RWF_NOWAIT"); n != 1 {
		t.Fatalf("%d warnings in the log, want 1:\n%s", n, log.String())
	}
}

// TestIteratorNoWaitNeverWaitsForTheDisk: a no-wait iterator stops with
// ErrWouldBlock at a table not opened yet and at a block only the disk
// has, never returning a partial walk as complete; once NewIterator has
// read the blocks, a no-wait walk over them succeeds.
func TestIteratorNoWaitNeverWaitsForTheDisk(t *testing.T) {
	dir := t.TempDir()
	skipWithoutNoWait(t, dir)
	d := mustOpen(t, dir, Options{FS: vfs.Default, BlockCacheBytes: 1 << 20, Sync: SyncNone})
	defer d.Close()
	value := strings.Repeat("v", 200)
	key := func(i int) string { return fmt.Sprintf("key%06d", i) }
	const n = 20000
	for i := range n {
		mustPut(t, d, key(i), value)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	walk := func(nowait bool, lower, upper string) (int, error) {
		newIter := d.NewIterator
		if nowait {
			newIter = d.NewIteratorNoWait
		}
		it := newIter([]byte(lower), []byte(upper))
		count := 0
		for ok := it.First(); ok; ok = it.Next() {
			count++
		}
		return count, it.Close()
	}
	if _, err := walk(true, key(0), key(10)); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("no-wait walk before the table is open: %v", err)
	}
	if c, err := walk(false, key(0), key(10)); err != nil || c != 10 {
		t.Fatalf("walk: %d keys, %v", c, err)
	}
	d.tc.cache.Wait()
	evictTables(t, dir)
	if c, err := walk(true, key(0), key(10)); err != nil || c != 10 {
		t.Fatalf("no-wait walk of blocks in the block cache: %d keys, %v", c, err)
	}
	before := d.Metrics().ReadsNeedingDisk
	if c, err := walk(true, key(0), key(n/2)); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("no-wait walk into blocks only on disk: %d keys, %v", c, err)
	}
	if got := d.Metrics().ReadsNeedingDisk; got != before+1 {
		t.Fatalf("ReadsNeedingDisk %d, want %d", got, before+1)
	}
	if c, err := walk(false, key(0), key(n/2)); err != nil || c != n/2 {
		t.Fatalf("walk: %d keys, %v", c, err)
	}
	if c, err := walk(true, key(0), key(n/2)); err != nil || c != n/2 {
		t.Fatalf("no-wait walk once read: %d keys, %v", c, err)
	}
}
