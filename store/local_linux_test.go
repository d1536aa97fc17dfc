package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvstore/kv/lsm"
	"golang.org/x/sys/unix"
)

// A range whose blocks only the disk has is answered from another
// goroutine (the caller is an event loop, which must not wait for the
// disk), in full; once those blocks are cached, on the caller's.
func TestLocalRangeNeedingDiskLeavesCallersGoroutine(t *testing.T) {
	dir := t.TempDir()
	db, err := lsm.Open(dir, lsm.Options{MemtableBytes: 4 << 20, BlockCacheBytes: 1 << 20, Sync: lsm.SyncNone})
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(db, "127.0.0.1:1")
	t.Cleanup(func() { l.Close() })
	b := lsm.NewBatch()
	for i := range 5000 {
		b.Put(fmt.Appendf(nil, "k%06d", i), bytes.Repeat([]byte{'v'}, 200))
	}
	if err := waitErr(func(done func(error)) { l.Write(b, done) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	// Drop the table from the OS page cache; where the filesystem cannot
	// tell cached blocks apart (tmpfs), reads never leave the caller.
	names, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
	}
	probe := db.NewIteratorNoWait(nil, nil)
	probe.First()
	if err := probe.Close(); !errors.Is(err, lsm.ErrWouldBlock) {
		t.Skipf("reads here never report a block missing from memory: %v", err)
	}
	for _, wantOther := range []bool{true, false} { // the first range reads the blocks
		type res struct {
			kvs []KV
			err error
			id  string
		}
		ch := make(chan res, 1)
		l.Range([]byte("k001000"), []byte("k003000"), 2000, func(kvs []KV, err error) { ch <- res{kvs, err, goid()} })
		r := <-ch
		if r.err != nil || len(r.kvs) != 2000 || string(r.kvs[0].Key) != "k001000" || string(r.kvs[1999].Key) != "k002999" {
			t.Fatalf("range: %d pairs, %v", len(r.kvs), r.err)
		}
		if other := r.id != goid(); other != wantOther {
			t.Fatalf("answered on another goroutine: %v, want %v", other, wantOther)
		}
	}
}
