package lsm

// Targeted crash sweeps on the harness of crashsweep_test.go: concurrent
// writers (group commit); and recovery of a damaged WAL
// (RecoverDamagedWAL) with a crash at every operation of that recovery.
// (Directories created under new parents: TestNewDirectoriesSurvivePowerLoss.)

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lni/vfs"
)

// ---------------------------------------------------------------------------
// Concurrent writers: each goroutine owns its keys, so its acknowledged
// batches form a prefix of its own sequence; the recovered DB, restricted
// to a goroutine's keys, must be that prefix (or plus the one in flight).

type concRun struct {
	batches  [4][][]sweepKV
	acked    [4]int
	inflight [4]bool
	errs     []error
}

func runConcWorkload(fs vfs.FS, seed uint64) *concRun {
	run := &concRun{}
	d, err := Open(sweepDir, sweepOptions(fs))
	if err != nil {
		run.errs = append(run.errs, err)
		return run
	}
	if sfs, ok := fs.(*sweepFS); ok {
		sfs.mu.Lock()
		sfs.onCrash = func() { time.Sleep(20 * time.Millisecond); d.Close() }
		if sfs.crashed {
			go sfs.onCrash()
		}
		sfs.mu.Unlock()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for i := range 450 {
				nops := 1
				if rng.IntN(3) == 0 {
					nops = 2 + rng.IntN(6)
				}
				var kvs []sweepKV
				b := NewBatch()
				for j := range nops {
					key := fmt.Sprintf("g%d-%03d", g, rng.IntN(80))
					if rng.IntN(5) == 0 {
						kvs = append(kvs, sweepKV{key: key, del: true})
						b.Delete([]byte(key))
					} else {
						val := fmt.Sprintf("g%d.%d.%d|%s", g, i, j, strings.Repeat("y", 50+rng.IntN(500)))
						kvs = append(kvs, sweepKV{key: key, val: val})
						b.Put([]byte(key), []byte(val))
					}
				}
				run.batches[g] = append(run.batches[g], kvs)
				if err := d.Write(b); err != nil {
					run.inflight[g] = true
					mu.Lock()
					run.errs = append(run.errs, err)
					mu.Unlock()
					return
				}
				run.acked[g]++
				if g == 0 && i%100 == 99 {
					if err := d.Flush(); err != nil {
						mu.Lock()
						run.errs = append(run.errs, err)
						mu.Unlock()
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	d.Close()
	return run
}

func TestCrashSweepConcurrent(t *testing.T) {
	stride := int64(envInt("SWEEP_STRIDE", 20))
	cal := newSweepFS(vfs.NewStrictMem(), 0, false)
	r := runConcWorkload(cal, 1)
	if len(r.errs) > 0 {
		t.Fatal(r.errs)
	}
	total := cal.nCounted
	groups := 0
	for _, op := range cal.log {
		if op.kind == "sync" && strings.Contains(op.where, "walWriter).write") {
			groups++
		}
	}
	t.Logf("calibration: %d counted ops, %d WAL group syncs for %d batches", total, groups, 4*450)
	var mu sync.Mutex
	var failures []string
	points := 0
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for n := int64(1); n <= total+1; n += stride {
		sem <- struct{}{}
		wg.Add(1)
		go func(n int64) {
			defer func() { <-sem; wg.Done() }()
			mem := vfs.NewStrictMem()
			fs := newSweepFS(mem, n, false)
			run := runConcWorkload(fs, 1)
			for _, err := range run.errs {
				if !fs.isCrashed() {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("crashAt=%d: workload error: %v", n, err))
					mu.Unlock()
				}
			}
			fs.mu.Lock()
			log := slices.Clone(fs.log)
			fs.mu.Unlock()
			mem.ResetToSyncedState()
			d, err := Open(sweepDir, sweepOptions(newSweepFS(mem, 0, false)))
			fail := func(msg string) {
				var tr []string
				for _, r := range traceAround(log, 8) {
					tr = append(tr, "    "+r.String())
				}
				mu.Lock()
				failures = append(failures, fmt.Sprintf("crashAt=%d: %s\n%s", n, msg, strings.Join(tr, "\n")))
				mu.Unlock()
			}
			mu.Lock()
			points++
			mu.Unlock()
			if err != nil {
				fail(fmt.Sprintf("reopen failed: %v", err))
				return
			}
			defer d.Close()
			var keys []string
			for g := range 4 {
				for k := range 80 {
					keys = append(keys, fmt.Sprintf("g%d-%03d", g, k))
				}
			}
			got, err := dbContents(d, keys)
			if err != nil {
				fail(err.Error())
				return
			}
			for g := range 4 {
				sub := map[string]string{}
				for k, v := range got {
					if strings.HasPrefix(k, fmt.Sprintf("g%d-", g)) {
						sub[k] = v
					}
				}
				cands := []int{run.acked[g]}
				if run.inflight[g] {
					cands = append(cands, run.acked[g]+1)
				}
				if p, diff := checkAgainst(sub, run.batches[g], cands, nil, nil); p < 0 {
					fail(fmt.Sprintf("writer %d (acked %d, inflight %v): %s", g, run.acked[g], run.inflight[g], diff))
				}
			}
		}(n)
	}
	wg.Wait()
	t.Logf("covered %d crash points", points)
	sort.Strings(failures)
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... %d more", len(failures)-10)
			break
		}
		t.Error(f)
	}
}

// ---------------------------------------------------------------------------
// RecoverDamagedWAL: find post-crash states with two live WALs, damage the
// older one in the middle, and crash at every operation of the recovering
// Open; a rerun with RecoverDamagedWAL must then succeed with exactly the
// state of an uninterrupted recovery, and every dropped WAL must be kept
// as NAME.corrupt once the originals are gone.

func liveWALs(t testing.TB, mem *vfs.MemFS) []uint64 {
	return filesOfType(t, mem, sweepDir, fileTypeLog)
}

func TestCrashSweepDamagedWAL(t *testing.T) {
	cal := newSweepFS(vfs.NewStrictMem(), 0, false)
	calRun := runSweepWorkload(cal, 1)
	if calRun.stopErr != nil {
		t.Fatal(calRun.stopErr)
	}
	// Candidate crash points: just before a flush's manifest sync, when the
	// rotation has made a second WAL.
	var cands []int64
	for _, op := range cal.log {
		if op.kind == "sync" && strings.Contains(op.where, "logAndApply") && strings.Contains(op.where, "flushMemtable") {
			cands = append(cands, op.counted)
		}
	}
	found, opens, fails := 0, 0, 0
	for _, n := range cands {
		if found == 6 {
			break
		}
		mem := vfs.NewStrictMem()
		fs := newSweepFS(mem, n, false)
		run := runSweepWorkload(fs, 1)
		mem.ResetToSyncedState()
		logs := liveWALs(t, mem)
		if len(logs) < 2 {
			continue
		}
		older := mem.PathJoin(sweepDir, makeFilename(fileTypeLog, logs[len(logs)-2]))
		data := readFile(t, mem, older)
		if len(data) < 200 {
			continue
		}
		data[len(data)/2] ^= 0xff
		mem.Remove(older)
		writeFile(t, mem, older, data)
		dd, _ := mem.OpenDir(sweepDir)
		dd.Sync()
		dd.Close()

		// Without the flag: refused (else the older WAL was obsolete, its
		// removal merely lost: not a state for this test).
		if d, err := Open(sweepDir, sweepOptions(cloneStrict(t, mem))); !errors.Is(err, ErrDamagedWAL) {
			if err == nil {
				d.Close()
			}
			continue
		}
		found++
		recOpts := func(fs vfs.FS) Options {
			o := sweepOptions(fs)
			o.RecoverDamagedWAL = true
			return o
		}
		// Reference: uninterrupted recovery.
		refMem := cloneStrict(t, mem)
		ref, err := Open(sweepDir, recOpts(refMem))
		if err != nil {
			t.Fatalf("crashAt=%d: reference recovery: %v", n, err)
		}
		want, err := dbContents(ref, sweepKeys())
		ref.Close()
		if err != nil {
			t.Fatal(err)
		}
		p, diff := checkAgainst(want, run.batches, []int{}, nil, nil)
		for q := 0; q <= len(run.batches); q++ {
			if p, diff = checkAgainst(want, run.batches, []int{q}, nil, nil); p >= 0 {
				break
			}
		}
		if p < 0 {
			t.Errorf("crashAt=%d: recovered state is no prefix of the batches: %s", n, diff)
		}
		t.Logf("state %d: crash before op %d, WALs %v, damaged %s; recovery keeps prefix %d of %d acked", found, n, logs, older, p, run.acked)
		for m := int64(1); m < 200; m++ {
			cm := cloneStrict(t, mem)
			cfs := newSweepFS(cm, m, true)
			d, err := Open(sweepDir, recOpts(cfs))
			if err == nil {
				d.Close()
			}
			reached := cfs.isCrashed()
			cm.ResetToSyncedState()
			opens++
			d, err = Open(sweepDir, recOpts(newSweepFS(cm, 0, false)))
			if err != nil {
				fails++
				t.Errorf("crashAt=%d, 2nd crash in recovery at op %d (%s): rerun fails: %v", n, m, crashOp(cfs.log), err)
				continue
			}
			got, err := dbContents(d, sweepKeys())
			d.Close()
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffStates(got, want); diff != "" {
				fails++
				t.Errorf("crashAt=%d, 2nd crash in recovery at op %d (%s): state differs from uninterrupted recovery: %s", n, m, crashOp(cfs.log), diff)
			}
			// The dropped WAL must be kept somewhere.
			names, _ := cm.List(sweepDir)
			for _, num := range logs[len(logs)-2:] { // the damaged WAL and every later one are dropped
				base := makeFilename(fileTypeLog, num)
				if !slices.Contains(names, base) && !slices.Contains(names, base+".corrupt") {
					fails++
					t.Errorf("crashAt=%d, 2nd crash at op %d: dropped WAL %s neither kept nor set aside: %v", n, m, base, names)
				}
			}
			if !reached {
				break
			}
		}
	}
	t.Logf("%d damaged states, %d crash-in-recovery points, %d failures", found, opens, fails)
	if found == 0 {
		t.Fatal("found no state with two live WALs")
	}
}
