package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

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
	if got, want := u.budget(), 1024-13-(1+2*3)-(1+server.AdminMaxConns)-engineFDs-otherFDs-acceptFDs; got != want {
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
}

// TestOpenFilesCountsTablesToOpen: the tables next to an open manifest
// count, less those already open; a directory whose manifest is not open
// is no engine's.
func TestOpenFilesCountsTablesToOpen(t *testing.T) {
	db, other, fdDir := t.TempDir(), t.TempDir(), t.TempDir()
	for i := 1; i <= 5; i++ {
		if err := os.WriteFile(filepath.Join(db, fmt.Sprintf("%06d.sst", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(other, fmt.Sprintf("%06d.sst", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A fake /proc/self/fd: the manifest, one table and the WAL open.
	for fd, target := range map[string]string{
		"0": "/dev/null",
		"5": filepath.Join(db, "MANIFEST-000009"),
		"6": filepath.Join(db, "000003.sst"),
		"7": filepath.Join(db, "000010.log"),
		"8": filepath.Join(other, "000001.log"),
	} {
		if err := os.Symlink(target, filepath.Join(fdDir, fd)); err != nil {
			t.Fatal(err)
		}
	}
	if open, tables := openFiles(fdDir); open != 5 || tables != 4 {
		t.Fatalf("open %d, tables %d; want 5 and 4", open, tables)
	}
	if open, tables := openFiles(filepath.Join(fdDir, "missing")); open != 0 || tables != 0 {
		t.Fatalf("without the fd directory: open %d, tables %d", open, tables)
	}

	// The real /proc/self/fd, with a manifest held open.
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd")
	}
	_, before := openFiles("/proc/self/fd")
	f, err := os.Create(filepath.Join(db, "MANIFEST-000009"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, tables := openFiles("/proc/self/fd"); tables != before+5 {
		t.Fatalf("tables to open with a manifest held: %d, want %d", tables, before+5)
	}
}

// TestConnectionBudgetKeepsWhatFits: a max_connections that fits is kept.
func TestConnectionBudgetKeepsWhatFits(t *testing.T) {
	got, err := connectionBudget(1, slog.New(slog.DiscardHandler))
	if err != nil || got != 1 {
		t.Fatalf("connectionBudget(1) = %d, %v", got, err)
	}
}
