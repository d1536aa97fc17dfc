package lsm

import (
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// failWALsFS fails the creation of WAL files while fail is set, as a
// process out of descriptors (EMFILE) or a full or read-only directory
// would.
type failWALsFS struct {
	vfs.FS
	fail *atomic.Bool
}

func (fs failWALsFS) Create(name string) (vfs.File, error) {
	if fs.fail.Load() && strings.HasSuffix(name, ".log") {
		return nil, syscall.EMFILE
	}
	return fs.FS.Create(name)
}

// TestFailedWALCreationIsNotFatal: a rotation that cannot create the next
// WAL (nothing written yet, the old WAL complete on disk) refuses the
// writes that need it, definitely, and Health says why; once the cause is
// gone the next write creates the WAL and goes through, without a restart.
// Everything acknowledged survives a reopen and nothing refused appears.
func TestFailedWALCreationIsNotFatal(t *testing.T) {
	var fail atomic.Bool
	mem := vfs.NewMem()
	opts := testOptions(failWALsFS{FS: mem, fail: &fail})
	opts.Sync = SyncAlways
	d := mustOpen(t, "/db", opts)
	mustPut(t, d, "before", "1")

	fail.Store(true)
	if err := d.Flush(); err == nil {
		t.Fatal("Flush while no WAL can be created: no error")
	}
	err := d.Put([]byte("refused"), []byte("2"))
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Put while no WAL can be created: %v, want a definite refusal", err)
	}
	if err := d.Health(); err == nil {
		t.Fatal("Health while no WAL can be created: nil")
	}

	fail.Store(false)
	time.Sleep(150 * time.Millisecond) // more than walCreateRetry
	if err := d.Put([]byte("after"), []byte("3")); err != nil {
		t.Fatalf("Put once WALs can be created again: %v", err)
	}
	if err := d.Health(); err != nil {
		t.Fatalf("Health once WALs can be created again: %v", err)
	}
	checkGet(t, d, "before", "1", true)
	checkGet(t, d, "after", "3", true)
	checkGet(t, d, "refused", "", false)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	d = mustOpen(t, "/db", testOptions(mem))
	defer d.Close()
	checkGet(t, d, "before", "1", true)
	checkGet(t, d, "after", "3", true)
	checkGet(t, d, "refused", "", false)
}
