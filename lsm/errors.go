package lsm

import (
	"errors"
	"syscall"

	"github.com/kvstore/kv/lsm/internal/base"
)

var (
	// ErrNotFound is returned by Get for a key that is absent.
	ErrNotFound = errors.New("not found")
	// ErrCorruption is wrapped by errors that report damaged files.
	ErrCorruption = base.ErrCorruption
	// ErrDamagedWAL is wrapped, with ErrCorruption, by Open's error for a
	// WAL with a damaged record that is not a torn tail; Options.
	// RecoverDamagedWAL opens such a DB.
	ErrDamagedWAL = errors.New("lsm: damaged WAL")
	// ErrNewerFormat is wrapped by Open's error for a directory written by
	// a build with a newer on-disk format (see format.go).
	ErrNewerFormat = errors.New("lsm: data written by a newer version")
	// ErrOutcomeUnknown is wrapped by the error of a write whose WAL write
	// or sync failed: its record may have reached the disk anyway (a failed
	// fsync says nothing of which pages did), so it may be applied after a
	// restart. Writes refused later, once writes are disabled, were not.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrClosed is returned by operations on a closed DB.
	ErrClosed = errors.New("lsm: closed")
	// ErrWouldBlock is returned by GetNoWait when the read would have to
	// wait for the disk.
	ErrWouldBlock = base.ErrWouldBlock
)

// isNoSpace reports whether err is a full disk or quota: a condition that
// passes once space is freed, so what meets it is refused and retried
// rather than failed for good.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
