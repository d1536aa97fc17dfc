package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// machine holds the facts about the host that a result depends on.
type machine struct {
	cpus, maxprocs int
	cpuModel       string
	memTotal       string
	kernel         string
	goVersion      string
	cgo            string
	disk           string
	loadStart      string
	loadEnd        string
}

func probeMachine(dataDir string) machine {
	m := machine{
		cpus:      runtime.NumCPU(),
		maxprocs:  runtime.GOMAXPROCS(0),
		cpuModel:  "unknown",
		memTotal:  "unknown",
		kernel:    "unknown",
		goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		cgo:       "unknown",
		disk:      "unknown",
		loadStart: loadAverage(),
	}
	if v, ok := procField("/proc/cpuinfo", "model name"); ok {
		m.cpuModel = v
	}
	if v, ok := procField("/proc/meminfo", "MemTotal"); ok {
		if kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64); err == nil {
			m.memTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "CGO_ENABLED" {
				m.cgo = map[string]string{"1": "on", "0": "off"}[s.Value]
			}
		}
	}
	m.disk = mountOf(dataDir)
	return m
}

// procField returns the value of the first "key : value" line of a /proc file.
func procField(path, key string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// mountOf names the device and file system holding dir (longest matching
// mount point in /proc/mounts).
func mountOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "unknown"
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "unknown"
	}
	best, desc := "", "unknown"
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best, desc = mp, fmt.Sprintf("%s (%s, mounted on %s)", f[0], f[2], mp)
		}
	}
	return desc
}

// summary is the median and best of one engine's runs of one workload.
type summary struct {
	median, best float64
	ok, runs     int
}

func summarize(rs []phaseResult) summary {
	var rates []float64
	for _, r := range rs {
		if r.err == nil {
			rates = append(rates, r.opsPerSec())
		}
	}
	s := summary{ok: len(rates), runs: len(rs)}
	if len(rates) == 0 {
		return s
	}
	slices.Sort(rates)
	s.median = median(rates)
	s.best = rates[len(rates)-1]
	return s
}

// median of sorted values.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func (s summary) cell() string {
	if s.ok == 0 {
		return fmt.Sprintf("FAILED (%d/%d runs)", s.runs, s.runs)
	}
	c := fmt.Sprintf("%s (best %s)", formatRate(s.median), formatRate(s.best))
	if s.ok < s.runs {
		c += fmt.Sprintf(", %d/%d runs FAILED", s.runs-s.ok, s.runs)
	}
	return c
}

func medianDuration(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	fs := make([]float64, len(ds))
	for i, d := range ds {
		fs[i] = float64(d)
	}
	slices.Sort(fs)
	return time.Duration(median(fs))
}

