package lsm

import (
	"runtime"
	"strings"
	"testing"

	"github.com/lni/vfs"
)

// TestCloseStopsPrefault: the goroutines that fault in memtable memory
// end with Close (they used to fault in a closed DB's whole memtable, and
// prepare a spare one, after Close had returned).
func TestCloseStopsPrefault(t *testing.T) {
	d := mustOpen(t, t.TempDir(), Options{FS: vfs.Default, MemtableBytes: 256 << 20})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if i := strings.Index(stacks, "memtable.(*Table).Prefault"); i >= 0 {
		t.Fatalf("a Prefault goroutine still runs after Close:\n%s", stacks[max(0, i-300):min(len(stacks), i+300)])
	}
}
