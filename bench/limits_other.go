//go:build !unix

package bench

// outOfFiles cannot tell a file descriptor limit here: errors are
// reported as they are.
func outOfFiles(error) (process, system bool) { return false, false }

// openFileLimit is unknown here.
func openFileLimit() (uint64, bool) { return 0, false }
