package lsm

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// spaceFS is a disk an operator can free space on: while full is set, the
// creation of a table fails with errno (ENOSPC unless set), and
// GetDiskUsage reports free bytes available. refused counts the refused
// creations, one per flush or compaction attempt.
type spaceFS struct {
	vfs.FS
	full    atomic.Bool
	free    atomic.Uint64
	errno   syscall.Errno
	refused atomic.Int64
}

func (fs *spaceFS) Create(name string) (vfs.File, error) {
	if fs.full.Load() && strings.HasSuffix(name, ".sst") {
		fs.refused.Add(1)
		errno := fs.errno
		if errno == 0 {
			errno = syscall.ENOSPC
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: errno}
	}
	return fs.FS.Create(name)
}

func (fs *spaceFS) GetDiskUsage(string) (vfs.DiskUsage, error) {
	free := fs.free.Load()
	return vfs.DiskUsage{AvailBytes: free, TotalBytes: 1 << 40, UsedBytes: 1<<40 - free}, nil
}

// freeSpace is what the operator does: the tables fit again and the free
// space says so.
func (fs *spaceFS) freeSpace() {
	fs.free.Store(1 << 30)
	fs.full.Store(false)
}

// failFlushes makes n flush attempts fail, one per Flush call, so that the
// flush's backoff reaches 2^(n-1) seconds (capped at a minute).
func failFlushes(t *testing.T, d *DB, fs *spaceFS, n int) {
	t.Helper()
	mustPut(t, d, "backoff", "v")
	for i := range n {
		before := fs.refused.Load()
		if err := d.Flush(); err == nil || !isNoSpace(err) {
			t.Fatalf("Flush %d on a full disk: %v", i, err)
		}
		if fs.refused.Load() == before {
			t.Fatalf("Flush %d made no attempt", i)
		}
	}
}

// settle waits until no attempt was made for 300 ms: a flush request
// that arrived during an attempt is served right after it, whatever the
// backoff (a Flush call retries at once).
func settle(fs *spaceFS) {
	for n := fs.refused.Load(); ; {
		time.Sleep(300 * time.Millisecond)
		m := fs.refused.Load()
		if m == n {
			return
		}
		n = m
	}
}

// stillRefused checks that no flush or compaction is attempted for d.
func stillRefused(t *testing.T, fs *spaceFS, d time.Duration, why string) {
	t.Helper()
	before := fs.refused.Load()
	time.Sleep(d)
	if n := fs.refused.Load() - before; n != 0 {
		t.Fatalf("%s: %d attempts in %v, want none before the backoff ends", why, n, d)
	}
}

