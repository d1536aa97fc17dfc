package lsm

import (
	"archive/tar"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/lni/vfs"
)

// backupDirPrefix names the checkpoints WriteBackup makes inside the DB's
// directory (where hard links to the tables are possible). Open removes
// any a crash left behind.
const backupDirPrefix = "backup.tmp-"

// WriteBackup writes a consistent copy of the DB to w as a tar archive:
// the files of a checkpoint (see Checkpoint), so every write acknowledged
// before the call is in it and none after. Extracted into an empty
// directory, the archive is a DB that Open accepts. The checkpoint is made
// inside the DB's own directory, sharing the tables by hard links, and is
// removed once the archive is written or has failed; meanwhile the DB
// serves reads and writes as usual (compactions may delete their links
// to tables the checkpoint still holds: those stay on disk until it goes).
func (d *DB) WriteBackup(w io.Writer) error {
	fs := d.opts.FS
	dir := fs.PathJoin(d.dirname, backupDirPrefix+strconv.FormatUint(d.nextFileNum.Add(1)-1, 10))
	defer fs.RemoveAll(dir)
	if err := d.Checkpoint(dir); err != nil {
		return fmt.Errorf("lsm: backup: %w", err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return fmt.Errorf("lsm: backup: %w", err)
	}
	slices.Sort(names)
	tw := tar.NewWriter(w)
	now := time.Now()
	for _, name := range names {
		if err := tarFile(tw, fs, fs.PathJoin(dir, name), name, now); err != nil {
			return fmt.Errorf("lsm: backup: %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("lsm: backup: %w", err)
	}
	return nil
}

// tarFile appends the file at path to tw as the regular file name.
func tarFile(tw *tar.Writer, fs vfs.FS, path, name string, mtime time.Time) error {
	f, err := fs.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: st.Size(), ModTime: mtime}); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != st.Size() {
		err = fmt.Errorf("read %d bytes of %d", n, st.Size())
	}
	return err
}
