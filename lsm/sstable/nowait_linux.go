package sstable

import (
	"errors"
	"syscall"

	"github.com/lni/vfs"
	"golang.org/x/sys/unix"

	"github.com/kvstore/kv/lsm/internal/base"
)

// rawConn returns access to f's descriptor, or nil when f has none (an
// in-memory file). Reads go through RawConn.Control, which keeps the
// descriptor from being closed (and its number reused by another file)
// while they run by holding a reference, as os.File.ReadAt does, without
// serializing them (RawConn.Read would: it takes the descriptor's read
// lock, made for sockets).
func rawConn(f vfs.File) syscall.RawConn {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// readAtNoWait is readAt that fails with base.ErrWouldBlock, having waited
// for nothing, when part of p is not in the OS page cache: preadv2 with
// RWF_NOWAIT, which returns what is cached and EAGAIN for the rest (the
// kernel may start reading ahead meanwhile). Where that is unsupported
// (tmpfs, some network and FUSE filesystems, kernels before 4.14) it
// reads as readAt does, waiting.
//
// A file a FileCache closed is base.ErrWouldBlock too: reopening it is
// file-system work that may wait.
func (r *Reader) readAtNoWait(p []byte, off uint64) error {
	if r.noNowait.Load() {
		return r.readAt(p, off)
	}
	h := r.file.Load()
	if h == nil || !h.tryRef() {
		if r.reopen != nil && !r.closed.Load() {
			return base.ErrWouldBlock
		}
		return r.readAt(p, off) // fails: read after close
	}
	defer h.unref()
	if h.raw == nil {
		return r.readAt(p, off)
	}
	if !r.touched.Load() {
		r.touched.Store(true)
	}
	done := 0
	var err error
	if cerr := h.raw.Control(func(fd uintptr) {
		for done < len(p) {
			var n int
			n, err = unix.Preadv2(int(fd), [][]byte{p[done:]}, int64(off)+int64(done), unix.RWF_NOWAIT)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n == 0 {
				return
			}
			done += n
		}
	}); cerr != nil {
		return r.readErr(len(p), off, cerr)
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return base.ErrWouldBlock
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		// A kernel before 4.14, or a filesystem without it: read as
		// before, on the caller's goroutine, from now on.
		r.noNowait.Store(true)
		return r.readAt(p, off)
	case err != nil:
		return r.readErr(len(p), off, err)
	case done < len(p):
		return r.corrupt(off, "short read of %d bytes (got %d)", len(p), done)
	}
	return nil
}
