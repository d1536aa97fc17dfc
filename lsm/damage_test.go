package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/internal/logtest"
	"github.com/lni/vfs"
)

// damagedTableDB writes k000..k099 to one table and returns a copy of the
// DB in which the block holding k000 has a bad checksum, and the table's
// file name.
func damagedTableDB(t *testing.T) (*vfs.MemFS, string) {
	t.Helper()
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", Options{BlockCacheBytes: testCacheBytes, FS: fs, Compression: CompressionNone})
	for i := range 100 {
		mustPut(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("value-%03d", i))
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	tables := filesOfType(t, fs, "/db", fileTypeTable)
	if len(tables) != 1 {
		t.Fatalf("tables %v", tables)
	}
	table := makeFilename(fileTypeTable, tables[0])
	return editFile(t, fs, table, func(data []byte) []byte {
		i := bytes.Index(data, []byte("value-000"))
		if i < 0 {
			t.Fatal("value not found in table")
		}
		data[i+6] ^= 1 // "value-000" -> "value-100"
		return data
	}), table
}

// TestReadCorruptionReported: reads that meet a damaged table fail (as
// before) and are now visible: counted in CorruptReads, logged once for
// the table however many reads hit it, with its name and the offset, and
// reported by Health for good, while writes go on.
func TestReadCorruptionReported(t *testing.T) {
	fs, table := damagedTableDB(t)
	opts := testOptions(fs)
	logger, rec := logtest.New()
	opts.Logger = logger
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	if err := d.Health(); err != nil {
		t.Fatalf("Health before any read met the damage: %v", err)
	}

	const gets = 5
	for range gets {
		if _, err := d.Get([]byte("k000")); !errors.Is(err, ErrCorruption) {
			t.Fatalf("Get of a damaged block: %v", err)
		}
	}
	if _, err := d.GetNoWait([]byte("k000")); !errors.Is(err, ErrCorruption) {
		t.Fatalf("GetNoWait of a damaged block: %v", err)
	}
	it := d.NewIterator(nil, nil)
	for ok := it.First(); ok; ok = it.Next() {
	}
	if err := it.Close(); !errors.Is(err, ErrCorruption) {
		t.Fatalf("iteration over a damaged block: %v", err)
	}
	if got, want := d.Metrics().CorruptReads, int64(gets+2); got != want {
		t.Fatalf("CorruptReads = %d, want %d", got, want)
	}

	logged := logtest.Matching(rec.Records(), "lsm: damaged table")
	if len(logged) != 1 || !strings.Contains(logged[0], table) || !strings.Contains(logged[0], " offset=") ||
		!strings.Contains(logged[0], "found_by=read") {
		t.Fatalf("damage logged as %q, want one record naming %s and the offset", logged, table)
	}
	err := d.Health()
	if !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), table) || !strings.Contains(err.Error(), "at offset ") {
		t.Fatalf("Health after reads met a damaged table = %v, want the damage", err)
	}

	// Reporting refuses nothing: writes, and reads of intact data, go on.
	mustPut(t, d, "after", "damage")
	checkGet(t, d, "after", "damage", true)
	if err := d.Health(); !errors.Is(err, ErrCorruption) {
		t.Fatalf("Health after a write = %v, want the damage still", err)
	}
}

// TestCompactionCorruptionReported: a compaction that meets a damaged
// table fails once, is logged once (the damage and the failure), is
// reported by Health, and is not run again over that table (it would read
// the same block and fail the same way); reads that meet the damage later
// are counted but not logged again.
func TestCompactionCorruptionReported(t *testing.T) {
	fs, table := damagedTableDB(t)
	opts := testOptions(fs)
	opts.L0CompactionTrigger = 2
	logger, rec := logtest.New()
	opts.Logger = logger
	d := mustOpen(t, "/db", opts)
	defer d.Close()

	// A second L0 table over the same key range: L0->L1 reads both.
	for i := range 100 {
		mustPut(t, d, fmt.Sprintf("k%03dx", i), "v")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); d.Health() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the compaction over the damaged table did not fail")
		}
	}
	if err := d.Health(); !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), table) {
		t.Fatalf("Health after the compaction failed = %v, want the damage", err)
	}

	d.mu.Lock()
	v := d.current
	v.ref()
	var cursor [numLevels][]byte
	c := pickCompaction(v, d.pickerOptions(), &cursor)
	d.mu.Unlock()
	again := c != nil && d.damagedCompactionInput(c) != nil
	v.unref()
	if !again {
		t.Fatal("the compaction over the damaged table would run again")
	}

	// Wake-ups pick it again and fail it at once, logging nothing more.
	for i := range 2 {
		mustPut(t, d, fmt.Sprintf("k%03dy", i), "v")
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Get([]byte("k000")); !errors.Is(err, ErrCorruption) {
		t.Fatalf("Get of a damaged block: %v", err)
	}
	if got := d.Metrics().CorruptReads; got != 1 {
		t.Fatalf("CorruptReads = %d, want 1 (the Get; compactions are not reads)", got)
	}
	if err := d.Close(); err != nil { // waits for the compaction goroutine
		t.Fatal(err)
	}
	all := rec.Records()
	damage := logtest.Matching(all, "lsm: damaged table")
	if len(damage) != 1 || !strings.Contains(damage[0], table) || !strings.Contains(damage[0], "found_by=compaction") {
		t.Fatalf("damage logged as %q, want one record naming %s", damage, table)
	}
	if failed := logtest.Matching(all, "lsm: compaction failed"); len(failed) != 1 {
		t.Fatalf("compaction failures logged as %q, want one", failed)
	}
}

// TestTruncatedTableReportedAtOpen: a table whose file is shorter than the
// manifest says (truncated since it was written: a bad restore, say) is
// reported damaged as soon as the DB opens, before any read reaches it;
// the other tables serve.
func TestTruncatedTableReportedAtOpen(t *testing.T) {
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", testOptions(fs))
	mustPut(t, d, "a", "1")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "b", "2")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	tables := filesOfType(t, fs, "/db", fileTypeTable)
	if len(tables) != 2 {
		t.Fatalf("tables %v", tables)
	}
	name := makeFilename(fileTypeTable, tables[1])
	cfs := editFile(t, fs, name, func(data []byte) []byte { return data[:len(data)-10] })
	logger, rec := logtest.New()
	opts := testOptions(cfs)
	opts.Logger = logger
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	if err := d.Health(); !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), name) {
		t.Fatalf("Health after opening with %s truncated: %v", name, err)
	}
	if got := logtest.Matching(rec.Records(), "lsm: damaged table"); len(got) != 1 || !strings.Contains(got[0], "found_by=open") {
		t.Fatalf("logged %q", got)
	}
	checkGet(t, d, "a", "1", true)
}
