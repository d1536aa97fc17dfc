package lsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// failTablesFS fails the creation of tables while fail is set, as a full
// disk would fail a flush.
type failTablesFS struct {
	vfs.FS
	fail *atomic.Bool
}

func (fs failTablesFS) Create(name string) (vfs.File, error) {
	if fs.fail.Load() && strings.HasSuffix(name, ".sst") {
		return nil, errors.New("injected: no space left on device")
	}
	return fs.FS.Create(name)
}

// TestHealthReportsFailingFlushes: while flushes fail, Health says so and
// Flush returns the error; once the disk recovers, the retry succeeds and
// Health is nil again.
func TestHealthReportsFailingFlushes(t *testing.T) {
	var fail atomic.Bool
	d := mustOpen(t, "/db", testOptions(failTablesFS{FS: vfs.NewMem(), fail: &fail}))
	defer d.Close()
	mustPut(t, d, "k", "v")
	if err := d.Health(); err != nil {
		t.Fatalf("healthy DB: %v", err)
	}
	fail.Store(true)
	if err := d.Flush(); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Flush on a full disk: %v", err)
	}
	if err := d.Health(); err == nil || !strings.Contains(err.Error(), "flushes failing") {
		t.Fatalf("Health while flushes fail: %v", err)
	}
	fail.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for d.Health() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Health after the disk recovered: %v", d.Health())
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkGet(t, d, "k", "v", true)
}

// TestWritesFailWhileFlushesFail: once the memtables are full and flushes
// fail (a full disk), writes are refused with the flush's error instead of
// hanging; acknowledged writes stay readable and survive a reopen, and
// writes go through again once the disk recovers.
func TestWritesFailWhileFlushesFail(t *testing.T) {
	var fail atomic.Bool
	fs := failTablesFS{FS: vfs.NewMem(), fail: &fail}
	opts := testOptions(fs)
	opts.MemtableBytes = minMemtableBytes
	d := mustOpen(t, "/db", opts)
	defer func() { d.Close() }()
	fail.Store(true)
	value := strings.Repeat("v", 1000)
	acked := 0
	var refused error
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 0; i < 10000 && refused == nil; i++ {
			if refused = d.Put(fmt.Appendf(nil, "k%05d", i), []byte(value)); refused == nil {
				acked++
			}
		}
	}()
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("writes on a full disk hang instead of failing")
	}
	if refused == nil || !strings.Contains(refused.Error(), "flushes failing") || !strings.Contains(refused.Error(), "no space left") {
		t.Fatalf("after %d writes on a full disk: %v", acked, refused)
	}
	if n := d.Metrics().WritesRefused; n != 1 {
		t.Fatalf("WritesRefused = %d after one refused write", n)
	}
	// Refused again at once, not after a wait, and nothing else broke.
	if err := d.Put([]byte("late"), []byte(value)); err == nil || !strings.Contains(err.Error(), "flushes failing") {
		t.Fatalf("a write while flushes still fail: %v", err)
	}
	for i := range acked {
		checkGet(t, d, fmt.Sprintf("k%05d", i), value, true)
	}
	checkGet(t, d, fmt.Sprintf("k%05d", acked), "", false)

	fail.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := d.Put([]byte("late"), []byte(value))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes after the disk recovered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Enough to need several more flushes.
	for i := range 500 {
		mustPut(t, d, fmt.Sprintf("after%05d", i), value)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, "/db", opts)
	for i := range acked {
		checkGet(t, d, fmt.Sprintf("k%05d", i), value, true)
	}
	checkGet(t, d, "late", value, true)
	checkGet(t, d, "after00499", value, true)
}

// TestWithoutWALWritesWaitForFailingFlushes: a DB without a WAL (its
// caller's log is the log) keeps the old behaviour, a stall until a flush
// succeeds, because its caller cannot refuse a write it has logged.
func TestWithoutWALWritesWaitForFailingFlushes(t *testing.T) {
	var fail atomic.Bool
	opts := testOptions(failTablesFS{FS: vfs.NewMem(), fail: &fail})
	opts.MemtableBytes = minMemtableBytes
	opts.DisableWAL = true
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	fail.Store(true)
	done := make(chan error, 1)
	go func() {
		value := []byte(strings.Repeat("v", 1000))
		for i := range 1000 {
			if err := d.Put(fmt.Appendf(nil, "k%05d", i), value); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		t.Fatalf("1000 writes on a full disk without a WAL returned %v; want them to wait", err)
	case <-time.After(500 * time.Millisecond):
	}
	fail.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("writes still waiting after the disk recovered")
	}
}

func TestRetryBackoff(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var r retryBackoff
	var waits []time.Duration
	for range 9 {
		if !r.after(errors.New("boom"), log, "failed", "recovered") {
			t.Fatal("a failure must wait")
		}
		waits = append(waits, r.wait)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range waits {
		if w != want[i]*time.Second {
			t.Fatalf("waits %v, want %v seconds", waits, want)
		}
	}
	if r.after(nil, log, "failed", "recovered") || r.wait != 0 || r.failures != 0 {
		t.Fatalf("a success must reset: %+v", r)
	}
}
