package lsm

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/internal/procfd"
	"github.com/kvstore/kv/lsm/sstable"
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

// TestMaxOpenTables: with more tables than MaxOpenTables, every key reads
// back through Get and iterators, and once reads are done the DB holds no
// more table files open than the bound; two DBs sharing TableFiles hold no
// more than it between them.
func TestMaxOpenTables(t *testing.T) {
	const bound = 4
	files := sstable.NewFileCache(bound)
	dirs := []string{t.TempDir(), t.TempDir()}
	var dbs []*DB
	for _, dir := range dirs {
		opts := smallOptions(vfs.Default)
		opts.BlockCacheBytes = 64 << 10 // small: reads reach the files
		opts.TableFiles = files
		d := mustOpen(t, dir, opts)
		defer d.Close()
		dbs = append(dbs, d)
	}
	model := map[string]string{}
	for i := range 3000 {
		k := fmt.Sprintf("key%05d", i)
		v := fmt.Sprintf("value%05d-%s", i, strings.Repeat("x", 100))
		for _, d := range dbs {
			mustPut(t, d, k, v)
		}
		model[k] = v
	}
	tables := 0
	for _, d := range dbs {
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.Metrics().Levels {
			tables += l.Files
		}
	}
	if tables <= 2*bound {
		t.Fatalf("only %d tables: the test needs more than %d", tables, 2*bound)
	}
	for round := range 2 {
		for _, d := range dbs {
			for k, v := range model {
				checkGet(t, d, k, v, true)
			}
			if diff := diffScan(scan(t, d, nil, nil), modelScan(model, nil, nil)); diff != "" {
				t.Fatalf("round %d: scan: %s", round, diff)
			}
		}
	}
	for _, dir := range dirs {
		if n := openTableFiles(t, dir); n > bound {
			t.Fatalf("%d table files open in %s after reads, bound %d (shared)", n, dir, bound)
		}
	}
	if n := openTableFiles(t, dirs[0]) + openTableFiles(t, dirs[1]); n > bound {
		t.Fatalf("%d table files open in both DBs, bound %d", n, bound)
	}
	m := dbs[0].Metrics()
	if m.TableFilesOpen > bound || m.TableFileReopens == 0 {
		t.Fatalf("metrics: %d files open, %d reopens", m.TableFilesOpen, m.TableFileReopens)
	}
}

// openTableFiles counts this process's descriptors on tables in dir.
func openTableFiles(t *testing.T, dir string) int {
	t.Helper()
	n, err := procfd.Count(func(target string) bool { return filepath.Dir(target) == dir && strings.HasSuffix(target, ".sst") })
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return n
}
