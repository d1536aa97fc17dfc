package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kvstore/kv/lsm"
)

func openLocal(t *testing.T) *Local {
	t.Helper()
	db, err := lsm.Open(t.TempDir(), lsm.Options{MemtableBytes: 1 << 20, BlockCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(db, "127.0.0.1:1")
	t.Cleanup(func() { l.Close() })
	return l
}

// wait turns a store callback into a return value.
func wait[T any](call func(done func(T, error))) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	call(func(v T, err error) { ch <- res{v, err} })
	r := <-ch
	return r.v, r.err
}

func waitErr(call func(done func(error))) error {
	ch := make(chan error, 1)
	call(func(err error) { ch <- err })
	return <-ch
}

// TestLocalCloseFlushes: Close writes the memtable out as a table, so the
// next start has no log to replay.
func TestLocalCloseFlushes(t *testing.T) {
	dir := t.TempDir()
	opts := lsm.Options{MemtableBytes: 1 << 20, BlockCacheBytes: 1 << 20}
	db, err := lsm.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(db, "127.0.0.1:1")
	b := lsm.NewBatch()
	b.Put([]byte("k"), []byte("v"))
	if err := waitErr(func(done func(error)) { l.Write(b, done) }); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(tables) == 0 {
		t.Fatalf("no table after Close: %v %v", tables, err)
	}
	db, err = lsm.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, err := db.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get after reopen: %q %v", v, err)
	}
}

