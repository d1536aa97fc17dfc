package lsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// smallDisk mounts a tmpfs of the given size for the test, or skips when
// the process may not mount (not root, or no CAP_SYS_ADMIN).
func smallDisk(t *testing.T, bytes int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", bytes)); err != nil {
		t.Skipf("cannot mount a tmpfs to fill: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestFullDiskRefusesAndRecovers fills a small file system with writes.
// Every WAL reserves a memtable's worth of blocks when it is created, so
// the full disk is met there (or by a flush), never by a WAL write: the
// writes are refused definitely, and once space is freed they go through
// again without a restart. Before, a WAL write met it: its outcome was
// unknown and every later write was refused until a restart. Everything
// acknowledged is there after a reopen.
func TestFullDiskRefusesAndRecovers(t *testing.T) {
	f := fillSmallDisk(t, 1)
	filler, dir, opts, d, acked, refusal := f.filler, f.dir, f.opts, f.d, f.acked, f.refusal
	if errors.Is(refusal, ErrOutcomeUnknown) || !strings.Contains(refusal.Error(), "no space left") {
		t.Fatalf("the write that found the disk full: %v; want a definite refusal saying why", refusal)
	}
	if d.Health() == nil {
		t.Fatal("Health is nil with the disk full")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := d.Put([]byte("after"), []byte("space"))
		if err == nil {
			break
		}
		if errors.Is(err, ErrOutcomeUnknown) || time.Now().After(deadline) {
			t.Fatalf("write after space was freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	acked = append(acked, "after")
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	d = mustOpen(t, dir, opts)
	defer d.Close()
	for _, k := range acked {
		if _, err := d.Get([]byte(k)); err != nil {
			t.Fatalf("acknowledged %s after reopen: %v", k, err)
		}
	}
}

// fullDisk is a DB on a small file system filled until a write was
// refused: 6 MiB of filler, then 64 KiB incompressible values under keys
// k00000, k00001... (acked) until refusal.
type fullDisk struct {
	disk, filler, dir string
	opts              Options
	d                 *DB
	value             []byte
	acked             []string
	refusal           error
}

func fillSmallDisk(t *testing.T, seed byte) fullDisk {
	t.Helper()
	f := fullDisk{disk: smallDisk(t, 24<<20)}
	f.filler = filepath.Join(f.disk, "filler")
	if err := os.WriteFile(f.filler, make([]byte, 6<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f.dir = filepath.Join(f.disk, "db")
	f.opts = Options{FS: vfs.Default, MemtableBytes: 2 << 20, BlockCacheBytes: testCacheBytes, Sync: SyncAlways}
	f.d = mustOpen(t, f.dir, f.opts)
	f.value = make([]byte, 64<<10) // incompressible
	rand.NewChaCha8([32]byte{seed}).Read(f.value)
	for i := 0; ; i++ {
		if i == 2000 {
			t.Fatal("24 MiB took 2000 writes of 64 KiB")
		}
		k := fmt.Sprintf("k%05d", i)
		if err := f.d.Put([]byte(k), f.value); err != nil {
			f.refusal = err
			return f
		}
		f.acked = append(f.acked, k)
	}
}
