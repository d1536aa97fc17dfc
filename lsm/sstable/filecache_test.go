package sstable

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/internal/procfd"
	"github.com/kvstore/kv/lsm/internal/base"
)

// fileTables writes n tables of es to dir on the real file system and opens
// a Reader on each, sharing files.
func fileTables(t *testing.T, dir string, n int, data []byte, files *FileCache) []*Reader {
	t.Helper()
	readers := make([]*Reader, n)
	for i := range readers {
		name := filepath.Join(dir, fmt.Sprintf("%06d.sst", i))
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := vfs.Default.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(f, int64(len(data)), ReaderOptions{
			FileNum: uint64(i), Name: name, Files: files,
			Reopen: func() (vfs.File, error) { return vfs.Default.Open(name) },
		})
		if err != nil {
			t.Fatal(err)
		}
		readers[i] = r
	}
	t.Cleanup(func() {
		for _, r := range readers {
			r.Close()
		}
	})
	return readers
}

// openIn counts this process's descriptors open on files in dir.
func openIn(t *testing.T, dir string) int {
	t.Helper()
	n, err := procfd.Count(func(target string) bool { return strings.HasPrefix(target, dir+string(filepath.Separator)) })
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return n
}

// Readers over more tables than the cache holds read correctly, reopening
// evicted files, and the process never holds more than the bound once the
// reads are done.
func TestFileCacheBoundsOpenFiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	es := modelEntries(rng, 500, 64)
	data, _ := buildTable(t, es, WriterOptions{})
	dir := t.TempDir()
	files := NewFileCache(3)
	readers := fileTables(t, dir, 10, data, files)
	if got := openIn(t, dir); got > 3 {
		t.Fatalf("%d table files open after opening 10 readers, bound 3", got)
	}
	m := newModel(es)
	for round := range 3 {
		for _, r := range readers {
			for i := round; i < len(es); i += 37 {
				checkGet(t, r, m, es[i].ukey, base.MaxSeq)
			}
		}
	}
	if got := openIn(t, dir); got > 3 {
		t.Fatalf("%d table files open, bound 3", got)
	}
	if files.Open() > 3 || files.Open() < 1 {
		t.Fatalf("Open() = %d, want 1..3", files.Open())
	}
	if files.Reopens() == 0 {
		t.Fatal("no file was reopened after reading 10 tables through a bound of 3")
	}
	for _, r := range readers {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if files.Open() != 0 || openIn(t, dir) != 0 {
		t.Fatalf("after Close: Open() = %d, %d descriptors", files.Open(), openIn(t, dir))
	}
}

// Concurrent Gets and iterators over tables that keep evicting each
// other's files see every entry (run with -race).
func TestFileCacheConcurrentEviction(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	es := modelEntries(rng, 400, 64)
	data, _ := buildTable(t, es, WriterOptions{BlockSize: 512})
	dir := t.TempDir()
	files := NewFileCache(2)
	readers := fileTables(t, dir, 6, data, files)
	m := newModel(es)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for round := range 4 {
				r := readers[(g+round)%len(readers)]
				if g%2 == 0 {
					if got := collect(t, r); len(got) != len(es) {
						t.Errorf("iterated %d entries, want %d", len(got), len(es))
						return
					}
					continue
				}
				for i := g; i < len(es); i += 5 {
					if !getMatches(t, r, m, es[i].ukey) {
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if files.Reopens() == 0 {
		t.Fatal("no file was reopened")
	}
}

// A read that must not wait does not reopen an evicted file (opening one
// is file-system work): it reports ErrWouldBlock, and a waiting read
// reopens it.
func TestFileCacheNoWaitDoesNotReopen(t *testing.T) {
	es := []entry{{ukey: "a", seq: 1, kind: base.KindSet, value: []byte("1")}}
	data, _ := buildTable(t, es, WriterOptions{})
	dir := t.TempDir()
	files := NewFileCache(1)
	readers := fileTables(t, dir, 2, data, files)
	if readers[0].file.Load() != nil {
		t.Fatal("first reader's file still open after the second opened with a bound of 1")
	}
	if _, _, _, err := readers[0].GetNoWait([]byte("a"), base.MaxSeq); !errors.Is(err, base.ErrWouldBlock) {
		t.Fatalf("GetNoWait on an evicted file: %v, want ErrWouldBlock", err)
	}
	v, _, found, err := readers[0].Get([]byte("a"), base.MaxSeq)
	if err != nil || !found || string(v) != "1" {
		t.Fatalf("Get = %q %v %v", v, found, err)
	}
	if readers[1].file.Load() != nil || files.Open() != 1 {
		t.Fatalf("after reopening: second reader open %v, Open() = %d", readers[1].file.Load() != nil, files.Open())
	}
}

// A Reader whose file cannot be reopened (the file is gone) fails its read
// with an error naming the table, and Close still succeeds.
func TestFileCacheReopenFailure(t *testing.T) {
	es := []entry{{ukey: "a", seq: 1, kind: base.KindSet, value: []byte("1")}}
	data, _ := buildTable(t, es, WriterOptions{})
	dir := t.TempDir()
	files := NewFileCache(1)
	readers := fileTables(t, dir, 2, data, files)
	if err := os.Remove(readers[0].name); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := readers[0].Get([]byte("a"), base.MaxSeq)
	if err == nil || !strings.Contains(err.Error(), readers[0].name) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Get with the file gone: %v", err)
	}
	if err := readers[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := readers[0].Get([]byte("a"), base.MaxSeq); err == nil {
		t.Fatal("Get after Close succeeded")
	}
}