func TestLocalReadWriteRangeClear(t *testing.T) {
	l := openLocal(t)
	b := lsm.NewBatch()
	for i := 0; i < 10; i++ {
		b.Put([]byte(fmt.Sprintf("k%d", i)), []byte(fmt.Sprint(i)))
	}
	if err := waitErr(func(done func(error)) { l.Write(b, done) }); err != nil {
		t.Fatal(err)
	}
	v, err := wait(func(done func([]byte, error)) { l.Get([]byte("k3"), done) })
	if err != nil || string(v) != "3" {
		t.Fatalf("Get: %q %v", v, err)
	}
	if v, err := l.GetSync([]byte("k4")); err != nil || string(v) != "4" {
		t.Fatalf("GetSync: %q %v", v, err)
	}
	if _, err := l.GetSync([]byte("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	kvs, err := wait(func(done func([]KV, error)) { l.Range([]byte("k2"), []byte("k5"), 100, done) })
	if err != nil || len(kvs) != 3 || string(kvs[0].Key) != "k2" {
		t.Fatalf("Range: %v %v", kvs, err)
	}
	kvs, _ = wait(func(done func([]KV, error)) { l.Range(nil, nil, 4, done) })
	if len(kvs) != 4 {
		t.Fatalf("Range limit: %d pairs", len(kvs))
	}
	if l.ApproxKeys() < 10 {
		t.Fatalf("ApproxKeys = %d", l.ApproxKeys())
	}
	if err := waitErr(l.Clear); err != nil {
		t.Fatal(err)
	}
	kvs, _ = wait(func(done func([]KV, error)) { l.Range(nil, nil, 100, done) })
	if len(kvs) != 0 {
		t.Fatalf("after Clear: %d pairs", len(kvs))
	}
}

func TestLocalAnswersAsOneNodeCluster(t *testing.T) {
	l := openLocal(t)
	st := l.Status()
	if st.Mode != "standalone" || st.State != "healthy" || st.Nodes != 1 || st.ShardsWithLeader != 1 {
		t.Fatalf("status %+v", st)
	}
	if n, err := l.Leader([]byte("x")); err != nil || n.Client != "127.0.0.1:1" {
		t.Fatalf("leader %+v %v", n, err)
	}
	if err := waitErr(func(done func(error)) { l.Join(2, "a", "b", done) }); !errors.Is(err, ErrStandalone) {
		t.Fatalf("Join: %v", err)
	}
	if err := waitErr(func(done func(error)) { l.Remove(2, done) }); !errors.Is(err, ErrStandalone) {
		t.Fatalf("Remove: %v", err)
	}
}

func TestLocalReportsStorageErrors(t *testing.T) {
	l := openLocal(t)
	l.Close()
	_, err := l.GetSync([]byte("k"))
	if err == nil || err.Error() != "storage unavailable: shutting down" {
		t.Fatalf("after close: %v", err)
	}
}

// goid is the current goroutine's id, from its stack header.
func goid() string {
	buf := make([]byte, 64)
	return strings.Fields(string(buf[:runtime.Stack(buf, false)]))[1]
}

// A range over a large unordered memtable backlog is answered from another
// goroutine (the caller is an event loop that must not stall while the
// backlog is sorted); a small one on the caller's, without a hand-off.
func TestLocalRangeOverLargeBacklogLeavesCallersGoroutine(t *testing.T) {
	l := openLocal(t)
	const n = 4000
	b := lsm.NewBatch()
	for i := range n {
		b.Put(fmt.Appendf(nil, "k%05d", n-1-i), bytes.Repeat([]byte{'v'}, 100))
	}
	if err := waitErr(func(done func(error)) { l.Write(b, done) }); err != nil {
		t.Fatal(err)
	}
	if got := l.DB().UnorderedBytes(); got <= asyncRangeBytes {
		t.Fatalf("backlog %d bytes, want more than %d", got, asyncRangeBytes)
	}
	for _, wantOther := range []bool{true, false} { // the first range orders the backlog
		type res struct {
			kvs []KV
			err error
			id  string
		}
		ch := make(chan res, 1)
		l.Range([]byte("k00100"), []byte("k00200"), 3, func(kvs []KV, err error) { ch <- res{kvs, err, goid()} })
		r := <-ch
		if r.err != nil || len(r.kvs) != 3 || string(r.kvs[0].Key) != "k00100" || string(r.kvs[2].Key) != "k00102" {
			t.Fatalf("range: %d pairs, %v", len(r.kvs), r.err)
		}
		if other := r.id != goid(); other != wantOther {
			t.Fatalf("answered on another goroutine: %v, want %v (backlog now %d bytes)", other, wantOther, l.DB().UnorderedBytes())
		}
	}
}

// A range over many tombstones (a scan of a few keys that steps over each
// of them) is answered from another goroutine; one beside them on the
// caller's.
func TestLocalRangeOverTombstonesLeavesCallersGoroutine(t *testing.T) {
	l := openLocal(t)
	put, del := lsm.NewBatch(), lsm.NewBatch()
	for i := range 3 * asyncRangeSkips {
		put.Put(fmt.Appendf(nil, "k%06d", i), []byte("v"))
		if i < 2*asyncRangeSkips {
			del.Delete(fmt.Appendf(nil, "k%06d", i))
		}
	}
	for i, b := range []*lsm.Batch{put, del} {
		if i == 1 {
			// A reader from before the deletes keeps every tombstone
			// through the compactions that follow the flush.
			it := l.DB().NewIterator(nil, nil)
			defer it.Close()
		}
		if err := waitErr(func(done func(error)) { l.Write(b, done) }); err != nil {
			t.Fatal(err)
		}
		if err := l.DB().Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		start     string
		wantFirst string
		wantOther bool
	}{
		{"k", fmt.Sprintf("k%06d", 2*asyncRangeSkips), true},
		{fmt.Sprintf("k%06d", 2*asyncRangeSkips+5), fmt.Sprintf("k%06d", 2*asyncRangeSkips+5), false},
	} {
		type res struct {
			kvs []KV
			err error
			id  string
		}
		ch := make(chan res, 1)
		l.Range([]byte(c.start), nil, 3, func(kvs []KV, err error) { ch <- res{kvs, err, goid()} })
		r := <-ch
		if r.err != nil || len(r.kvs) != 3 || string(r.kvs[0].Key) != c.wantFirst {
			t.Fatalf("range from %q: %d pairs, %v", c.start, len(r.kvs), r.err)
		}
		if other := r.id != goid(); other != c.wantOther {
			t.Fatalf("range from %q answered on another goroutine: %v, want %v", c.start, other, c.wantOther)
		}
	}
}

// Close waits for a range running on its own goroutine before it closes the
// engine under it.
func TestLocalCloseWaitsForBackgroundRange(t *testing.T) {
	db, err := lsm.Open(t.TempDir(), lsm.Options{MemtableBytes: 4 << 20, BlockCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(db, "127.0.0.1:1")
	b := lsm.NewBatch()
	for i := range 20000 {
		b.Put(fmt.Appendf(nil, "k%07d", (i*7919)%20000), bytes.Repeat([]byte{'v'}, 100))
	}
	if err := waitErr(func(done func(error)) { l.Write(b, done) }); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int32
	l.Range(nil, nil, 10, func(kvs []KV, err error) {
		if err == nil && len(kvs) == 10 {
			got.Store(1)
		} else {
			got.Store(2)
		}
	})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got.Load() != 1 {
		t.Fatalf("range finished before Close returned: %d (1 = with 10 pairs)", got.Load())
	}
	// After Close, ranges and clears fail instead of starting.
	if _, err := wait(func(done func([]KV, error)) { l.Range(nil, nil, 10, done) }); err == nil {
		t.Fatal("range after Close succeeded")
	}
	if err := waitErr(l.Clear); err == nil {
		t.Fatal("clear after Close succeeded")
	}
}

// TestLocalDiskReadsLeaveCallersGoroutine: a GET whose table is not open
// yet (its first read needs the disk) is answered on another goroutine,
// and GetSync says ErrWouldBlock; once the table is open and its blocks
// are in memory, both answer on the caller's goroutine.
func TestLocalDiskReadsLeaveCallersGoroutine(t *testing.T) {
	l := openLocal(t)
	b := lsm.NewBatch()
	b.Put([]byte("k"), []byte("v"))
	if err := waitErr(func(done func(error)) { l.Write(b, done) }); err != nil {
		t.Fatal(err)
	}
	if err := l.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GetSync([]byte("k")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("GetSync of an unopened table: %v", err)
	}
	for _, wantOther := range []bool{true, false} {
		type res struct {
			v   []byte
			err error
			id  string
		}
		ch := make(chan res, 1)
		l.Get([]byte("k"), func(v []byte, err error) { ch <- res{v, err, goid()} })
		r := <-ch
		if r.err != nil || string(r.v) != "v" {
			t.Fatalf("get: %q %v", r.v, r.err)
		}
		if other := r.id != goid(); other != wantOther {
			t.Fatalf("answered on another goroutine: %v, want %v", other, wantOther)
		}
	}
	if v, err := l.GetSync([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("GetSync once the table is open: %q %v", v, err)
	}
}
