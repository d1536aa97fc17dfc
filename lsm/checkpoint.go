package lsm

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/lni/vfs"
)

// Checkpoint writes a consistent, openable copy of the DB to dir, which
// must not exist yet: it flushes, takes the tables of the version that
// flush installed (every batch committed before the call, none committed
// after, each whole: see flushTicket.pin), hard-links them into dir
// (copying them where linking fails, e.g. across filesystems) and writes a
// manifest and CURRENT naming them. The copy shares no mutable file with
// the DB.
func (d *DB) Checkpoint(dir string) error {
	if d.opts.ReadOnly {
		return ErrReadOnly
	}
	if d.closed.Load() {
		return ErrClosed
	}
	fs := d.opts.FS
	if _, err := fs.Stat(dir); err == nil {
		return fmt.Errorf("lsm: checkpoint to %s: %w", dir, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lsm: checkpoint to %s: %w", dir, err)
	}
	v, err := d.flush(true)
	if err != nil {
		return fmt.Errorf("lsm: checkpoint to %s: %w", dir, err)
	}
	defer v.unref()
	if d.closed.Load() {
		return ErrClosed
	}

	if err := ensureDir(fs, dir); err != nil {
		return err
	}
	for _, files := range v.levels {
		for _, f := range files {
			name := makeFilename(fileTypeTable, f.fileNum)
			if err := linkOrCopy(fs, fs.PathJoin(d.dirname, name), fs.PathJoin(dir, name)); err != nil {
				return fmt.Errorf("lsm: checkpoint to %s: %w", dir, err)
			}
		}
	}
	if err := writeFormat(fs, dir); err != nil {
		return fmt.Errorf("lsm: checkpoint to %s: %w", dir, err)
	}
	// The manifest's log number is fresh: the copy has no WAL to replay.
	num := d.nextFileNum.Add(1) - 1
	tempNum := d.nextFileNum.Add(1) - 1
	m, err := writeSnapshotManifest(fs, dir, num, v, num, d.nextFileNum.Load(), d.visibleSeq.Load())
	if err != nil {
		return fmt.Errorf("lsm: checkpoint to %s: %w", dir, err)
	}
	m.close()
	if err := setCurrent(fs, dir, num, tempNum); err != nil {
		return fmt.Errorf("lsm: checkpoint to %s: %w", dir, err)
	}
	return nil
}

// linkOrCopy hard-links src to dst, or copies and syncs it when the
// filesystem cannot link.
func linkOrCopy(fs vfs.FS, src, dst string) error {
	if err := fs.Link(src, dst); err == nil {
		return nil
	}
	in, err := fs.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := fs.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}