// TestFlushRetriedOnceSpaceIsFreed: a flush that failed on a full disk,
// with writes refused behind it, is retried within about a second of the
// free space covering it, not at the end of its backoff (here 32 s or
// more: the old code waited that long, so writes stayed refused for up to
// a minute after an operator freed space). While the free space stays
// short, rising or not, nothing is retried before the backoff ends.
func TestFlushRetriedOnceSpaceIsFreed(t *testing.T) {
	fs := &spaceFS{FS: vfs.NewMem()}
	opts := testOptions(fs)
	opts.MemtableBytes = minMemtableBytes
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	value := strings.Repeat("v", 1000)

	fs.full.Store(true)
	failFlushes(t, d, fs, 6) // next retry 32 s after the last
	acked := fillUntilRefused(t, d, "k", value)
	if err := d.Put([]byte("refused"), []byte(value)); err == nil || !isNoSpace(err) {
		t.Fatalf("Put with the memtables full on a full disk: %v", err)
	}
	settle(fs)
	stillRefused(t, fs, 2500*time.Millisecond, "no free space")
	fs.free.Store(512 << 10) // less than a memtable's table and the margin
	stillRefused(t, fs, 2500*time.Millisecond, "some free space, not enough")

	fs.freeSpace()
	start := time.Now()
	for {
		err := d.Put([]byte("late"), []byte(value))
		if err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("writes 10 s after space was freed (the backoff was at 32 s or more): %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("writes accepted %v after space was freed", time.Since(start).Round(time.Millisecond))
	if err := d.Health(); err != nil {
		t.Fatalf("Health after a write went through: %v", err)
	}
	for _, k := range acked {
		checkGet(t, d, k, value, true)
	}
	checkGet(t, d, "late", value, true)
	checkGet(t, d, "refused", "", false)
}

// TestFlushNotRetriedEarlyWithoutSpaceChange: the free space retries a
// flush early only when it was short and is not any more. A disk that
// reports room while refusing (reserved blocks, space taken and given back
// between two looks) and a quota (EDQUOT: statfs says nothing of quotas)
// keep the backoff.
func TestFlushNotRetriedEarlyWithoutSpaceChange(t *testing.T) {
	for _, tc := range []struct {
		name  string
		errno syscall.Errno
		free  []uint64 // the free space in turn
	}{
		{"room reported", syscall.ENOSPC, []uint64{1 << 30}},
		{"quota", syscall.EDQUOT, []uint64{0, 1 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &spaceFS{FS: vfs.NewMem(), errno: tc.errno}
			d := mustOpen(t, "/db", testOptions(fs))
			defer d.Close()
			fs.full.Store(true)
			fs.free.Store(tc.free[0])
			failFlushes(t, d, fs, 4) // next retry 8 s after the last
			settle(fs)
			for _, free := range tc.free {
				fs.free.Store(free)
				stillRefused(t, fs, 2500*time.Millisecond, fmt.Sprintf("%d bytes free", free))
			}
		})
	}
}

// TestCompactionRetriedOnceSpaceIsFreed: a compaction that failed on a
// full disk is retried within about a second of the free space covering
// its inputs, not at the end of its backoff, and not before while the
// free space stays short.
func TestCompactionRetriedOnceSpaceIsFreed(t *testing.T) {
	fs := &spaceFS{FS: vfs.NewMem()}
	opts := testOptions(fs)
	opts.L0CompactionTrigger = 8
	d := mustOpen(t, "/db", opts)
	value := strings.Repeat("v", 1000)
	for i := range 4 {
		for j := range 100 {
			mustPut(t, d, fmt.Sprintf("k%d-%03d", j, i), value)
		}
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened on a full disk with 4 L0 tables over the trigger: the
	// compaction fails at once, then after 1, 2 and 4 s; the next try
	// would be 8 s after that.
	fs.full.Store(true)
	opts.L0CompactionTrigger = 2
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	deadline := time.Now().Add(30 * time.Second)
	for fs.refused.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d compaction attempts in 30 s on a full disk, want 4", fs.refused.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stillRefused(t, fs, 1500*time.Millisecond, "no free space")
	if n := d.Metrics().Compactions; n != 0 {
		t.Fatalf("%d compactions on a full disk", n)
	}

	fs.freeSpace()
	start := time.Now()
	for d.Metrics().Compactions == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("no compaction 5 s after space was freed (the next retry was %v away)",
				8*time.Second-1500*time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("compaction %v after space was freed", time.Since(start).Round(time.Millisecond))
	for j := range 100 {
		checkGet(t, d, fmt.Sprintf("k%d-%03d", j, 3), value, true)
	}
}

// TestSpaceWatch: what retries a job early. Only ENOSPC on a file system
// that can be measured is watched, and only a rise from short to enough
// counts.
func TestSpaceWatch(t *testing.T) {
	enospc := &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	fs := &spaceFS{FS: vfs.NewMem()}
	d := &DB{opts: Options{FS: fs}, dirname: "/db"}
	const size = 10 << 20
	need := spaceNeeded(size)
	if need <= size {
		t.Fatalf("spaceNeeded(%d) = %d, want a margin", size, need)
	}
	if w := d.watchSpace(fmt.Errorf("flush: %w", &os.PathError{Op: "write", Err: syscall.EDQUOT}), size); w != nil {
		t.Fatal("EDQUOT watched: statfs does not show quotas")
	}
	if w := d.watchSpace(fmt.Errorf("flush: %w", syscall.EIO), size); w != nil {
		t.Fatal("EIO watched")
	}
	if w := (&DB{opts: Options{FS: vfs.NewMem()}, dirname: "/db"}).watchSpace(enospc, size); w != nil {
		t.Fatal("a file system without GetDiskUsage watched")
	}

	fs.free.Store(need - 1)
	w := d.watchSpace(fmt.Errorf("flush: %w", enospc), size)
	if w == nil {
		t.Fatal("ENOSPC not watched")
	}
	if w.roomAgain() {
		t.Fatal("room with less than needed")
	}
	fs.free.Store(need)
	if !w.roomAgain() {
		t.Fatal("no room once the space needed is free")
	}

	// Room reported at the failure: not before it was short once.
	w = d.watchSpace(enospc, size)
	if w.roomAgain() {
		t.Fatal("room reported at the failure retries the job")
	}
	fs.free.Store(0)
	if w.roomAgain() {
		t.Fatal("room with nothing free")
	}
	fs.free.Store(need)
	if !w.roomAgain() {
		t.Fatal("no room after space came back")
	}
}
