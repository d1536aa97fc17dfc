//go:build !linux

package cluster

import "errors"

// freeSpace is not measured here: the free-space guard keeps its state
// (writes go on) and says so once in the log.
func freeSpace(string) (uint64, error) {
	return 0, errors.New("free space is not measured on this platform")
}
