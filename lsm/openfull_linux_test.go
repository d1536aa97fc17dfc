package lsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// fillDisk writes name until the file system is full and returns how
// much it wrote.
func fillDisk(t *testing.T, name string) int64 {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// waitFor polls cond until it is nil or timeout passes, and returns its
// last error.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpenOnFullDiskRealFS is the disk-full audit's S3 on a real file
// system: a DB filled until writes are refused is closed, the rest of the
// disk filled too, and reopened. Open used to fail ("flush replayed WAL:
// ... no space left on device"); now it serves every acknowledged write,
// refuses writes definitely, and once space is freed flushes in the
// background and takes writes again, without a restart.
func TestOpenOnFullDiskRealFS(t *testing.T) {
	f := fillSmallDisk(t, 2)
	disk, filler, dir, opts, d, value, acked := f.disk, f.filler, f.dir, f.opts, f.d, f.value, f.acked
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	filler2 := filepath.Join(disk, "filler2")
	fillDisk(t, filler2)

	d, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	defer func() { d.Close() }()
	for _, k := range acked {
		if v, err := d.Get([]byte(k)); err != nil || string(v) != string(value) {
			t.Fatalf("Get(%s) on a full disk: %v", k, err)
		}
	}
	err = d.Put([]byte("refused"), value)
	if err == nil || errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put on a full disk: %v, want a definite refusal with ENOSPC", err)
	}
	if err := d.Health(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Health on a full disk: %v", err)
	}

	for _, f := range []string{filler, filler2} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitFor(20*time.Second, func() error { return d.Put([]byte("after"), []byte("space")) }); err != nil {
		t.Fatalf("Put after space was freed: %v", err)
	}
	acked = append(acked, "after")
	if err := waitFor(5*time.Second, d.Health); err != nil {
		t.Fatalf("Health after space was freed: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, dir, opts)
	for _, k := range acked {
		if _, err := d.Get([]byte(k)); err != nil {
			t.Fatalf("acknowledged %s after reopen: %v", k, err)
		}
	}
	checkGet(t, d, "refused", "", false)
}

// TestOpenWithoutRoomForTheWALReservation: Open on a disk with room for a
// manifest but not for the new WAL's reservation opened with an unreserved
// WAL, and the first write that met the full disk in it came back
// "outcome unknown" and disabled writes until a restart. Now the writes
// are refused definitely, as when a running engine cannot reserve its next
// WAL, and once space is freed Health clears without a write (the
// committer retries the creation) and writes go through.
func TestOpenWithoutRoomForTheWALReservation(t *testing.T) {
	disk := smallDisk(t, 24<<20)
	dir := filepath.Join(disk, "db")
	// The old WAL reserved 1 MiB, freed once Open has retired it: not
	// enough for the next WAL's 4 MiB.
	opts := Options{FS: vfs.Default, MemtableBytes: 1 << 20, BlockCacheBytes: testCacheBytes, Sync: SyncAlways}
	d := mustOpen(t, dir, opts)
	opts.MemtableBytes = 4 << 20
	mustPut(t, d, "before", "1")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(disk, "filler")
	n := fillDisk(t, filler)
	if err := os.Truncate(filler, n-(512<<10)); err != nil { // room for a manifest, not a 4 MiB WAL
		t.Fatal(err)
	}

	d, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() { d.Close() }()
	value := make([]byte, 64<<10)
	for i := range 20 {
		err := d.Put(fmt.Appendf(nil, "k%02d", i), value)
		if err == nil || errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, errWALCreateFailing) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write %d without room for a WAL: %v, want a definite refusal", i, err)
		}
	}
	checkGet(t, d, "before", "1", true)
	if err := d.Health(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Health: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(5*time.Second, d.Health); err != nil {
		t.Fatalf("Health 5 s after space was freed, with no write: %v", err)
	}
	mustPut(t, d, "after", "2")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, dir, opts)
	checkGet(t, d, "before", "1", true)
	checkGet(t, d, "after", "2", true)
	checkGet(t, d, "k00", "", false)
}
