package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is the parsed command line.
type config struct {
	n            int
	reads        int
	valueSize    int
	memtable     int64
	cache        int64
	blockSize    int
	bloomBits    int
	batch        int
	syncOps      int
	scans        int
	runs         int
	workloads    []workload
	engines      []engineKind
	pebbleFormat string
	dir          string
	cpuprofile   string
	seed         uint64
	settleLimit  time.Duration
	args         []string
}

// workload is one row of the result table.
type workload struct {
	id    string // as given to -workloads
	title string // as shown in the table
	kind  workloadKind
	batch int // keys per commit for fills; 1 = single-key Put
	// writers is the number of concurrent goroutines of a fillsync workload.
	writers int
}

type workloadKind int

const (
	fillSeq workloadKind = iota
	fillRandom
	overwrite
	readRandom
	readMissing
	readSeq
	fillSync
)

// defaultWorkloads is every workload in execution order (later workloads
// read the DB the earlier ones wrote).
const defaultWorkloads = "fillseq,fillseq-batch,fillrandom,fillrandom-batch,overwrite," +
	"readrandom,readmissing,readseq,fillsync-1,fillsync-8,fillsync-32"

// parseWorkloads turns a comma-separated list into workloads in execution
// order.
func parseWorkloads(list string, batch int) ([]workload, error) {
	var ws []workload
	seen := map[string]bool{}
	for id := range strings.SplitSeq(list, ",") {
		id = strings.TrimSpace(id)
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		w := workload{id: id, batch: 1}
		switch id {
		case "fillseq":
			w.kind, w.title = fillSeq, "fillseq (batch 1)"
		case "fillseq-batch":
			w.kind, w.batch, w.title = fillSeq, batch, fmt.Sprintf("fillseq (batch %d)", batch)
		case "fillrandom":
			w.kind, w.title = fillRandom, "fillrandom (batch 1)"
		case "fillrandom-batch":
			w.kind, w.batch, w.title = fillRandom, batch, fmt.Sprintf("fillrandom (batch %d)", batch)
		case "overwrite":
			w.kind, w.title = overwrite, "overwrite (batch 1)"
		case "readrandom":
			w.kind, w.title = readRandom, "readrandom (hits)"
		case "readmissing":
			w.kind, w.title = readMissing, "readmissing"
		case "readseq":
			w.kind, w.title = readSeq, "readseq (full scan)"
		default:
			n, ok := strings.CutPrefix(id, "fillsync-")
			writers, err := strconv.Atoi(n)
			if !ok || err != nil || writers < 1 {
				return nil, fmt.Errorf("unknown workload %q (known: %s, fillsync-N)", id, defaultWorkloads)
			}
			w.kind, w.writers = fillSync, writers
			w.title = fmt.Sprintf("fillsync, %d writer", writers)
			if writers > 1 {
				w.title += "s"
			}
		}
		ws = append(ws, w)
	}
	if len(ws) == 0 {
		return nil, errors.New("no workloads selected")
	}
	slices.SortStableFunc(ws, func(a, b workload) int {
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		if a.writers != b.writers {
			return a.writers - b.writers
		}
		return a.batch - b.batch
	})
	return ws, nil
}

// byteSize is a flag holding a byte count written as 8388608, 8MiB, 8M or 64KiB.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	v, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad byte size %q", s)
	}
	return v * mult, nil
}

