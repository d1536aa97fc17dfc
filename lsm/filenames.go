package lsm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lni/vfs"
)

// fileType classifies the files of a DB directory.
type fileType int

const (
	fileTypeUnknown  fileType = iota
	fileTypeLog               // 000123.log: a WAL
	fileTypeTable             // 000123.sst
	fileTypeManifest          // MANIFEST-000123
	fileTypeCurrent           // CURRENT: names the live manifest
	fileTypeLock              // LOCK
	fileTypeTemp              // 000123.dbtmp: CURRENT being replaced
)

const (
	currentName = "CURRENT"
	lockName    = "LOCK"
)

// makeFilename returns the name of file number num of type t (relative to
// the DB directory).
func makeFilename(t fileType, num uint64) string {
	switch t {
	case fileTypeLog:
		return fmt.Sprintf("%06d.log", num)
	case fileTypeTable:
		return fmt.Sprintf("%06d.sst", num)
	case fileTypeManifest:
		return fmt.Sprintf("MANIFEST-%06d", num)
	case fileTypeCurrent:
		return currentName
	case fileTypeLock:
		return lockName
	case fileTypeTemp:
		return fmt.Sprintf("%06d.dbtmp", num)
	}
	panic("lsm: unknown file type")
}

// parseFilename is the inverse of makeFilename; ok is false for files that
// do not belong to a DB.
func parseFilename(name string) (t fileType, num uint64, ok bool) {
	switch name {
	case currentName:
		return fileTypeCurrent, 0, true
	case lockName:
		return fileTypeLock, 0, true
	}
	if rest, found := strings.CutPrefix(name, "MANIFEST-"); found {
		n, err := strconv.ParseUint(rest, 10, 64)
		return fileTypeManifest, n, err == nil
	}
	stem, ext, found := strings.Cut(name, ".")
	if !found {
		return fileTypeUnknown, 0, false
	}
	n, err := strconv.ParseUint(stem, 10, 64)
	if err != nil {
		return fileTypeUnknown, 0, false
	}
	switch ext {
	case "log":
		return fileTypeLog, n, true
	case "sst":
		return fileTypeTable, n, true
	case "dbtmp":
		return fileTypeTemp, n, true
	}
	return fileTypeUnknown, 0, false
}

// syncDir fsyncs a directory so that the files created, renamed or removed
// in it survive a power loss.
func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for sync: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return d.Close()
}

// setCurrent points CURRENT at manifest number manifestNum: the name goes
// to a temporary file, which is fsynced, renamed over CURRENT, and the
// directory is fsynced, so that after a crash CURRENT holds either the old
// name or the new one, never a torn mix or nothing.
func setCurrent(fs vfs.FS, dir string, manifestNum, tempNum uint64) error {
	return replaceFile(fs, dir, makeFilename(fileTypeTemp, tempNum), currentName, []byte(makeFilename(fileTypeManifest, manifestNum)+"\n"))
}

// replaceFile makes dir/name hold data, whole or not at all after a crash:
// written and synced as dir/tmp, renamed over name, the directory synced.
func replaceFile(fs vfs.FS, dir, tmp, name string, data []byte) error {
	tmp = fs.PathJoin(dir, tmp)
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fs.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := fs.Rename(tmp, fs.PathJoin(dir, name)); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, name, err)
	}
	return syncDir(fs, dir)
}

// readCurrent returns the manifest number CURRENT names.
func readCurrent(fs vfs.FS, dir string) (uint64, error) {
	name := fs.PathJoin(dir, currentName)
	f, err := fs.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64)
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
	}
	content := string(buf[:n])
	stem, found := strings.CutSuffix(content, "\n")
	t, num, ok := parseFilename(stem)
	if !found || !ok || t != fileTypeManifest {
		return 0, fmt.Errorf("read %s: malformed content %q: %w", name, content, ErrCorruption)
	}
	return num, nil
}
