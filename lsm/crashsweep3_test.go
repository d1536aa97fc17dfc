package lsm

// A failed manifest sync during a compaction, followed by a process death
// (kill -9, OOM, panic elsewhere) before the next manifest edit: the
// compaction's outputs must still exist if the edit reached the disk.

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/vfs"
)

var errInjectedEIO = errors.New("injected EIO")

type chanWriter chan string

func (c chanWriter) Write(p []byte) (int, error) {
	select {
	case c <- string(p):
	default:
	}
	return len(p), nil
}

func TestSweepCompactionManifestSyncFailure(t *testing.T) {
	cases := []struct {
		name  string
		match func(kind, where string) bool
		max   int64
	}{
		// fsync of the appended edit fails (record.Writer.Sync has already
		// written the record with write(2)).
		{"append-sync", func(kind, w string) bool {
			return kind == "sync" && strings.Contains(w, "logAndApply") && strings.Contains(w, "runCompaction")
		}, 1 << 20},
		// manifest rotation: CURRENT was renamed, the directory fsync fails.
		{"rotate-dirsync", func(kind, w string) bool {
			return kind == "dirsync" && strings.Contains(w, "setCurrent") && strings.Contains(w, "runCompaction")
		}, 1},
		// control: the same failure in a flush's edit.
		{"flush-append-sync (control)", func(kind, w string) bool {
			return kind == "sync" && strings.Contains(w, "logAndApply") && strings.Contains(w, "flushMemtable")
		}, 1 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := vfs.NewMem() // not strict: models the page cache of a live kernel
			fs := newSweepFS(mem, 0, true)
			var injected atomic.Bool
			var where atomic.Value
			armed := false // a compaction has written output tables
			fs.inject = func(kind, w string) error {
				if kind == "create" && strings.Contains(w, "writeCompactionOutputs") {
					armed = true
				}
				if (armed || strings.Contains(c.name, "control")) && c.match(kind, w) && injected.CompareAndSwap(false, true) {
					where.Store(w)
					return errInjectedEIO
				}
				return nil
			}
			opts := sweepOptions(fs)
			opts.maxManifestBytes = c.max
			logged := make(chan string, 100)
			opts.Logger = slog.New(slog.NewTextHandler(chanWriter(logged), nil))
			d := mustOpen(t, "/db", opts)
			want := map[string]string{}
			for i := 0; i < 20000 && !injected.Load(); i++ {
				k, v := fmt.Sprintf("k%04d", i%3000), fmt.Sprintf("v%d|%s", i, strings.Repeat("z", 300))
				if err := d.Put([]byte(k), []byte(v)); err != nil {
					if injected.Load() {
						// Refused because of the injected failure (memtables
						// full while the flush fails): not acknowledged.
						break
					}
					t.Fatalf("put %s: %v", k, err)
				}
				want[k] = v
			}
			if !injected.Load() {
				t.Skip("no matching manifest write happened")
			}
			deadline := time.After(5 * time.Second)
		wait:
			for {
				select {
				case l := <-logged:
					if strings.Contains(l, "failed; will retry") {
						break wait
					}
				case <-deadline:
					t.Fatal("the failure was not reported")
				}
			}
			fs.kill() // the process dies here
			t.Logf("injected EIO at %s", where.Load())
			fs.mu.Lock()
			var rel []sweepOpRec
			for _, r := range fs.log {
				if strings.Contains(r.where, "runCompaction") && r.kind != "write" {
					rel = append(rel, r)
				}
			}
			for _, r := range rel[max(0, len(rel)-12):] {
				t.Logf("  %s", r)
			}
			fs.mu.Unlock()
			d.Close() // only releases in-memory resources now: every FS mutation fails

			d2, err := Open("/db", sweepOptions(mem))
			if err != nil {
				t.Fatalf("restart after EIO on a %s manifest write: %v", c.name, err)
			}
			defer d2.Close()
			for k, v := range want {
				if got, err := d2.Get([]byte(k)); err != nil || string(got) != v {
					t.Fatalf("after restart: Get(%s) = %.12q, %v", k, got, err)
				}
			}
		})
	}
}
