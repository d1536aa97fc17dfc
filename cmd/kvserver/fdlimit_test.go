package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/server"
)

// TestConnectionBudgetArithmetic: what max_connections may use is the
// limit less the open files and a reserve that holds the admin endpoint's
// connections, the event loops' pollers, the tables the engine will open
// and the accept loop's descriptors.
func TestConnectionBudgetArithmetic(t *testing.T) {
	// kvserver under `ulimit -n 1024` on two cores, empty data directory:
	// 13 files open when the budget is computed.
	u := fdUse{limit: 1024, open: 13, loops: 3}
	if got, want := u.budget(), 1024-13-(1+2*3)-(1+server.AdminMaxConns)-engineFDs-otherFDs-acceptFDs-refusingFDs; got != want {
		t.Fatalf("budget %d, want %d", got, want)
	}
	// Every admin connection, every table and the accept loop's
	// descriptors must fit beside a full house of clients.
	if r := u.reserve(); r < server.AdminMaxConns+acceptFDs+engineFDs {
		t.Fatalf("reserve %d", r)
	}
	// Each table the engine has yet to open is one client less.
	big := u
	big.tables = 300
	if got, want := big.budget(), u.budget()-300; got != want {
		t.Fatalf("with 300 tables to open: budget %d, want %d", got, want)
	}
	// More event loops, more pollers.
	more := u
	more.loops = 9
	if got, want := more.budget(), u.budget()-12; got != want {
		t.Fatalf("with 9 loops: budget %d, want %d", got, want)
	}
	// A TLS port: its listener and accept loop, and three descriptors a
	// connection.
	withTLS := u
	withTLS.tls = true
	if got, want := withTLS.budget(), (u.budget()-1-acceptFDs-refusingFDs)/tlsConnFDs; got != want {
		t.Fatalf("with a TLS port: budget %d, want %d", got, want)
	}
}

// TestOpenFilesCountsTablesToOpen: the tables under the data directory
// count, less those already open, and those under the skipped directory
// (the raft log's own store) do not.
func TestOpenFilesCountsTablesToOpen(t *testing.T) {
	data, fdDir := t.TempDir(), t.TempDir()
	shard := filepath.Join(data, "shard-1")
	raft := filepath.Join(data, "raft")
	for _, dir := range []string{shard, raft} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 5; i++ {
		for _, dir := range []string{data, shard, raft} {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%06d.sst", i)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A fake /proc/self/fd: a manifest, two tables and a WAL open.
	for fd, target := range map[string]string{
		"0": "/dev/null",
		"5": filepath.Join(data, "MANIFEST-000009"),
		"6": filepath.Join(data, "000003.sst"),
		"7": filepath.Join(shard, "000004.sst"),
		"8": filepath.Join(data, "000010.log"),
	} {
		if err := os.Symlink(target, filepath.Join(fdDir, fd)); err != nil {
			t.Fatal(err)
		}
	}
	if open, held, tables := openFiles(fdDir, data, "raft"); open != 5 || held != 2 || tables != 8 {
		t.Fatalf("open %d, held %d, tables %d; want 5, 2 and 8", open, held, tables)
	}
	if _, _, tables := openFiles(fdDir, data, ""); tables != 13 {
		t.Fatalf("tables %d with nothing skipped, want 13", tables)
	}
	if open, held, tables := openFiles(filepath.Join(fdDir, "missing"), data, ""); open != 0 || held != 0 || tables != 0 {
		t.Fatalf("without the fd directory: open %d, held %d, tables %d", open, held, tables)
	}
	if _, _, tables := openFiles(fdDir, filepath.Join(data, "missing"), ""); tables != 0 {
		t.Fatalf("without the data directory: tables %d", tables)
	}
}

// TestTablesToOpenBounded: the tables still to open count only up to
// storage.max_open_tables, less those open now.
func TestTablesToOpenBounded(t *testing.T) {
	for _, c := range []struct{ held, unopened, max, want int }{
		{0, 5, 1000, 5},
		{0, 5000, 1000, 1000},
		{400, 5000, 1000, 600},
		{1000, 5000, 1000, 0},
		{1003, 10, 1000, 0}, // briefly over the bound
	} {
		if got := tablesToOpen(c.held, c.unopened, c.max); got != c.want {
			t.Errorf("tablesToOpen(%d, %d, %d) = %d, want %d", c.held, c.unopened, c.max, got, c.want)
		}
	}
}

// TestConnectionBudgetKeepsWhatFits: a max_connections that fits is kept.
func TestConnectionBudgetKeepsWhatFits(t *testing.T) {
	got, err := connectionBudget(1, conf.Default().Server, conf.Default().Storage, false, slog.New(slog.DiscardHandler))
	if err != nil || got != 1 {
		t.Fatalf("connectionBudget(1) = %d, %v", got, err)
	}
}
