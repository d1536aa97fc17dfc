package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"
)

// phaseResult is one timed phase of one engine in one run.
type phaseResult struct {
	ops     int
	elapsed time.Duration
	// settle is, after a write phase, the untimed wait until the engine had
	// flushed and finished the compactions the phase made due.
	settle time.Duration
	err    error
}

func (p phaseResult) opsPerSec() float64 {
	if p.err != nil || p.elapsed <= 0 {
		return 0
	}
	return float64(p.ops) / p.elapsed.Seconds()
}

// dbSnapshot describes the DB the read workloads read, once it settled.
type dbSnapshot struct {
	diskBytes, tableBytes int64
	stats                 engineStats
}

// runner runs every workload on every engine, cfg.runs times.
type runner struct {
	cfg  *config
	tmp  string
	log  io.Writer
	prof *profiler

	// results[workload id][engine name] holds one result per run.
	results map[string]map[string][]phaseResult
	// readDBs[engine name] holds the read DB's state, one per run.
	readDBs map[string][]dbSnapshot
}

// engineState is what one engine keeps between the workloads of one run: the
// DB fillrandom writes, overwrite rewrites and the read workloads read.
type engineState struct {
	kind    engineKind
	main    engine
	dir     string
	settled bool
}

// runPlan is the key orders of one run, shared by both engines so they do
// exactly the same work.
type runPlan struct {
	run       int
	seed      uint64
	fillOrder []uint32 // fillrandom and the untimed prefill
	overOrder []uint32 // overwrite
	readOrder []uint32 // readrandom and readmissing
}

func newRunner(cfg *config, tmp string, log io.Writer) *runner {
	r := &runner{
		cfg:     cfg,
		tmp:     tmp,
		log:     log,
		results: make(map[string]map[string][]phaseResult),
		readDBs: make(map[string][]dbSnapshot),
	}
	if cfg.cpuprofile != "" {
		r.prof = newProfiler(cfg.cpuprofile)
	}
	return r
}

// runAll runs cfg.runs rounds. In each round every workload runs on every
// engine before the next workload starts, and the engine order flips from
// round to round, so slow drifts of the machine hit both engines alike.
func (r *runner) runAll() {
	for run := range r.cfg.runs {
		seed := r.cfg.seed + uint64(run)
		plan := &runPlan{
			run:       run,
			seed:      seed,
			fillOrder: permutation(r.cfg.n, seed),
			overOrder: permutation(r.cfg.n, seed^0x6f76657277726974),
			readOrder: permutation(r.cfg.n, seed^0x7265616472616e64),
		}
		order := slices.Clone(r.cfg.engines)
		if run%2 == 1 {
			slices.Reverse(order)
		}
		states := make([]*engineState, len(order))
		for i, k := range order {
			states[i] = &engineState{kind: k}
		}
		for _, w := range r.cfg.workloads {
			for _, st := range states {
				res := r.phase(w, st, plan)
				r.record(w, st.kind, res)
			}
		}
		for _, st := range states {
			r.closeMain(st)
		}
	}
}

func (r *runner) record(w workload, k engineKind, res phaseResult) {
	byEngine := r.results[w.id]
	if byEngine == nil {
		byEngine = make(map[string][]phaseResult)
		r.results[w.id] = byEngine
	}
	byEngine[k.name] = append(byEngine[k.name], res)
	run := len(byEngine[k.name])
	if res.err != nil {
		fmt.Fprintf(r.log, "run %d %-18s %-6s FAILED: %v\n", run, w.id, k.name, res.err)
		return
	}
	line := fmt.Sprintf("run %d %-18s %-6s %12s ops/s  (%d ops in %.2fs)", run, w.id, k.name,
		formatRate(res.opsPerSec()), res.ops, res.elapsed.Seconds())
	if res.settle > 0 {
		line += fmt.Sprintf(", settled in %.2fs", res.settle.Seconds())
	}
	fmt.Fprintln(r.log, line)
}

