package lsm

import (
	"errors"
	"testing"
)

// TestTableOpenRacingCloseIsNotKept: a reader opened while the DB closes
// (closeAll ran after the open began, so it could not see the reader) is
// closed and not kept, rather than left open for good.
func TestTableOpenRacingCloseIsNotKept(t *testing.T) {
	d := mustOpen(t, t.TempDir(), Options{})
	mustPut(t, d, "k", "v")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	rs := d.acquireReadState()
	defer rs.unref()
	if len(rs.v.levels[0]) != 1 {
		t.Fatalf("%d tables in L0, want 1", len(rs.v.levels[0]))
	}
	f := rs.v.levels[0][0]
	d.tc.evict(f) // as if never read
	d.tc.afterOpen = d.tc.closeAll
	if _, err := d.tc.reader(f); !errors.Is(err, ErrClosed) {
		t.Fatalf("reader opened during closeAll: err = %v, want ErrClosed", err)
	}
	if f.reader.Load() != nil {
		t.Fatal("reader opened during closeAll was kept")
	}
	d.tc.mu.Lock()
	n := len(d.tc.open)
	d.tc.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d readers tracked after closeAll", n)
	}
}
