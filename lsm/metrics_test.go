package lsm

import (
	"fmt"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// TestMetricsAdd: a total over DBs adds counters and levels, recomputes
// WriteAmp and leaves the shared cache counters and Seq alone.
func TestMetricsAdd(t *testing.T) {
	a := Metrics{
		Levels:   []LevelMetrics{{Files: 2, Bytes: 100, Score: 0.5}, {Files: 1, Bytes: 50, Score: 1.5}},
		WALBytes: 10, FlushBytes: 30, UserBytesWritten: 10, WriteAmp: 4,
		Flushes: 1, StallCount: 1, StallDuration: time.Second, ApproxKeys: 7,
		CacheHits: 5, Seq: 9,
	}
	b := Metrics{
		Levels:                 []LevelMetrics{{Files: 1, Bytes: 10, Score: 1}, {}, {Files: 4, Bytes: 400, Score: 0.2}},
		CompactionBytesWritten: 50, UserBytesWritten: 10, WriteAmp: 5,
		Flushes: 2, StallDuration: time.Second, ApproxKeys: 3, ImmutableMemtables: 1,
		CacheHits: 5, Seq: 4,
	}
	var total Metrics
	total.Add(a)
	total.Add(b)
	want := []LevelMetrics{{Files: 3, Bytes: 110, Score: 1}, {Files: 1, Bytes: 50, Score: 1.5}, {Files: 4, Bytes: 400, Score: 0.2}}
	if len(total.Levels) != len(want) {
		t.Fatalf("levels %+v, want %+v", total.Levels, want)
	}
	for i := range want {
		if total.Levels[i] != want[i] {
			t.Fatalf("levels %+v, want %+v", total.Levels, want)
		}
	}
	if total.Flushes != 3 || total.StallCount != 1 || total.StallDuration != 2*time.Second ||
		total.ApproxKeys != 10 || total.ImmutableMemtables != 1 || total.UserBytesWritten != 20 {
		t.Fatalf("counters %+v", total)
	}
	if total.WriteAmp != 4.5 { // (10 + 30 + 50) / 20
		t.Fatalf("WriteAmp %v, want 4.5", total.WriteAmp)
	}
	if total.CacheHits != 0 || total.Seq != 0 {
		t.Fatalf("cache hits %d, seq %d: want them left alone", total.CacheHits, total.Seq)
	}
}

// TestTableMemory: the indexes and filters of open tables are counted
// while the tables are open (they are in no budget, and kvserver's memory
// limit follows them), and released with the readers.
func TestTableMemory(t *testing.T) {
	d := mustOpen(t, "db", testOptions(vfs.NewMem()))
	defer d.Close()
	for i := range 5000 {
		mustPut(t, d, fmt.Sprintf("key%06d", i), "value")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	checkGet(t, d, "key000042", "value", true) // opens the table's reader
	// 5000 keys at 10 bits each is 6 KB of filter; the index adds more.
	if got := d.Metrics().TableMemory; got < 5000*10/8 {
		t.Fatalf("TableMemory %d after reading a table of 5000 keys", got)
	}
	d.tc.closeAll()
	if got := d.Metrics().TableMemory; got != 0 {
		t.Fatalf("TableMemory %d with every reader closed", got)
	}
}