// phase runs one workload on one engine. A panic in the engine is reported
// as the phase's error, and the engine's read DB is dropped so the next
// workloads start from a fresh one.
func (r *runner) phase(w workload, st *engineState, plan *runPlan) (res phaseResult) {
	defer func() {
		if p := recover(); p != nil {
			res.err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
			// The DB may be in any state; closing it could panic or hang.
			st.main, st.settled = nil, false
			if st.dir != "" {
				_ = os.RemoveAll(st.dir)
			}
		}
	}()
	switch w.kind {
	case fillSeq, fillRandom:
		return r.fillFresh(w, st, plan)
	case overwrite:
		if err := r.ensureMain(st, plan); err != nil {
			return phaseResult{err: err}
		}
		st.settled = false
		res = r.timed(st.kind, w, r.cfg.n, func() error {
			return r.fill(st.main, plan.overOrder, 1, plan.seed+2)
		})
		if res.err == nil {
			res.settle, res.err = r.settle(st.main)
			st.settled = res.err == nil
		}
	case readRandom, readMissing, readSeq:
		if err := r.ensureMain(st, plan); err != nil {
			return phaseResult{err: err}
		}
		if !st.settled {
			if _, err := r.settle(st.main); err != nil {
				res.err = err
				break
			}
			st.settled = true
		}
		switch w.kind {
		case readRandom:
			res = r.timed(st.kind, w, r.cfg.reads, func() error { return r.readRandom(st.main, plan.readOrder) })
		case readMissing:
			res = r.timed(st.kind, w, r.cfg.reads, func() error { return r.readMissing(st.main, plan.readOrder) })
		default:
			res = r.timed(st.kind, w, r.cfg.n*r.cfg.scans, func() error {
				for range r.cfg.scans {
					if err := r.readSeq(st.main); err != nil {
						return err
					}
				}
				return nil
			})
		}
	case fillSync:
		return r.fillSync(w, st, plan)
	}
	if res.err != nil {
		r.dropMain(st)
	}
	return res
}

// fillFresh fills a new DB. The DB of fillrandom (batch 1) becomes the
// engine's read DB; the others are deleted.
func (r *runner) fillFresh(w workload, st *engineState, plan *runPlan) phaseResult {
	dir := r.newDir(st.kind, w, plan)
	e, err := st.kind.open(dir, r.cfg, false)
	if err != nil {
		_ = os.RemoveAll(dir)
		return phaseResult{err: err}
	}
	var order []uint32
	if w.kind == fillRandom {
		order = plan.fillOrder
	}
	res := r.timed(st.kind, w, r.cfg.n, func() error { return r.fill(e, order, w.batch, plan.seed+1) })
	if res.err == nil {
		res.settle, res.err = r.settle(e)
	}
	if res.err == nil && w.kind == fillRandom && w.batch == 1 {
		r.closeMain(st)
		st.main, st.dir, st.settled = e, dir, true
		return res
	}
	if err := e.Close(); err != nil && res.err == nil {
		res.err = fmt.Errorf("close: %w", err)
	}
	_ = os.RemoveAll(dir)
	return res
}

// ensureMain gives st a read DB, writing it (untimed, in batches) when
// fillrandom did not run: the same keys and values fillrandom would write.
func (r *runner) ensureMain(st *engineState, plan *runPlan) error {
	if st.main != nil {
		return nil
	}
	dir := r.newDir(st.kind, workload{id: "prefill"}, plan)
	e, err := st.kind.open(dir, r.cfg, false)
	if err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	if err := r.fill(e, plan.fillOrder, r.cfg.batch, plan.seed+1); err != nil {
		_ = e.Close()
		_ = os.RemoveAll(dir)
		return fmt.Errorf("prefill: %w", err)
	}
	st.main, st.dir, st.settled = e, dir, false
	return nil
}

// closeMain records the read DB's final state, closes and deletes it.
func (r *runner) closeMain(st *engineState) {
	if st.main == nil {
		return
	}
	if st.settled {
		all, tables := dirBytes(st.dir)
		r.readDBs[st.kind.name] = append(r.readDBs[st.kind.name], dbSnapshot{
			diskBytes:  all,
			tableBytes: tables,
			stats:      st.main.Stats(),
		})
	}
	r.dropMain(st)
}

func (r *runner) dropMain(st *engineState) {
	if st.main == nil {
		return
	}
	if err := st.main.Close(); err != nil {
		fmt.Fprintf(r.log, "%s: close read DB: %v\n", st.kind.name, err)
	}
	_ = os.RemoveAll(st.dir)
	st.main, st.dir, st.settled = nil, "", false
}

func (r *runner) newDir(k engineKind, w workload, plan *runPlan) string {
	return filepath.Join(r.tmp, fmt.Sprintf("%s-%s-run%d", k.name, w.id, plan.run+1))
}

// timed runs fn as one measured phase: the heap is collected and dirty pages
// written back first, so neither the other engine's garbage nor its
// write-back is billed to this one.
func (r *runner) timed(k engineKind, w workload, ops int, fn func() error) phaseResult {
	runtime.GC()
	syncFS()
	stop := r.prof.start(k, w)
	start := time.Now()
	err := fn()
	elapsed := time.Since(start)
	stop()
	return phaseResult{ops: ops, elapsed: elapsed, err: err}
}

func (r *runner) settle(e engine) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.settleLimit)
	defer cancel()
	start := time.Now()
	if err := e.Settle(ctx); err != nil {
		return time.Since(start), fmt.Errorf("settle: %w", err)
	}
	return time.Since(start), nil
}

