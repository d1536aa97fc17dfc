package main

import (
	"io"
	"slices"
	"testing"
	"time"
)

func TestParseWorkloads(t *testing.T) {
	ws, err := parseWorkloads("readseq, fillsync-32,fillseq,fillsync-2,overwrite,fillseq-batch,fillseq", 500)
	if err != nil {
		t.Fatal(err)
	}
	var ids, titles []string
	for _, w := range ws {
		ids = append(ids, w.id)
		titles = append(titles, w.title)
	}
	// Execution order, not command-line order; duplicates dropped.
	wantIDs := []string{"fillseq", "fillseq-batch", "overwrite", "readseq", "fillsync-2", "fillsync-32"}
	if !slices.Equal(ids, wantIDs) {
		t.Errorf("order %q, want %q", ids, wantIDs)
	}
	if titles[1] != "fillseq (batch 500)" || titles[4] != "fillsync, 2 writers" {
		t.Errorf("titles %q", titles)
	}
	for _, bad := range []string{"", "fillsync-0", "fillsync-x", "readreverse", ","} {
		if _, err := parseWorkloads(bad, 1000); err == nil {
			t.Errorf("parseWorkloads(%q) accepted", bad)
		}
	}
	all, err := parseWorkloads(defaultWorkloads, 1000)
	if err != nil || len(all) != 11 {
		t.Errorf("default workloads: %d, %v", len(all), err)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"8388608": 8 << 20, "8MiB": 8 << 20, "8M": 8 << 20, "8mb": 8 << 20,
		"64KiB": 64 << 10, "1G": 1 << 30, " 512 ": 512,
	} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "0", "1T", "1.5M"} {
		if _, err := parseByteSize(bad); err == nil {
			t.Errorf("parseByteSize(%q) accepted", bad)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-n", "5000", "-memtable", "4MiB", "-cache", "1G", "-engines", "pebble,ours,pebble"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.n != 5000 || cfg.reads != 5000 || cfg.memtable != 4<<20 || cfg.cache != 1<<30 {
		t.Errorf("config %+v", cfg)
	}
	if len(cfg.engines) != 2 || cfg.engines[0].name != "pebble" || cfg.engines[1].name != "ours" {
		t.Errorf("engines %v", cfg.engines)
	}
	for _, bad := range [][]string{
		{"-n", "0"}, {"-runs", "0"}, {"-engines", "rocksdb"}, {"-engines", ","},
		{"-pebble-format", "old"}, {"-workloads", "nope"}, {"extra"}, {"-memtable", "big"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	ok := func(ops int, secs float64) phaseResult {
		return phaseResult{ops: ops, elapsed: secondsDuration(secs)}
	}
	s := summarize([]phaseResult{ok(100, 1), ok(300, 1), {err: io.ErrUnexpectedEOF}, ok(200, 1)})
	if s.median != 200 || s.best != 300 || s.ok != 3 || s.runs != 4 {
		t.Errorf("summary %+v", s)
	}
	if c := s.cell(); c != "200 (best 300), 1/4 runs FAILED" {
		t.Errorf("cell %q", c)
	}
	if s := summarize([]phaseResult{ok(100, 1), ok(300, 1)}); s.median != 200 {
		t.Errorf("even median %v", s.median)
	}
	if c := summarize([]phaseResult{{err: io.ErrUnexpectedEOF}}).cell(); c != "FAILED (1/1 runs)" {
		t.Errorf("all-failed cell %q", c)
	}
}

func TestFormatRate(t *testing.T) {
	for v, want := range map[float64]string{12: "12", 4321: "4.3 K", 1234567: "1.23 M"} {
		if got := formatRate(v); got != want {
			t.Errorf("formatRate(%v) = %q, want %q", v, got, want)
		}
	}
}

func secondsDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
