package lsm

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/lni/vfs"
)

// TestWriteBackup: the archive, extracted into an empty directory, opens
// as the DB at the moment of the call (flushed and unflushed writes,
// overwrites and deletes in; later writes out), and the checkpoint it was
// made from is gone afterwards.
func TestWriteBackup(t *testing.T) {
	fs := vfs.NewStrictMem()
	opts := smallOptions(fs)
	d := mustOpen(t, "/db", opts)
	fillCopyFixture(t, d)
	want := scan(t, d, nil, nil)
	var buf bytes.Buffer
	if err := d.WriteBackup(&buf); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "after", "backup")
	names, err := fs.List("/db")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, backupDirPrefix) {
			t.Fatalf("backup checkpoint %s left in the DB directory", n)
		}
	}

	if err := fs.MkdirAll("/restore", 0o755); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	files := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/") {
			t.Fatalf("archive entry %q (type %c): want plain files", h.Name, h.Typeflag)
		}
		f, err := fs.Create("/restore/" + h.Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		f.Sync()
		f.Close()
		files++
	}
	if files < 3 { // CURRENT, a manifest, tables
		t.Fatalf("archive holds %d files", files)
	}
	r := mustOpen(t, "/restore", opts)
	defer r.Close()
	got := scan(t, r, nil, nil)
	if len(got) != len(want) {
		t.Fatalf("restored DB has %d keys, want %d", len(got), len(want))
	}
	checkGet(t, r, "k00001", "overwritten", true)
	checkGet(t, r, "k00002", "", false)
	checkGet(t, r, "k02999", "v2999", true)
	checkGet(t, r, "after", "", false)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRemovesInterruptedBackup: a backup checkpoint a crash left in
// the directory is removed at the next open, and nothing else is touched.
func TestOpenRemovesInterruptedBackup(t *testing.T) {
	fs := vfs.NewStrictMem()
	opts := smallOptions(fs)
	d := mustOpen(t, "/db", opts)
	mustPut(t, d, "k", "v")
	if err := d.Checkpoint("/db/" + backupDirPrefix + "7"); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, "/db", opts)
	defer d.Close()
	if _, err := fs.Stat("/db/" + backupDirPrefix + "7"); err == nil {
		t.Fatal("interrupted backup checkpoint still there after open")
	}
	checkGet(t, d, "k", "v", true)
}

// TestOpenRefusesBackupExtractedOverADB: a checkpoint copied into a
// directory that holds another DB (a backup extracted over the live data
// directory instead of into an empty one) is refused, naming the foreign
// files, and nothing is deleted; before, Open kept the backup and deleted
// the DB's own tables and WALs, or, when the DB had a WAL numbered above
// the checkpoint's manifest, refused with a message about a deleted WAL.
func TestOpenRefusesBackupExtractedOverADB(t *testing.T) {
	fs := vfs.NewStrictMem()
	opts := smallOptions(fs)
	d := mustOpen(t, "/db", opts)
	fillCopyFixture(t, d)
	if err := d.Checkpoint("/ckpt"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "after", "backup")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := fs.List("/db")
	if err != nil {
		t.Fatal(err)
	}
	ckpt, err := fs.List("/ckpt")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range ckpt {
		writeFile(t, fs, "/db/"+name, readFile(t, fs, "/ckpt/"+name))
	}
	_, err = Open("/db", opts)
	if err == nil || !strings.Contains(err.Error(), "extracted into a non-empty directory") || !strings.Contains(err.Error(), ".log") {
		t.Fatalf("open of a backup extracted over a DB: %v", err)
	}
	for _, name := range before {
		if _, err := fs.Stat("/db/" + name); err != nil {
			t.Fatalf("%s of the DB the backup was extracted over is gone: %v", name, err)
		}
	}
	// The checkpoint itself, in its own directory, opens (and reopens).
	for range 2 {
		r := mustOpen(t, "/ckpt", opts)
		checkGet(t, r, "k02999", "v2999", true)
		checkGet(t, r, "after", "", false)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
