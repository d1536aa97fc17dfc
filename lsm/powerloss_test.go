package lsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lni/vfs"
)

// crashFS counts the mutating operations (create, write, sync, rename,
// remove, link, directory sync) on a strict in-memory FS and, at operation
// crashAt, "loses power": from then on no sync reaches stable storage. The
// DB keeps running on the doomed state until the test closes it and drops
// everything unsynced.
type crashFS struct {
	*vfs.MemFS
	ops     atomic.Int64
	crashAt int64 // 0: never
	crashed atomic.Bool
}

// step counts a file operation; the crashAt-th one cuts the power. The
// flag is raised before syncs are ignored: a write whose sync was ignored
// must see it when its caller returns, or the workload counts a write
// that never reached the disk as durable (this order was the other way
// once, and a CI run under load lost such a write).
func (fs *crashFS) step() {
	if n := fs.ops.Add(1); n == fs.crashAt {
		fs.crashed.Store(true)
		fs.MemFS.SetIgnoreSyncs(true)
	}
}

type crashFile struct {
	vfs.File
	fs *crashFS
}

func (f crashFile) Write(p []byte) (int, error) {
	f.fs.step()
	return f.File.Write(p)
}

func (f crashFile) Sync() error {
	f.fs.step()
	return f.File.Sync()
}

func (fs *crashFS) Create(name string) (vfs.File, error) {
	fs.step()
	f, err := fs.MemFS.Create(name)
	if err != nil {
		return nil, err
	}
	return crashFile{f, fs}, nil
}

func (fs *crashFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.MemFS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return crashFile{f, fs}, nil
}

func (fs *crashFS) Rename(oldname, newname string) error {
	fs.step()
	return fs.MemFS.Rename(oldname, newname)
}

func (fs *crashFS) Remove(name string) error {
	fs.step()
	return fs.MemFS.Remove(name)
}

func (fs *crashFS) Link(oldname, newname string) error {
	fs.step()
	return fs.MemFS.Link(oldname, newname)
}

// powerLossWorkload writes keys from several goroutines with SyncAlways
// (puts, deletes and batches) and records, per key, what a crash must
// preserve: only operations acknowledged before the crash point count.
type powerLossWorkload struct {
	mu    sync.Mutex
	state map[string]keyState // acknowledged before the crash (absent: nothing required)
	tried map[string]bool     // ever attempted
}

