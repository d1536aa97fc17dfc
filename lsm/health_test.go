package lsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
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

// TestWritesRefusedWhileCompactionsFail: when compactions keep failing (a
// disk with room for a flush but not for a compaction's outputs), level 0
// fills up to L0StopWrites; then writes are refused with the compaction's
// error instead of waiting forever, Flush returns, and Health says why.
// Once compactions succeed again, writes go through.
func TestWritesRefusedWhileCompactionsFail(t *testing.T) {
	fs := newSweepFS(vfs.NewStrictMem(), 0, false)
	var fail atomic.Bool
	fail.Store(true)
	fs.inject = func(kind, where string) error {
		if fail.Load() && kind == "create" && strings.Contains(where, "writeCompactionOutputs") {
			return errors.New("injected: no space left on device")
		}
		return nil
	}
	d := mustOpen(t, "/db", smallOptions(fs))
	defer d.Close()
	value := strings.Repeat("v", 1000)
	acked := map[string]string{}
	result := make(chan error, 1)
	go func() { // until a write is refused (the old code waited forever)
		for i := 0; ; i++ {
			k := fmt.Sprintf("k%06d", (i*7919)%5000)
			if err := d.Put([]byte(k), []byte(value)); err != nil {
				result <- err
				return
			}
			acked[k] = value
		}
	}()
	var refused error
	select {
	case refused = <-result:
	case <-time.After(20 * time.Second):
		t.Fatalf("writes neither acknowledged nor refused for 20 s; level 0 holds %d tables, Health: %v",
			len(d.readState.Load().v.levels[0]), d.Health())
	}
	if !strings.Contains(refused.Error(), "compactions failing") || !strings.Contains(refused.Error(), "no space left") {
		t.Fatalf("refusal: %v", refused)
	}
	if err := d.Health(); err == nil || !strings.Contains(err.Error(), "compactions failing") {
		t.Fatalf("Health while compactions fail with writes stopped: %v", err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- d.Flush() }()
	select {
	case <-flushed:
	case <-time.After(10 * time.Second):
		t.Fatal("Flush hangs while compactions fail")
	}
	fail.Store(false)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err := d.Put([]byte("after"), []byte("recovery")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("writes after compactions recovered: %v", err)
		}
	}
	if err := d.Health(); err != nil {
		t.Fatalf("Health after recovery: %v", err)
	}
	for k, v := range acked {
		checkGet(t, d, k, v, true)
	}
}

// TestFailedWALSyncReportsUnknownOutcome: a write whose WAL fsync failed
// may be on disk anyway and reappear after a restart, so its error says the
// outcome is unknown; writes refused afterwards (writes disabled) were not
// applied, and their error says nothing of the kind.
func TestFailedWALSyncReportsUnknownOutcome(t *testing.T) {
	mem := vfs.NewMem()
	fs := newSweepFS(mem, 0, false)
	var arm atomic.Bool
	fs.inject = func(kind, where string) error {
		if kind == "sync" && strings.Contains(where, "walWriter") && arm.CompareAndSwap(true, false) {
			return errInjectedEIO
		}
		return nil
	}
	opts := testOptions(fs)
	opts.Sync = SyncAlways
	d := mustOpen(t, "/db", opts)
	mustPut(t, d, "acked", "1")
	arm.Store(true)
	err := d.Put([]byte("unknown"), []byte("2"))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Put whose WAL sync failed: %v, want ErrOutcomeUnknown", err)
	}
	err = d.Put([]byte("refused"), []byte("3"))
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Put after writes were disabled: %v, want a definite refusal", err)
	}
	d.Close()
	d = mustOpen(t, "/db", testOptions(mem))
	defer d.Close()
	checkGet(t, d, "acked", "1", true)
	checkGet(t, d, "refused", "", false)
	// "unknown" may or may not be there: that is what the error said.
}

// openFilesFS counts the files opened for writing and not yet closed.
type openFilesFS struct {
	vfs.FS
	open atomic.Int64
}

type countedFile struct {
	vfs.File
	fs   *openFilesFS
	once sync.Once
}

func (f *countedFile) Close() error {
	f.once.Do(func() { f.fs.open.Add(-1) })
	return f.File.Close()
}

func (fs *openFilesFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	if err != nil {
		return nil, err
	}
	fs.open.Add(1)
	return &countedFile{File: f, fs: fs}, nil
}

