// Package lsmtest builds lsm databases with known contents and damages them
// at rest, for the tests of the tools that verify them (kvserver -check,
// the admin endpoint's /verify).
package lsmtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvstore/kv/lsm"
)

// OneTable opens an uncompressed DB in dir holding n keys "k000"... with
// values "value-000"... flushed into one table, and returns it open with
// the table's path.
func OneTable(t testing.TB, dir string, n int) (*lsm.DB, string) {
	t.Helper()
	db, err := lsm.Open(dir, lsm.Options{Compression: lsm.CompressionNone, BlockCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := db.Put(fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "value-%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) != 1 {
		t.Fatalf("tables %v, want one", tables)
	}
	return db, tables[0]
}

// FlipValue flips a bit of value's bytes in the table at path, in place, as
// damage at rest would: an open reader of the table reads it too.
func FlipValue(t testing.TB, path, value string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte(value))
	if i < 0 {
		t.Fatalf("%q not found in %s", value, path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := i + len(value) - 3
	if _, err := f.WriteAt([]byte{data[at] ^ 1}, int64(at)); err != nil {
		t.Fatal(err)
	}
}