// parseFlags parses args (without the program name).
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("enginecmp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config{args: args}
	memtable, cache := byteSize(8<<20), byteSize(64<<20)
	var workloads, engines string
	fs.IntVar(&cfg.n, "n", 1_000_000, "keys per fill (and key space of the read workloads)")
	fs.IntVar(&cfg.reads, "reads", 0, "Gets per readrandom/readmissing run (0 = n)")
	fs.IntVar(&cfg.valueSize, "value-size", 100, "value bytes (about half compressible, db_bench style)")
	fs.Var(&memtable, "memtable", "memtable size of both engines (bytes; K/M/G suffixes allowed)")
	fs.Var(&cache, "cache", "block cache size of both engines (bytes; K/M/G suffixes allowed)")
	fs.IntVar(&cfg.blockSize, "block-size", 4096, "data block size of both engines")
	fs.IntVar(&cfg.bloomBits, "bloom-bits", 10, "bloom filter bits per key on every level of both engines (0 = none)")
	fs.IntVar(&cfg.batch, "batch", 1000, "keys per batch of the fill*-batch workloads")
	fs.IntVar(&cfg.scans, "scans", 5, "full scans per readseq run")
	fs.IntVar(&cfg.syncOps, "sync-ops", 20_000, "writes per fillsync run (split across the writers)")
	fs.IntVar(&cfg.runs, "runs", 3, "repetitions of every workload per engine (engines alternate)")
	fs.StringVar(&workloads, "workloads", defaultWorkloads, "comma-separated workloads")
	fs.StringVar(&engines, "engines", "ours,pebble", "comma-separated engines (ours, pebble)")
	fs.StringVar(&cfg.pebbleFormat, "pebble-format", "newest", "pebble format major version: newest (columnar blocks) or min (row blocks, pebble's default)")
	fs.StringVar(&cfg.dir, "dir", "", "parent of the temporary data directories (default: the system temp dir)")
	fs.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write CPU profiles of our engine's timed phases to `prefix`.<workload>.pprof (merged over runs)")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed of key orders and values (run r uses seed+r)")
	fs.DurationVar(&cfg.settleLimit, "settle-timeout", 10*time.Minute, "longest wait for an engine's flushes and compactions to finish")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.memtable, cfg.cache = int64(memtable), int64(cache)
	if cfg.reads == 0 {
		cfg.reads = cfg.n
	}
	switch {
	case cfg.n < 1 || cfg.n > 1<<32-1:
		return nil, fmt.Errorf("-n %d out of range", cfg.n)
	case cfg.reads < 1:
		return nil, fmt.Errorf("-reads %d out of range", cfg.reads)
	case cfg.valueSize < 1:
		return nil, fmt.Errorf("-value-size %d out of range", cfg.valueSize)
	case cfg.blockSize < 256:
		return nil, fmt.Errorf("-block-size %d too small", cfg.blockSize)
	case cfg.bloomBits < 0:
		return nil, fmt.Errorf("-bloom-bits %d out of range", cfg.bloomBits)
	case cfg.batch < 1:
		return nil, fmt.Errorf("-batch %d out of range", cfg.batch)
	case cfg.scans < 1:
		return nil, fmt.Errorf("-scans %d out of range", cfg.scans)
	case cfg.syncOps < 1:
		return nil, fmt.Errorf("-sync-ops %d out of range", cfg.syncOps)
	case cfg.runs < 1:
		return nil, fmt.Errorf("-runs %d out of range", cfg.runs)
	case cfg.pebbleFormat != "newest" && cfg.pebbleFormat != "min":
		return nil, fmt.Errorf("-pebble-format %q: want newest or min", cfg.pebbleFormat)
	}
	ws, err := parseWorkloads(workloads, cfg.batch)
	if err != nil {
		return nil, err
	}
	cfg.workloads = ws
	for name := range strings.SplitSeq(engines, ",") {
		var k engineKind
		switch strings.TrimSpace(name) {
		case ourKind.name:
			k = ourKind
		case pebbleKind.name:
			k = pebbleKind
		case "":
			continue
		default:
			return nil, fmt.Errorf("unknown engine %q (known: ours, pebble)", name)
		}
		if !slices.ContainsFunc(cfg.engines, func(e engineKind) bool { return e.name == k.name }) {
			cfg.engines = append(cfg.engines, k)
		}
	}
	if len(cfg.engines) == 0 {
		return nil, errors.New("no engines selected")
	}
	return cfg, nil
}
