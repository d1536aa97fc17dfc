package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/lni/vfs"
)

// smallOptions makes flushes and compactions happen after a few hundred
// kilobytes of writes.
func smallOptions(fs vfs.FS) Options {
	return Options{
		FS:                  fs,
		MemtableBytes:       64 << 10,
		BlockBytes:          1024,
		LevelBaseBytes:      64 << 10,
		TargetFileBytes:     16 << 10,
		L0CompactionTrigger: 2,
		BlockCacheBytes:     testCacheBytes,
	}
}

func mustOpen(t testing.TB, dir string, opts Options) *DB {
	t.Helper()
	d, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return d
}

func mustPut(t testing.TB, d *DB, k, v string) {
	t.Helper()
	if err := d.Put([]byte(k), []byte(v)); err != nil {
		t.Fatalf("put %q: %v", k, err)
	}
}

func mustDelete(t testing.TB, d *DB, k string) {
	t.Helper()
	if err := d.Delete([]byte(k)); err != nil {
		t.Fatalf("delete %q: %v", k, err)
	}
}

// checkGet asserts the value of k; want == "" with absent asserts
// ErrNotFound.
func checkGet(t testing.TB, d *DB, k string, want string, present bool) {
	t.Helper()
	v, err := d.Get([]byte(k))
	switch {
	case !present && !errors.Is(err, ErrNotFound):
		t.Fatalf("get %q: got %q, %v; want not found", k, v, err)
	case present && err != nil:
		t.Fatalf("get %q: %v", k, err)
	case present && string(v) != want:
		t.Fatalf("get %q: got %q, want %q", k, v, want)
	}
}

// scan returns the key/value pairs an iterator over [lower, upper) yields.
func scan(t testing.TB, d *DB, lower, upper []byte) [][2]string {
	t.Helper()
	it := d.NewIterator(lower, upper)
	var out [][2]string
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, [2]string{string(it.Key()), string(it.Value())})
	}
	if err := it.Close(); err != nil {
		t.Fatalf("iterate: %v", err)
	}
	return out
}

// modelScan returns the pairs of m within [lower, upper), sorted.
func modelScan(m map[string]string, lower, upper []byte) [][2]string {
	var out [][2]string
	for k, v := range m {
		if lower != nil && k < string(lower) || upper != nil && k >= string(upper) {
			continue
		}
		out = append(out, [2]string{k, v})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return bytes.Compare([]byte(a[0]), []byte(b[0])) })
	return out
}

func diffScan(got, want [][2]string) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("missing %q at %d (got %d pairs, want %d)", want[i][0], i, len(got), len(want))
		case i >= len(want):
			return fmt.Sprintf("extra %q at %d (got %d pairs, want %d)", got[i][0], i, len(got), len(want))
		case got[i] != want[i]:
			return fmt.Sprintf("at %d got %q=%q, want %q=%q", i, got[i][0], got[i][1], want[i][0], want[i][1])
		}
	}
	return ""
}

// copyFS copies the files of dir (not recursive) from src into a new
// in-memory FS, applying edit to each file's contents.
func copyFS(t testing.TB, src vfs.FS, dir string, edit func(name string, data []byte) []byte) *vfs.MemFS {
	t.Helper()
	dst := vfs.NewMem()
	if err := dst.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names, err := src.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if name == lockName {
			continue
		}
		data := readFile(t, src, src.PathJoin(dir, name))
		if edit != nil {
			data = edit(name, data)
		}
		writeFile(t, dst, dst.PathJoin(dir, name), data)
	}
	return dst
}

func readFile(t testing.TB, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t testing.TB, fs vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := fs.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// filesOfType lists the numbers of dir's files of type ft, ascending.
func filesOfType(t testing.TB, fs vfs.FS, dir string, ft fileType) []uint64 {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var nums []uint64
	for _, name := range names {
		if typ, num, ok := parseFilename(name); ok && typ == ft {
			nums = append(nums, num)
		}
	}
	slices.Sort(nums)
	return nums
}

// testCacheBytes keeps test caches small: creating and closing a large
// ristretto cache costs tens of milliseconds under the race detector.
const testCacheBytes = 1 << 20

// testOptions returns default options on fs, with a small block cache.
func testOptions(fs vfs.FS) Options {
	return Options{FS: fs, BlockCacheBytes: testCacheBytes}
}

// powerLoss keeps only what was synced, as a power cut would.
func powerLoss(mem *vfs.MemFS) {
	mem.SetIgnoreSyncs(true)
	mem.ResetToSyncedState()
	mem.SetIgnoreSyncs(false)
}
