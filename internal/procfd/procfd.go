// Package procfd counts this process's open file descriptors by what they
// point at (Linux /proc/self/fd), for tests that check a bound on open
// files.
package procfd

import (
	"os"
	"path/filepath"
)

// Count returns how many of this process's descriptors point at a path
// for which match is true; an error where /proc/self/fd is unavailable.
func Count(match func(target string) bool) (int, error) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && match(target) {
			n++
		}
	}
	return n, nil
}
