// Command enginecmp runs identical db_bench-style workloads on our storage
// engine (package lsm) and on pebble v2.1.7 in one process and prints a
// markdown comparison for docs/benchmarks.md.
//
// It is its own module so that pebble never enters the main module's
// dependencies.
//
// Invariants of the comparison:
//   - Both engines get the same keys, values, key orders and batch sizes
//     (shared per-run seeds) through one small interface (engine.go), and
//     the same memtable, block cache, block size, bloom filter, compaction
//     shape, WAL and sync settings.
//   - Each workload runs on both engines before the next one starts, and the
//     engine that goes first alternates between runs.
//   - No engine's background work overlaps a measured phase of the other:
//     after every write phase the engine is settled (flushed, no compaction
//     due) before anything else runs.
//   - Data lives in a temporary directory that is removed on exit.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "enginecmp:", err)
		return 2
	}
	tmp, err := os.MkdirTemp(cfg.dir, "enginecmp-")
	if err != nil {
		fmt.Fprintln(stderr, "enginecmp:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	m := probeMachine(tmp)
	start := time.Now()
	r := newRunner(cfg, tmp, stderr)
	r.runAll()
	m.loadEnd = loadAverage()
	r.writeReport(stdout, m, time.Since(start))

	names, err := r.prof.write()
	for _, n := range names {
		fmt.Fprintf(stderr, "wrote CPU profile %s\n", n)
	}
	if err != nil {
		fmt.Fprintln(stderr, "enginecmp:", err)
		return 1
	}
	for _, byEngine := range r.results {
		for _, rs := range byEngine {
			for _, res := range rs {
				if res.err != nil {
					return 1
				}
			}
		}
	}
	return 0
}
