package lsm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/lni/vfs"
)

// The FORMAT file names the on-disk format of a DB directory: the
// encodings of its WAL records, tables, manifest edits and file names.
// formatVersion goes up with any change an older build would misread; a
// build refuses a directory of a newer format (ErrNewerFormat) instead of
// taking what it cannot parse for damage: an unknown WAL record read as
// corruption, and the operator told to open without the writes after it.
// Directories made before FORMAT existed are format 1 and get the file at
// their next Open; checkpoints carry it.
const (
	formatName    = "FORMAT"
	formatTemp    = "FORMAT.dbtmp"
	formatPrefix  = "kv-lsm-format "
	formatVersion = 1
)

// checkFormat reads dir's FORMAT: nil for this format (the file is written
// if missing, unless readOnly), ErrNewerFormat for a later one.
func checkFormat(fs vfs.FS, dir string, readOnly bool) error {
	f, err := fs.Open(fs.PathJoin(dir, formatName))
	if errors.Is(err, os.ErrNotExist) {
		if readOnly {
			return nil
		}
		return writeFormat(fs, dir)
	}
	if err != nil {
		return fmt.Errorf("lsm: open %s: %w", dir, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 64))
	f.Close()
	if err != nil {
		return fmt.Errorf("lsm: open %s: read %s: %w", dir, formatName, err)
	}
	text, ok := strings.CutPrefix(strings.TrimSpace(string(data)), formatPrefix)
	v, perr := strconv.Atoi(text)
	switch {
	case !ok || perr != nil || v < 1:
		return fmt.Errorf("lsm: open %s: %s holds %q, not a format version: %w", dir, formatName, data, ErrCorruption)
	case v > formatVersion:
		return fmt.Errorf("lsm: open %s: %w (format %d; this build reads format %d and older): run that version or a newer one", dir, ErrNewerFormat, v, formatVersion)
	}
	return nil
}

// writeFormat writes this build's FORMAT into dir.
func writeFormat(fs vfs.FS, dir string) error {
	if err := replaceFile(fs, dir, formatTemp, formatName, []byte(formatPrefix+strconv.Itoa(formatVersion)+"\n")); err != nil {
		return fmt.Errorf("lsm: open %s: %w", dir, err)
	}
	return nil
}