func (w *powerLossWorkload) run(t *testing.T, d *DB, fs *crashFS, seed uint64) {
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for i := range 600 {
				key := fmt.Sprintf("s%d-g%d-%05d", seed, g, i)
				w.mu.Lock()
				w.tried[key] = true
				w.mu.Unlock()
				var err error
				var deleted string
				switch {
				case i%7 == 6:
					// A batch: the put and the delete of an earlier key are
					// atomic.
					deleted = fmt.Sprintf("s%d-g%d-%05d", seed, g, i-3)
					w.mu.Lock()
					if w.state[deleted] == keyPut {
						w.state[deleted] = keyDeleting // may land whatever happens next
					}
					w.mu.Unlock()
					b := NewBatch()
					b.Put([]byte(key), []byte(crashValue(key)))
					b.Delete([]byte(deleted))
					err = d.Write(b)
				default:
					err = d.Put([]byte(key), padValue(crashValue(key), rng))
				}
				if err != nil {
					t.Errorf("write %s: %v", key, err)
					return
				}
				if fs.crashed.Load() {
					continue // acknowledged after the crash: not durable
				}
				w.mu.Lock()
				w.state[key] = keyPut
				if deleted != "" {
					w.state[deleted] = keyDeleted
				}
				w.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// padValue makes values long enough to fill memtables quickly; the value
// stays recognisable as written for its key.
func padValue(v string, rng *rand.Rand) []byte {
	return fmt.Appendf(nil, "%s|%0*d", v, 100+rng.IntN(400), 0)
}

func (w *powerLossWorkload) verify(t *testing.T, d *DB, what string) {
	t.Helper()
	for key, state := range w.state {
		v, err := d.Get([]byte(key))
		switch {
		case state == keyPut && err != nil:
			t.Fatalf("%s: acknowledged put of %s lost: %v", what, key, err)
		case state == keyDeleted && !errors.Is(err, ErrNotFound):
			t.Fatalf("%s: acknowledged delete of %s undone: %q %v", what, key, v, err)
		}
	}
	it := d.NewIterator(nil, nil)
	for ok := it.First(); ok; ok = it.Next() {
		key := string(it.Key())
		v := string(it.Value())
		if !w.tried[key] || (v != crashValue(key) && !isPadded(v, crashValue(key))) {
			t.Fatalf("%s: %s = %q was never written", what, key, v)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func isPadded(v, prefix string) bool {
	return len(v) > len(prefix) && v[:len(prefix)+1] == prefix+"|"
}

func powerLossOptions(fs vfs.FS) Options {
	opts := smallOptions(fs)
	opts.LevelBaseBytes = 16 << 10
	opts.TargetFileBytes = 8 << 10
	opts.maxManifestBytes = 256
	return opts
}

// TestPowerLoss simulates a power loss at many points of a write workload
// (during WAL appends, memtable flushes, compactions, manifest rotations,
// and during the recovery that follows an earlier crash) and checks that
// the DB always reopens with every write acknowledged before the crash.
func TestPowerLoss(t *testing.T) {
	// Count the operations of one uninterrupted run to place crash points.
	calib := &crashFS{MemFS: vfs.NewStrictMem()}
	d := mustOpen(t, "/db", powerLossOptions(calib))
	w := &powerLossWorkload{state: map[string]keyState{}, tried: map[string]bool{}}
	w.run(t, d, calib, 0)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	total := calib.ops.Load()
	m := d.Metrics()
	t.Logf("one run: %d file operations, %d flushes, %d compactions, %d manifest rotations",
		total, m.Flushes, m.Compactions, d.metrics.manifestRotations.Load())
	trials := 24
	if testing.Short() {
		trials = 6
	}
	rng := rand.New(rand.NewPCG(42, 42))
	for trial := range trials {
		crashAt := 1 + rng.Int64N(total)
		t.Run(fmt.Sprintf("crash-at-%d", crashAt), func(t *testing.T) {
			mem := vfs.NewStrictMem()
			fs := &crashFS{MemFS: mem, crashAt: crashAt}
			w := &powerLossWorkload{state: map[string]keyState{}, tried: map[string]bool{}}
			d, err := Open("/db", powerLossOptions(fs))
			if err != nil {
				t.Fatalf("open before the crash: %v", err)
			}
			w.run(t, d, fs, uint64(trial))
			d.Close() // still on the doomed state: nothing more is synced
			mem.ResetToSyncedState()
			mem.SetIgnoreSyncs(false)

			if trial%2 == 1 {
				// Crash again, during the recovery itself.
				rfs := &crashFS{MemFS: mem, crashAt: 1 + rng.Int64N(40)}
				if d, err := Open("/db", powerLossOptions(rfs)); err == nil {
					d.Close()
				}
				mem.ResetToSyncedState()
				mem.SetIgnoreSyncs(false)
			}

			d, err = Open("/db", powerLossOptions(mem))
			if err != nil {
				t.Fatalf("reopen after power loss: %v", err)
			}
			defer d.Close()
			w.verify(t, d, "after power loss")
		})
	}
}

// TestNewDirectoriesSurvivePowerLoss: a DB or checkpoint made in
// directories that did not exist yet keeps every acknowledged write over a
// power loss (every directory created on the way must be synced in its
// parent, not just the last one), and so does a DB in a directory whose
// creation a previous run never synced (a crash between its mkdir and its
// sync: the directory is there at the next start, and gone after a power
// loss unless that start syncs it).
func TestNewDirectoriesSurvivePowerLoss(t *testing.T) {
	for _, dir := range []string{"/db", "/data/db", "/srv/data/db"} {
		fs := vfs.NewStrictMem()
		opts := smallOptions(fs)
		d := mustOpen(t, dir, opts)
		mustPut(t, d, "acked", "v")
		if err := d.Checkpoint("/backups/daily/cp"); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		powerLoss(fs)
		for _, p := range []string{dir, "/backups/daily/cp"} {
			d, err := Open(p, opts)
			if err != nil {
				t.Fatalf("%s after power loss: %v", p, err)
			}
			checkGet(t, d, "acked", "v", true)
			d.Close()
		}
	}

	fs := vfs.NewStrictMem()
	if err := fs.MkdirAll("/pre/db", 0o755); err != nil { // never synced
		t.Fatal(err)
	}
	opts := smallOptions(fs)
	d := mustOpen(t, "/pre/db", opts)
	mustPut(t, d, "acked", "v")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	powerLoss(fs)
	d, err := Open("/pre/db", opts)
	if err != nil {
		t.Fatalf("pre-existing directory after power loss: %v", err)
	}
	checkGet(t, d, "acked", "v", true)
	d.Close()
}

// unreadableDirFS refuses to open one directory for sync, as the OS does
// for a directory the process may traverse but not read.
type unreadableDirFS struct {
	vfs.FS
	dir string
}

func (f unreadableDirFS) OpenDir(name string) (vfs.File, error) {
	if name == f.dir {
		return nil, os.ErrPermission
	}
	return f.FS.OpenDir(name)
}

// TestOpenUnderUnreadableParent: an existing DB whose parent directory
// cannot be opened for sync still opens (its entry was synced when it was
// made); a DB created there now cannot be made durable and fails.
func TestOpenUnderUnreadableParent(t *testing.T) {
	mem := vfs.NewMem()
	d := mustOpen(t, "/srv/db", smallOptions(mem))
	mustPut(t, d, "k", "v")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	fs := unreadableDirFS{FS: mem, dir: "/srv"}
	d, err := Open("/srv/db", smallOptions(fs))
	if err != nil {
		t.Fatalf("existing DB under an unreadable parent: %v", err)
	}
	checkGet(t, d, "k", "v", true)
	d.Close()
	if _, err := Open("/srv/new", smallOptions(fs)); err == nil {
		t.Fatal("a DB created under a parent that cannot be synced opened")
	}
}