// TestWALClosedWhenItsSyncFails: after a failed WAL write, the WAL's sync at
// Close fails; its descriptor is closed all the same.
func TestWALClosedWhenItsSyncFails(t *testing.T) {
	sfs := newSweepFS(vfs.NewMem(), 0, true)
	var phase atomic.Int32 // 1: fail the next WAL write; 2: then its sync at close
	sfs.inject = func(kind, where string) error {
		switch {
		case kind == "write" && strings.Contains(where, "walWriter") && phase.CompareAndSwap(1, 2):
			return errInjectedEIO
		case kind == "sync" && strings.Contains(where, "walWriter).close") && phase.CompareAndSwap(2, 3):
			return errInjectedEIO
		}
		return nil
	}
	fs := &openFilesFS{FS: sfs}
	opts := smallOptions(fs)
	opts.Sync = SyncNone
	d := mustOpen(t, "/db", opts)
	mustPut(t, d, "a", "1")
	phase.Store(1)
	if err := d.Put([]byte("b"), []byte("2")); err == nil {
		t.Fatal("Put with a failing WAL write succeeded")
	}
	d.Close() // the old code's close synced again here, failed, and kept the file
	if n := fs.open.Load(); n != 0 {
		t.Fatalf("%d files still open after Close", n)
	}
}

// orphanTables counts the table files on disk that the current version
// does not hold, after deleting those queued as obsolete.
func orphanTables(t *testing.T, d *DB, fs vfs.FS) int {
	t.Helper()
	d.deleteObsoleteTables()
	live := map[uint64]bool{}
	d.mu.Lock()
	for _, files := range d.current.levels {
		for _, f := range files {
			live[f.fileNum] = true
		}
	}
	d.mu.Unlock()
	n := 0
	for _, num := range filesOfType(t, fs, "/db", fileTypeTable) {
		if !live[num] {
			n++
		}
	}
	return n
}

// TestFailedManifestEditsLeaveNoOrphans: tables and manifests that failed
// manifest edits left behind are deleted once a new manifest is CURRENT,
// not only by the next Open (each failed flush attempt left a full copy of
// its memtable, and each failed append a manifest, for as long as the DB
// ran); while manifest syncs keep failing, retries that provably never
// became CURRENT leave nothing.
func TestFailedManifestEditsLeaveNoOrphans(t *testing.T) {
	mem := vfs.NewMem()
	fs := newSweepFS(mem, 0, false)
	var fail atomic.Bool
	fs.inject = func(kind, where string) error {
		if fail.Load() && kind == "sync" && (strings.Contains(where, "logAndApply") || strings.Contains(where, "writeSnapshotManifest")) {
			return errInjectedEIO
		}
		return nil
	}
	var attempts atomic.Int32
	opts := smallOptions(fs)
	opts.Logger = slog.New(countingHandler{n: &attempts, msg: "lsm: flush failed"})
	d := mustOpen(t, "/db", opts)
	defer func() { fail.Store(false); d.Close() }()
	value := strings.Repeat("v", 500)
	for c := range 2 {
		for i := range 50 {
			mustPut(t, d, fmt.Sprintf("c%d-k%03d", c, i), value)
		}
		attempts.Store(0)
		fail.Store(true)
		if err := d.Flush(); err == nil {
			t.Fatal("flush succeeded with failing manifest syncs")
		}
		for deadline := time.Now().Add(10 * time.Second); attempts.Load() < 2; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no flush retry")
			}
		}
		if n := orphanTables(t, d, mem); n > 1 {
			t.Fatalf("cycle %d: %d flush attempts of one memtable, %d tables nothing uses while manifest syncs fail", c, attempts.Load(), n)
		}
		fail.Store(false)
		for deadline := time.Now().Add(10 * time.Second); d.Health() != nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no recovery: %v", d.Health())
			}
		}
		if n := orphanTables(t, d, mem); n != 0 {
			t.Fatalf("cycle %d: %d orphaned tables after a manifest was written again", c, n)
		}
		if m := filesOfType(t, mem, "/db", fileTypeManifest); len(m) != 1 {
			t.Fatalf("cycle %d: manifests on disk %v, want one", c, m)
		}
	}
	for c := range 2 {
		for i := range 50 {
			checkGet(t, d, fmt.Sprintf("c%d-k%03d", c, i), value, true)
		}
	}
}

// countingHandler counts the log records whose message starts with msg.
type countingHandler struct {
	n   *atomic.Int32
	msg string
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.msg) {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }
