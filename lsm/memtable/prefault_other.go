//go:build !linux

package memtable

import "errors"

// populate does nothing where MADV_POPULATE_WRITE does not exist: pages
// fault in on first write.
func populate([]byte) error { return errors.ErrUnsupported }

// adviseHugePages does nothing where madvise(MADV_HUGEPAGE) does not exist.
func adviseHugePages([]byte) {}
