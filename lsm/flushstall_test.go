package lsm

import (
	"strings"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// compactionBlockingFS holds every compaction at the creation of its
// first output until release is closed; flushes go on.
type compactionBlockingFS struct {
	vfs.FS
	release chan struct{}
}

func (fs *compactionBlockingFS) Create(name string) (vfs.File, error) {
	if strings.Contains(sweepWhere(), "writeCompactionOutputs") {
		<-fs.release
	}
	return fs.FS.Create(name)
}

// TestFlushDuringWriteStall: with L0 at L0StopWrites and its compaction
// not done, writes stop, but a Flush with no write ahead of it returns at
// once. It used to wait for the compaction, and kvserver's Close, which
// flushes first, waited with it (over a minute with 12 GB of data).
func TestFlushDuringWriteStall(t *testing.T) {
	fs := &compactionBlockingFS{FS: vfs.NewMem(), release: make(chan struct{})}
	opts := smallOptions(fs)
	opts.L0CompactionTrigger, opts.L0SlowdownWrites, opts.L0StopWrites = 2, 4, 4
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	defer close(fs.release) // before Close: Close waits for the compaction
	for i := 0; len(d.readState.Load().v.levels[0]) < opts.L0StopWrites; i++ {
		if i == 10 {
			t.Fatalf("L0 holds %d tables after %d flushes", len(d.readState.Load().v.levels[0]), i)
		}
		mustPut(t, d, "k", "v")
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	flushed := make(chan error, 1)
	go func() { flushed <- d.Flush() }()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatalf("Flush during the stall: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Flush waited for the L0 compaction")
	}

	// Writes still stop, and go on once the compaction does.
	put := make(chan error, 1)
	go func() { put <- d.Put([]byte("k"), []byte("v2")) }()
	select {
	case err := <-put:
		t.Fatalf("Put with L0 at the stop returned %v before the compaction ran", err)
	case <-time.After(100 * time.Millisecond):
	}
	fs.release <- struct{}{} // lets one blocked Create through
	select {
	case err := <-put:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put still stopped after the compaction was let go")
	}
}