// writeReport prints the markdown report.
func (r *runner) writeReport(w io.Writer, m machine, total time.Duration) {
	cfg := r.cfg
	names := make([]string, len(cfg.engines))
	for i, k := range cfg.engines {
		names[i] = k.name
	}
	hasBoth := slices.Contains(names, ourKind.name) && slices.Contains(names, pebbleKind.name)

	fmt.Fprintf(w, "## Engine comparison: ours (`lsm`) vs pebble v2.1.7\n\n")
	fmt.Fprintf(w, "Command (in `bench/enginecmp`): `go run . %s`\n\n", strings.Join(cfg.args, " "))
	fmt.Fprintf(w, "Machine: %d CPUs (GOMAXPROCS %d), %s, %s RAM, Linux %s, %s, cgo %s; data under %s on %s; "+
		"load average %s at start, %s at end; %s in total.\n\n",
		m.cpus, m.maxprocs, m.cpuModel, m.memTotal, m.kernel, m.goVersion, m.cgo,
		cfg.dirOrTemp(), m.disk, m.loadStart, m.loadEnd, total.Round(time.Second))
	pebbleFormat := "FormatNewest (columnar blocks)"
	if cfg.pebbleFormat == "min" {
		pebbleFormat = "FormatMinSupported (row blocks, pebble's default)"
	}
	bloom := fmt.Sprintf("bloom filter %d bits/key on every level", cfg.bloomBits)
	if cfg.bloomBits == 0 {
		bloom = "no bloom filter"
	}
	fmt.Fprintf(w, "Both engines: %d keys of %d B (db_bench zero-padded decimal), %d B values (~50%% compressible), "+
		"memtable %s, block cache %s, %d B blocks, %s, s2 (ours) / Snappy (pebble) compression, WAL on, "+
		"one compaction at a time, L0 compaction at 4 files and stop at 12; pebble format %s. "+
		"Writes are unsynced (ours SyncNone, pebble.NoSync) except fillsync (ours SyncAlways, pebble.Sync). "+
		"%d runs; in every run each workload runs on both engines before the next one, and the engine that goes "+
		"first alternates between runs. Cells: median (best) ops/s.\n\n",
		cfg.n, keySize, cfg.valueSize, sizeString(cfg.memtable), sizeString(cfg.cache), cfg.blockSize, bloom,
		pebbleFormat, cfg.runs)
	if r.prof != nil {
		fmt.Fprintf(w, "**Our engine was CPU-profiled during its timed phases; its figures include the profiler's overhead.**\n\n")
	}

	fmt.Fprintf(w, "| workload |")
	for _, n := range names {
		fmt.Fprintf(w, " %s ops/s |", n)
	}
	if hasBoth {
		fmt.Fprintf(w, " ratio |")
	}
	fmt.Fprintf(w, "\n|---|")
	for range names {
		fmt.Fprintf(w, "---:|")
	}
	if hasBoth {
		fmt.Fprintf(w, "---:|")
	}
	fmt.Fprintln(w)
	for _, wl := range cfg.workloads {
		fmt.Fprintf(w, "| %s |", wl.title)
		sums := map[string]summary{}
		for _, n := range names {
			s := summarize(r.results[wl.id][n])
			sums[n] = s
			fmt.Fprintf(w, " %s |", s.cell())
		}
		if hasBoth {
			o, p := sums[ourKind.name], sums[pebbleKind.name]
			if o.ok > 0 && p.ok > 0 {
				fmt.Fprintf(w, " %.2f |", o.median/p.median)
			} else {
				fmt.Fprintf(w, " - |")
			}
		}
		fmt.Fprintln(w)
	}
	if hasBoth {
		fmt.Fprintf(w, "\nratio = ours median / pebble median (above 1: ours is faster).\n")
	}

	fmt.Fprintf(w, "\nWhat is measured: fills start from an empty DB (fillrandom writes each key once, in random order); "+
		"overwrite rewrites every key of the fillrandom DB once in another random order; "+
		"readrandom reads every key once in random order from that DB (all hits, values checked), "+
		"readmissing looks up as many absent keys that sort between existing ones (db_bench's key+\".\"), "+
		"readseq iterates over the whole DB %d times (keys and values checked). "+
		"Before the reads both engines had flushed their memtable and finished every compaction they had due "+
		"(polling their metrics until idle); no manual full compaction. "+
		"Write rates count the writes only; the untimed wait for the flushes and compactions they left behind is below. "+
		"Before every timed phase the Go heap is collected and the page cache written back (sync(2)); "+
		"the data set fits in the page cache, which is not dropped.\n\n", cfg.scans)
	if hasBoth {
		fmt.Fprintf(w, "Bloom filters and point lookups: pebble writes the filters on every level but its Get never "+
			"consults them on L6 (file_cache.go: NeverUseFilterBlock unless IterOptions.UseL6Filters, which Get "+
			"does not set), and its dynamic level sizing puts a DB of this size mostly in L6; our Get checks "+
			"the filter of every table it visits. This decides readmissing.\n\n")
	}

	writeSettle := false
	for _, wl := range cfg.workloads {
		if wl.kind == fillSeq || wl.kind == fillRandom || wl.kind == overwrite {
			writeSettle = true
		}
	}
	if writeSettle {
		fmt.Fprintf(w, "| settle after (median s) |")
		for _, n := range names {
			fmt.Fprintf(w, " %s |", n)
		}
		fmt.Fprintf(w, "\n|---|")
		for range names {
			fmt.Fprintf(w, "---:|")
		}
		fmt.Fprintln(w)
		for _, wl := range cfg.workloads {
			if wl.kind != fillSeq && wl.kind != fillRandom && wl.kind != overwrite {
				continue
			}
			fmt.Fprintf(w, "| %s |", wl.title)
			for _, n := range names {
				var ds []time.Duration
				for _, res := range r.results[wl.id][n] {
					if res.err == nil {
						ds = append(ds, res.settle)
					}
				}
				if len(ds) == 0 {
					fmt.Fprintf(w, " - |")
				} else {
					fmt.Fprintf(w, " %.2f |", medianDuration(ds).Seconds())
				}
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}

	if len(r.readDBs) > 0 {
		fmt.Fprintf(w, "| read DB after settling (last run) | tables | all files | flushes | compactions | write amp (engine's metric) |\n|---|---:|---:|---:|---:|---:|\n")
		for _, n := range names {
			snaps := r.readDBs[n]
			if len(snaps) == 0 {
				continue
			}
			s := snaps[len(snaps)-1]
			fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %.2f |\n", n, sizeString(s.tableBytes), sizeString(s.diskBytes),
				s.stats.Flushes, s.stats.Compactions, s.stats.WriteAmp)
		}
		fmt.Fprintf(w, "\nAll files include WALs; pebble keeps its used WAL files for recycling (about one memtable each).\n\n")
	}

	fmt.Fprintf(w, "Every run (ops/s):\n\n| workload | engine |")
	for i := range cfg.runs {
		fmt.Fprintf(w, " run %d |", i+1)
	}
	fmt.Fprintf(w, "\n|---|---|%s\n", strings.Repeat("---:|", cfg.runs))
	for _, wl := range cfg.workloads {
		for _, n := range names {
			fmt.Fprintf(w, "| %s | %s |", wl.title, n)
			for _, res := range r.results[wl.id][n] {
				if res.err != nil {
					fmt.Fprintf(w, " FAILED |")
				} else {
					fmt.Fprintf(w, " %s |", formatRate(res.opsPerSec()))
				}
			}
			fmt.Fprintln(w)
		}
	}

	var failures []string
	for _, wl := range cfg.workloads {
		for _, n := range names {
			for i, res := range r.results[wl.id][n] {
				if res.err != nil {
					failures = append(failures, fmt.Sprintf("- %s, %s, run %d: %v", wl.id, n, i+1, res.err))
				}
			}
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(w, "\nFailures:\n\n```\n%s\n```\n", strings.Join(failures, "\n"))
	}
}

func (c *config) dirOrTemp() string {
	if c.dir != "" {
		return c.dir
	}
	return os.TempDir()
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
