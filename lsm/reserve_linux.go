package lsm

import (
	"github.com/lni/vfs"
	"golang.org/x/sys/unix"
)

// reserveBlocks allocates n bytes of blocks for f from its start without
// changing its size (fallocate with KEEP_SIZE), so that writes within them
// never meet a full disk. Only a lack of space or quota is an error: a
// file system or a file without fallocate (a test's in-memory file) just
// goes unreserved.
func reserveBlocks(f vfs.File, n int64) error {
	fd, ok := f.(interface{ Fd() uintptr })
	if !ok || n <= 0 {
		return nil
	}
	if err := unix.Fallocate(int(fd.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, n); isNoSpace(err) {
		return err
	}
	return nil
}
