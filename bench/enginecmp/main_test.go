package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

// TestRunBothEngines runs every workload on both real engines at a tiny
// size: every phase must succeed (reads check keys and values), the report
// must have a row per workload, and the data directories must be gone.
func TestRunBothEngines(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(t.TempDir(), "ours")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-n", "3000", "-sync-ops", "64", "-runs", "2", "-memtable", "256KiB",
		"-dir", dir, "-cpuprofile", prefix}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	ws, _ := parseWorkloads(defaultWorkloads, 1000)
	for _, w := range ws {
		if !strings.Contains(out, "| "+w.title+" | ") {
			t.Errorf("report has no row for %q", w.title)
		}
	}
	for _, want := range []string{"| workload | ours ops/s | pebble ops/s | ratio |", "go run . -n 3000", "FormatNewest"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "FAILED") {
		t.Errorf("a phase failed:\n%s", out)
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("data left behind in %s: %v", dir, left)
	}
	// One merged profile per workload, holding both runs' samples of our
	// engine only.
	for _, w := range ws {
		f, err := os.Open(prefix + "." + w.id + ".pprof")
		if err != nil {
			t.Error(err)
			continue
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			t.Errorf("profile of %s: %v", w.id, err)
			continue
		}
		if p.DurationNanos <= 0 {
			t.Errorf("profile of %s is empty", w.id)
		}
	}
}

func TestRunOneEngineSubset(t *testing.T) {
	// The read workloads without fillrandom get an untimed prefill.
	var stdout, stderr bytes.Buffer
	code := run([]string{"-n", "2000", "-runs", "1", "-engines", "ours", "-workloads", "readseq,readrandom",
		"-dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "| ratio |") || !strings.Contains(out, "| readrandom (hits) | ") ||
		strings.Contains(out, "| fillseq") {
		t.Errorf("unexpected report:\n%s", out)
	}
}

func TestRunBadFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-workloads", "bogus"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "bogus") {
		t.Errorf("stderr %q", stderr.String())
	}
}
