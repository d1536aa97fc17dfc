package lsm

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lni/vfs"
)

// budgetTablesFS lets budget tables be created, then fails the others as a
// full disk would; a negative budget is unlimited.
type budgetTablesFS struct {
	vfs.FS
	budget *atomic.Int64
}

func (fs budgetTablesFS) Create(name string) (vfs.File, error) {
	if strings.HasSuffix(name, ".sst") {
		if fs.budget.Load() == 0 {
			return nil, errors.New("injected: no space left on device")
		}
		fs.budget.Add(-1)
	}
	return fs.FS.Create(name)
}

// TestFailedRecoveryLeavesNoTables: an Open that fails while writing the
// replayed WALs to tables (a full disk) removes the tables it wrote, which
// no manifest names, instead of leaving them to take the room the next
// attempt needs; once there is room, Open succeeds with every write.
func TestFailedRecoveryLeavesNoTables(t *testing.T) {
	mem := vfs.NewMem()
	var budget atomic.Int64
	fs := budgetTablesFS{FS: mem, budget: &budget}
	opts := testOptions(fs)
	opts.MemtableBytes = minMemtableBytes
	d := mustOpen(t, "/db", opts)
	value := strings.Repeat("v", 1000)
	acked := 0
	for ; acked < 100000; acked++ {
		if err := d.Put(fmt.Appendf(nil, "k%06d", acked), []byte(value)); err != nil {
			break
		}
	}
	d.Close() // fails to flush: the WALs keep the writes
	if acked == 0 || acked == 100000 {
		t.Fatalf("%d writes acknowledged while no table could be written", acked)
	}

	budget.Store(1) // room for one table of the several the WALs need
	if d, err := Open("/db", opts); err == nil {
		d.Close()
		t.Fatal("Open with room for one table: no error")
	}
	names, err := mem.List("/db")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, ".sst") {
			t.Errorf("failed Open left %s behind", name)
		}
	}

	budget.Store(-1)
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	for i := range acked {
		checkGet(t, d, fmt.Sprintf("k%06d", i), value, true)
	}
}
