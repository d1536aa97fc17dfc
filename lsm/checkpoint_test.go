package lsm

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/lni/vfs"
)

// fillCopyFixture writes what the copy tests (checkpoint, backup) expect
// to find: k00000..k02999 = v<i> over several tables, k00001 overwritten,
// k00002 deleted.
func fillCopyFixture(t *testing.T, d *DB) {
	t.Helper()
	for i := range 3000 {
		mustPut(t, d, fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i))
	}
	mustPut(t, d, "k00001", "overwritten")
	if err := d.Delete([]byte("k00002")); err != nil {
		t.Fatal(err)
	}
}

func TestCheckpoint(t *testing.T) {
	for _, disableWAL := range []bool{false, true} {
		t.Run(fmt.Sprint("disableWAL=", disableWAL), func(t *testing.T) {
			fs := vfs.NewStrictMem()
			opts := smallOptions(fs)
			opts.DisableWAL = disableWAL
			d := mustOpen(t, "/db", opts)
			fillCopyFixture(t, d)
			if err := d.Checkpoint("/cp"); err != nil {
				t.Fatal(err)
			}
			if err := d.Checkpoint("/cp"); !errors.Is(err, os.ErrExist) {
				t.Fatalf("checkpoint over an existing dir: %v", err)
			}
			// Later writes do not reach the checkpoint.
			mustPut(t, d, "after", "checkpoint")
			want := scan(t, d, nil, nil)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			// The checkpoint survives a power loss right after it returned.
			powerLoss(fs)
			cp := mustOpen(t, "/cp", opts)
			got := scan(t, cp, nil, nil)
			if len(got) != len(want)-1 {
				t.Fatalf("checkpoint has %d keys, want %d", len(got), len(want)-1)
			}
			checkGet(t, cp, "k00001", "overwritten", true)
			checkGet(t, cp, "k00002", "", false)
			checkGet(t, cp, "k02999", "v2999", true)
			checkGet(t, cp, "after", "", false)
			// The copy is independent: writing to it leaves the original alone.
			mustPut(t, cp, "only-in-copy", "x")
			for i := range 2000 {
				mustPut(t, cp, fmt.Sprintf("c%05d", i), "x")
			}
			if err := cp.Close(); err != nil {
				t.Fatal(err)
			}
			d = mustOpen(t, "/db", opts)
			defer d.Close()
			checkGet(t, d, "only-in-copy", "", false)
			if !disableWAL {
				checkGet(t, d, "after", "checkpoint", true)
			}
			checkGet(t, d, "k02999", "v2999", true)
		})
	}
}

// TestCheckpointNeverTearsABatch: a writer commits batches that each
// rewrite every key with one round number, about half a memtable each, so
// many are split across two memtables; checkpoints taken meanwhile must
// each hold one whole round (a version installed by a later flush may hold
// the first part of a split batch without its second), no older than the
// last round acknowledged before the call and none begun after it returned.
func TestCheckpointNeverTearsABatch(t *testing.T) {
	fs := vfs.NewMem()
	opts := smallOptions(fs)
	opts.Sync = SyncNone
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	const keys = 150 // ~200 B each: ~30 KiB a batch, half a 64 KiB memtable
	value := make([]byte, 180)
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	var acked atomic.Int64
	go func() {
		for round := 1; ; round++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			b := NewBatch()
			for k := range keys {
				b.Put(fmt.Appendf(nil, "k%03d", k), fmt.Appendf(value[:0:0], "%08d%s", round, value[8:]))
			}
			if err := d.Write(b); err != nil {
				writerDone <- err
				return
			}
			acked.Store(int64(round))
		}
	}()
	for i := range 60 {
		dir := fmt.Sprintf("/cp%d", i)
		before := acked.Load()
		if err := d.Checkpoint(dir); err != nil {
			t.Fatal(err)
		}
		after := acked.Load() + 1 // may have been committed before the call returned
		cp := mustOpen(t, dir, opts)
		rounds := map[string]int{}
		n := 0
		for _, kv := range scan(t, cp, nil, nil) {
			rounds[kv[1][:8]]++
			n++
		}
		cp.Close()
		if len(rounds) > 1 || n != 0 && n != keys {
			t.Fatalf("checkpoint %d holds parts of several batches: keys per round %v", i, rounds)
		}
		for r := range rounds {
			if got, _ := strconv.Atoi(r); int64(got) < before || int64(got) > after {
				t.Fatalf("checkpoint %d holds round %d; acknowledged before the call: %d, at most %d after", i, got, before, after)
			}
		}
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
}
