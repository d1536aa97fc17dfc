package lsm

import (
	"errors"
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
