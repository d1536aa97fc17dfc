package lsm

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// noSpaceTablesFS fails the creation of tables with ENOSPC while full is
// set, as a full disk fails a flush.
type noSpaceTablesFS struct {
	vfs.FS
	full *atomic.Bool
}

func (fs *noSpaceTablesFS) Create(name string) (vfs.File, error) {
	if fs.full.Load() && strings.HasSuffix(name, ".sst") {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	return fs.FS.Create(name)
}

// fillUntilRefused writes keys prefix00000, ... until a write is refused
// (the memtables full while flushes fail) and returns those acknowledged.
func fillUntilRefused(t *testing.T, d *DB, prefix, value string) []string {
	t.Helper()
	var acked []string
	for i := 0; ; i++ {
		if i == 100000 {
			t.Fatal("100000 writes acknowledged while no table could be written")
		}
		k := fmt.Sprintf("%s%05d", prefix, i)
		if err := d.Put([]byte(k), []byte(value)); err != nil {
			if errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("write on a full disk: %v, want a definite refusal", err)
			}
			return acked
		}
		acked = append(acked, k)
	}
}

// TestOpenOnFullDiskServesReads: a DB whose WALs hold writes not yet in
// tables, opened while the disk is full (no table can be written), opens
// as the running engine is on a full disk: every acknowledged write can be
// read, writes are refused definitely with the disk's error, Health says
// why, and the WALs stay. Once there is room the replayed memtables are
// flushed in the background, the old WALs go, and writes go through; a
// restart, while still full or after, finds everything. Before, Open
// failed ("flush replayed WAL: ... no space left on device") and nothing
// was served.
func TestOpenOnFullDiskServesReads(t *testing.T) {
	var full atomic.Bool
	mem := vfs.NewMem()
	opts := testOptions(&noSpaceTablesFS{FS: mem, full: &full})
	opts.MemtableBytes = minMemtableBytes
	opts.Sync = SyncAlways
	value := strings.Repeat("v", 1000)

	d := mustOpen(t, "/db", opts)
	for i := range 300 {
		mustPut(t, d, fmt.Sprintf("early%05d", i), value)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	acked := fillUntilRefused(t, d, "k", value)
	d.Close() // its writes stay in the WALs
	wals := filesOfType(t, mem, "/db", fileTypeLog)
	if len(wals) < 2 {
		t.Fatalf("WALs %v: want the writes of several memtables in WALs", wals)
	}
	for i := range 300 {
		acked = append(acked, fmt.Sprintf("early%05d", i))
	}

	checkAll := func(d *DB, keys []string, what string) {
		t.Helper()
		for _, k := range keys {
			checkGet(t, d, k, value, true)
		}
		if n := len(scan(t, d, nil, nil)); n != len(keys) {
			t.Fatalf("%s: iterator sees %d keys, want %d", what, n, len(keys))
		}
	}

	for round := range 2 { // the second: a restart while still full
		d, err := Open("/db", opts)
		if err != nil {
			t.Fatalf("Open on a full disk (round %d): %v", round, err)
		}
		checkAll(d, acked, "while full")
		if err := d.Health(); err == nil || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Health while full: %v", err)
		}
		err = d.Put([]byte("refused"), []byte(value))
		if err == nil || errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Put while full: %v, want a definite refusal with ENOSPC", err)
		}
		if !errors.Is(err, errFlushesFailing) {
			t.Fatalf("Put while full: %v, want the running engine's refusal", err)
		}
		if n := d.Metrics().WritesRefused; n != 1 {
			t.Fatalf("WritesRefused = %d after one refused write", n)
		}
		start := time.Now()
		if err := d.Flush(); err == nil {
			t.Fatal("Flush while full: nil")
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("Flush while full took %v", took)
		}
		if err := d.Checkpoint(fmt.Sprintf("/ckpt-full-%d", round)); err == nil {
			t.Fatal("Checkpoint while full: nil")
		}
		if got := filesOfType(t, mem, "/db", fileTypeLog); !slices.Equal(got, wals) {
			t.Fatalf("WALs while full: %v, want %v kept", got, wals)
		}
		checkGet(t, d, "refused", "", false)
		if err := d.Close(); err != nil {
			t.Fatalf("Close while full: %v", err)
		}
	}

	d, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	full.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := d.Put([]byte("after"), []byte(value))
		if err == nil {
			break
		}
		if errors.Is(err, ErrOutcomeUnknown) || time.Now().After(deadline) {
			t.Fatalf("Put after space returned: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	acked = append(acked, "after")
	if err := d.Health(); err != nil {
		t.Fatalf("Health after space returned: %v", err)
	}
	for _, n := range filesOfType(t, mem, "/db", fileTypeLog) {
		if slices.Contains(wals, n) {
			t.Fatalf("replayed WAL %d still there after the flush", n)
		}
	}
	checkAll(d, acked, "after the flush")
	if err := d.Checkpoint("/ckpt"); err != nil {
		t.Fatalf("Checkpoint after the flush: %v", err)
	}
	for i := range 500 { // several more flushes
		mustPut(t, d, fmt.Sprintf("late%05d", i), value)
		acked = append(acked, fmt.Sprintf("late%05d", i))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	checkAll(d, acked, "after a restart")
	checkGet(t, d, "refused", "", false)
	ck := mustOpen(t, "/ckpt", testOptions(mem))
	defer ck.Close()
	checkGet(t, ck, "after", value, true)
	checkGet(t, ck, acked[0], value, true)
}

// TestOpenOnFullDiskRefusesWithDamagedWALs: recovering from a damaged WAL
// (RecoverDamagedWAL) on a full disk is still refused: the dropped WALs
// must be set aside together with the manifest that drops them, or the
// next start replays the damage again.
func TestOpenOnFullDiskRefusesWithDamagedWALs(t *testing.T) {
	fs, wal, ends := walWithRecords(t, 10)
	cfs := editFile(t, fs, wal, func(data []byte) []byte {
		data[ends[4]+9] ^= 0x40
		return data
	})
	var full atomic.Bool
	full.Store(true)
	opts := testOptions(&noSpaceTablesFS{FS: cfs, full: &full})
	opts.RecoverDamagedWAL = true
	if d, err := Open("/db", opts); err == nil || !errors.Is(err, syscall.ENOSPC) {
		if d != nil {
			d.Close()
		}
		t.Fatalf("Open = %v, want the full disk's error", err)
	}
	full.Store(false)
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	checkGet(t, d, "k004", "value-004", true)
}

// TestWALCreationRetriedWithoutWrites: after a rotation could not create
// the next WAL, the committer retries the creation by itself, so Health
// clears once the cause is gone although nothing is written (an idle
// server answered /healthz 503 until its next write).
func TestWALCreationRetriedWithoutWrites(t *testing.T) {
	var fail atomic.Bool
	opts := testOptions(failWALsFS{FS: vfs.NewMem(), fail: &fail})
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	mustPut(t, d, "before", "1")
	fail.Store(true)
	if err := d.Flush(); err == nil {
		t.Fatal("Flush while no WAL can be created: no error")
	}
	if err := d.Health(); !errors.Is(err, errWALCreateFailing) {
		t.Fatalf("Health while no WAL can be created: %v", err)
	}
	fail.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for d.Health() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Health 5 s after WALs can be created again, with no write: %v", d.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustPut(t, d, "after", "2")
	checkGet(t, d, "before", "1", true)
}
