//go:build !linux

package sstable

import (
	"syscall"

	"github.com/lni/vfs"
)

// rawConn reports no descriptor where preadv2(RWF_NOWAIT) does not exist:
// reads that must not wait are plain reads there.
func rawConn(vfs.File) syscall.RawConn { return nil }

func (r *Reader) readAtNoWait(p []byte, off uint64) error { return r.readAt(p, off) }
