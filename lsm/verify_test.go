package lsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lni/vfs"
)

// TestVerifySoundDB: Verify reads every table of a DB spread over several
// levels, finds nothing wrong and counts every entry it read.
func TestVerifySoundDB(t *testing.T) {
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", smallOptions(fs))
	for round := range 3 {
		for i := range 2000 {
			mustPut(t, d, fmt.Sprintf("k%05d", i*7%2000), fmt.Sprintf("v%d-%d", round, i))
		}
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	mustDelete(t, d, "k00001")
	d.Close()
	// Read-only, as kvserver -check opens it: no compaction changes the
	// version between Verify and the count below.
	opts := smallOptions(fs)
	opts.ReadOnly = true
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	rep, err := d.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("problems in a sound DB: %q", rep.Problems)
	}
	var tables int
	var entries int64
	d.mu.Lock()
	for _, files := range d.current.levels {
		for _, f := range files {
			tables++
			entries += f.entries
		}
	}
	d.mu.Unlock()
	if rep.Tables != tables || rep.Entries != entries || tables < 2 {
		t.Fatalf("report %+v; the version has %d tables of %d entries", rep, tables, entries)
	}
	if err := d.Health(); err != nil {
		t.Fatalf("Health after a clean verify: %v", err)
	}
}

// TestVerifyFindsDamage: a flipped byte in a data block no read has
// touched yet is found, named, and reported by Health as a read's would be.
func TestVerifyFindsDamage(t *testing.T) {
	cfs, table := damagedTableDB(t)
	d := mustOpen(t, "/db", testOptions(cfs))
	defer d.Close()
	rep, err := d.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], table) || !strings.Contains(rep.Problems[0], "checksum") {
		t.Fatalf("problems %q, want one naming %s's checksum", rep.Problems, table)
	}
	if err := d.Health(); !errors.Is(err, ErrCorruption) {
		t.Fatalf("Health after verify found damage: %v", err)
	}
}

// TestVerifyChecksManifest: a table that disagrees with what the manifest
// records of it (entries, bounds) is reported, though its blocks are sound.
func TestVerifyChecksManifest(t *testing.T) {
	for name, edit := range map[string]func(f *fileMetadata){
		"entries": func(f *fileMetadata) { f.entries++ },
		"largest": func(f *fileMetadata) { f.largest = append([]byte("zzz"), f.largest[len(f.largest)-8:]...) },
		"seq":     func(f *fileMetadata) { f.largestSeq = f.smallestSeq },
	} {
		t.Run(name, func(t *testing.T) {
			d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
			defer d.Close()
			for i := range 10 {
				mustPut(t, d, fmt.Sprintf("k%d", i), "v")
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			d.mu.Lock()
			edit(d.current.levels[0][0])
			d.mu.Unlock()
			rep, err := d.Verify(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 1 {
				t.Fatalf("problems %q, want one", rep.Problems)
			}
		})
	}
}

func TestVerifyStops(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	mustPut(t, d, "k", "v")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Verify(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with a canceled context: %v", err)
	}
	d.Close()
	if _, err := d.Verify(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Verify after Close: %v", err)
	}
}
