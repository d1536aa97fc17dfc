package lsm

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/lni/vfs"
)

func TestCheckpoint(t *testing.T) {
	for _, disableWAL := range []bool{false, true} {
		t.Run(fmt.Sprint("disableWAL=", disableWAL), func(t *testing.T) {
			fs := vfs.NewStrictMem()
			opts := smallOptions(fs)
			opts.DisableWAL = disableWAL
			d := mustOpen(t, "/db", opts)
			for i := range 3000 {
				mustPut(t, d, fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i))
			}
			mustPut(t, d, "k00001", "overwritten")
			if err := d.Delete([]byte("k00002")); err != nil {
				t.Fatal(err)
			}
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
			fs.SetIgnoreSyncs(true)
			fs.ResetToSyncedState()
			fs.SetIgnoreSyncs(false)
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