// fill writes cfg.n keys in order (nil: ascending) in batches of batch keys
// (1: single Puts).
func (r *runner) fill(e engine, order []uint32, batch int, seed uint64) error {
	gen := newValueGen(seed, r.cfg.valueSize)
	var kbuf [keySize]byte
	index := func(i int) uint64 {
		if order == nil {
			return uint64(i)
		}
		return uint64(order[i])
	}
	if batch <= 1 {
		for i := range r.cfg.n {
			idx := index(i)
			k := formatKey(kbuf[:], idx)
			if err := e.Put(k, gen.next(idx)); err != nil {
				return fmt.Errorf("put %s (op %d): %w", k, i, err)
			}
		}
		return nil
	}
	b := e.NewBatch()
	defer b.Close()
	for i := range r.cfg.n {
		idx := index(i)
		if err := b.Put(formatKey(kbuf[:], idx), gen.next(idx)); err != nil {
			return fmt.Errorf("batch put (op %d): %w", i, err)
		}
		if (i+1)%batch == 0 || i == r.cfg.n-1 {
			if err := b.Commit(); err != nil {
				return fmt.Errorf("commit batch ending at op %d: %w", i, err)
			}
		}
	}
	return nil
}

var errWrongValue = errors.New("wrong value")

func (r *runner) readRandom(e engine, order []uint32) error {
	var kbuf [keySize]byte
	size := r.cfg.valueSize
	for i := range r.cfg.reads {
		idx := uint64(order[i%len(order)])
		k := formatKey(kbuf[:], idx)
		found, err := e.Get(k, func(v []byte) error {
			if !valueMatches(v, idx, size) {
				return fmt.Errorf("%w: %d bytes", errWrongValue, len(v))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("get %s (op %d): %w", k, i, err)
		}
		if !found {
			return fmt.Errorf("get %s (op %d): written key not found", k, i)
		}
	}
	return nil
}

func (r *runner) readMissing(e engine, order []uint32) error {
	var kbuf [keySize + 1]byte
	for i := range r.cfg.reads {
		k := formatMissingKey(kbuf[:], uint64(order[i%len(order)]))
		found, err := e.Get(k, func([]byte) error { return nil })
		if err != nil {
			return fmt.Errorf("get %s (op %d): %w", k, i, err)
		}
		if found {
			return fmt.Errorf("get %s (op %d): never-written key found", k, i)
		}
	}
	return nil
}

// readSeq scans the whole DB and checks that it holds exactly keys 0..n-1,
// in order, each with its own value.
func (r *runner) readSeq(e engine) error {
	var want uint64
	var kbuf [keySize]byte
	size := r.cfg.valueSize
	n, err := e.Scan(func(key, value []byte) error {
		if !bytes.Equal(key, formatKey(kbuf[:], want)) {
			return fmt.Errorf("key #%d is %q, want %q", want, key, kbuf[:])
		}
		if !valueMatches(value, want, size) {
			return fmt.Errorf("key %q: %w: %d bytes", key, errWrongValue, len(value))
		}
		want++
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if n != r.cfg.n {
		return fmt.Errorf("scan saw %d keys, want %d", n, r.cfg.n)
	}
	return nil
}

// fillSync writes cfg.syncOps keys to a new DB with fsync-on-commit writes
// from w.writers goroutines.
func (r *runner) fillSync(w workload, st *engineState, plan *runPlan) phaseResult {
	dir := r.newDir(st.kind, w, plan)
	defer os.RemoveAll(dir)
	e, err := st.kind.open(dir, r.cfg, true)
	if err != nil {
		return phaseResult{err: err}
	}
	per := max(r.cfg.syncOps/w.writers, 1)
	total := per * w.writers
	order := permutation(total, plan.seed^0x73796e63)
	base := newValueGen(plan.seed+3, r.cfg.valueSize)
	gens := make([]*valueGen, w.writers)
	for g := range gens {
		gens[g] = base.fork(g * 4099)
	}
	res := r.timed(st.kind, w, total, func() error {
		var wg sync.WaitGroup
		errs := make([]error, w.writers)
		for g := range w.writers {
			wg.Go(func() {
				var kbuf [keySize]byte
				for j := range per {
					idx := uint64(order[j*w.writers+g])
					k := formatKey(kbuf[:], idx)
					if err := e.Put(k, gens[g].next(idx)); err != nil {
						errs[g] = fmt.Errorf("writer %d: put %s: %w", g, k, err)
						return
					}
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	if err := e.Close(); err != nil && res.err == nil {
		res.err = fmt.Errorf("close: %w", err)
	}
	return res
}

// formatRate prints ops/s with three significant digits.
func formatRate(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + " M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + " K"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}
