package lsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/lni/vfs"
)

// fullDiskBase builds a DB whose last writes are only in WALs (several
// memtables' worth: flushes failed while they were written), as a server
// leaves it when its disk fills and it is restarted. With torn set, the
// newest WAL also ends in a torn record, as a crash during an append
// leaves it. It returns the FS (everything synced) and the acknowledged
// batches.
func fullDiskBase(t *testing.T, torn bool) (*vfs.MemFS, [][]sweepKV) {
	t.Helper()
	mem := vfs.NewStrictMem()
	fs := newSweepFS(mem, 0, false)
	var full atomic.Bool
	fs.inject = func(kind, where string) error {
		if full.Load() && kind == "create" && strings.Contains(where, "tableOutput") {
			return syscall.ENOSPC
		}
		return nil
	}
	d, err := Open(sweepDir, sweepOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var batches [][]sweepKV
	for i := 0; ; i++ {
		if i == 150 {
			full.Store(true)
		}
		if i == 5000 {
			t.Fatal("5000 batches acknowledged while no table could be written")
		}
		b := NewBatch()
		var kvs []sweepKV
		for j := range 1 + rng.IntN(3) {
			key := fmt.Sprintf("k%03d", rng.IntN(250))
			if rng.IntN(6) == 0 {
				kvs = append(kvs, sweepKV{key: key, del: true})
				b.Delete([]byte(key))
				continue
			}
			val := fmt.Sprintf("b%d.%d|%s", i, j, strings.Repeat("x", 50+rng.IntN(600)))
			kvs = append(kvs, sweepKV{key: key, val: val})
			b.Put([]byte(key), []byte(val))
		}
		if err := d.Write(b); err != nil {
			if !full.Load() || errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("batch %d: %v", i, err)
			}
			break
		}
		batches = append(batches, kvs)
	}
	d.Close()
	if torn {
		logs := filesOfType(t, mem, sweepDir, fileTypeLog)
		name := mem.PathJoin(sweepDir, makeFilename(fileTypeLog, logs[len(logs)-1]))
		f, err := mem.OpenForAppend(name)
		if err != nil {
			t.Fatal(err)
		}
		// The start of a record header claiming more than follows.
		f.Write([]byte{0x12, 0x34, 0x56, 0x78, 0xff, 0x7f, 1, 'p', 'a', 'r'})
		f.Sync()
		f.Close()
	}
	if n := len(filesOfType(t, mem, sweepDir, fileTypeLog)); n < 2 {
		t.Fatalf("%d WALs: want the last writes spread over several", n)
	}
	return cloneStrict(t, mem), batches
}

// TestCrashSweepFullDiskOpen crashes at every file operation of a restart
// on a full disk and what follows it: Open (which cannot write the
// replayed memtables to tables and serves them from its WALs), reads,
// refused writes, the background flush once space is back (tables, the
// new WAL, the manifest switch, the old WALs' deletion), and writes after
// it. At each point it checks what a process killed there (the page cache
// survives) and a power loss (only what was synced) leave: a restart,
// first on the still-full disk, then with room, must find exactly the
// acknowledged writes, none refused. Both with and without a torn tail in
// the newest WAL: after Open creates its WAL, that one is no longer the
// newest, and a torn tail before it used to read as damage.
func TestCrashSweepFullDiskOpen(t *testing.T) {
	for _, torn := range []bool{false, true} {
		t.Run(fmt.Sprintf("torn=%v", torn), func(t *testing.T) {
			base, batches := fullDiskBase(t, torn)
			run := &sweepRun{batches: batches, acked: len(batches)}
			candidates := []int{run.acked}
			points, degradedOpens := 0, 0
			for m := int64(1); m < 1000; m++ {
				mem := cloneStrict(t, base)
				fs := newSweepFS(mem, m, true)
				var full atomic.Bool
				full.Store(true)
				fs.inject = func(kind, where string) error {
					if full.Load() && kind == "create" && strings.Contains(where, "tableOutput") {
						return syscall.ENOSPC
					}
					return nil
				}
				setCur := fs.closeOnCrash()
				extra := map[string]string{}
				extraMaybe := map[string]string{}
				d, err := Open(sweepDir, sweepOptions(fs))
				switch {
				case err == nil:
					setCur(d)
					if !fs.isCrashed() {
						degradedOpens++
						got, err := dbContents(d, sweepKeys())
						if err != nil {
							t.Fatalf("m=%d: read on a full disk: %v", m, err)
						}
						if _, diff := checkAgainst(got, batches, candidates, nil, nil); diff != "" {
							t.Fatalf("m=%d: contents on a full disk: %s", m, diff)
						}
						if err := d.Put([]byte("refused"), []byte("x")); err == nil || errors.Is(err, ErrOutcomeUnknown) {
							t.Fatalf("m=%d: Put on a full disk: %v", m, err)
						}
					}
					full.Store(false)
					d.Flush() // retries the flush at once; fails if the power went
					putAfterRecovery(d, extra, extraMaybe)
					d.Close()
				case !errors.Is(err, errPowerLoss):
					t.Fatalf("m=%d: Open on a full disk: %v", m, err)
				}
				reached := fs.isCrashed()
				points++

				killed := cloneStrict(t, mem) // a kill: the page cache survives
				mem.ResetToSyncedState()      // a power loss: only what was synced
				for _, after := range []struct {
					name string
					mem  *vfs.MemFS
				}{{"kill", killed}, {"power loss", mem}} {
					for _, stillFull := range []bool{true, false} {
						vfs := newSweepFS(after.mem, 0, false)
						vfs.inject = func(kind, where string) error {
							if stillFull && kind == "create" && strings.Contains(where, "tableOutput") {
								return syscall.ENOSPC
							}
							return nil
						}
						d, err := Open(sweepDir, sweepOptions(vfs))
						if err != nil {
							t.Fatalf("m=%d, after a %s, restart (full=%v): %v\n%s", m, after.name, stillFull, err, fsTrace(fs))
						}
						got, err := dbContents(d, sweepKeys())
						d.Close()
						if err != nil {
							t.Fatalf("m=%d, after a %s, read (full=%v): %v", m, after.name, stillFull, err)
						}
						if _, diff := checkAgainst(got, batches, candidates, extra, extraMaybe); diff != "" {
							t.Fatalf("m=%d, after a %s (full=%v): %s\n%s", m, after.name, stillFull, diff, fsTrace(fs))
						}
					}
				}
				if !reached {
					if testing.Verbose() {
						fs.mu.Lock()
						for _, r := range fs.log {
							t.Log(r.String())
						}
						fs.mu.Unlock()
					}
					break
				}
			}
			t.Logf("%d batches in the base, %d crash points, %d opens on the full disk before the crash", len(batches), points, degradedOpens)
			if degradedOpens == 0 {
				t.Fatal("no Open on the full disk succeeded")
			}
		})
	}
}

// fsTrace is the last operations of fs, up to its crash.
func fsTrace(fs *sweepFS) string {
	fs.mu.Lock()
	log := slices.Clone(fs.log)
	fs.mu.Unlock()
	var lines []string
	for _, r := range traceAround(log, 12) {
		lines = append(lines, "    "+r.String())
	}
	return strings.Join(lines, "\n")
}
