//go:build !linux

package lsm

import "github.com/lni/vfs"

// reserveBlocks does nothing where fallocate is not available: a full disk
// is then met by a WAL write instead of its creation.
func reserveBlocks(vfs.File, int64) error { return nil }
