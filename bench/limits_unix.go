//go:build unix

package bench

import (
	"errors"
	"syscall"
)

// outOfFiles reports whether err is a failure to open a file descriptor
// because the process reached its limit (EMFILE) or the system its own
// (ENFILE).
func outOfFiles(err error) (process, system bool) {
	return errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE)
}

// openFileLimit returns the process's soft limit on open files, the one
// ulimit -n sets.
func openFileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}
