package lsm

import (
	"errors"
	"syscall"
	"time"

	"github.com/lni/vfs"
)

// A flush or compaction that failed for lack of space waits out its
// backoff (up to a minute) before it tries again: rewriting a 64 MiB
// memtable every second on a disk that is still full would only churn the
// disk. But writes are refused until a flush succeeds, so once an operator
// frees space the job should not sit out the rest of its wait. While it
// waits it therefore looks at the free space of the DB's directory
// (Options.FS.GetDiskUsage: statfs, or GetDiskFreeSpaceEx on Windows) about
// once a second and retries as soon as there is room for what it writes.
//
// spaceProbeEvery is that period; spaceMargin is what a job needs on top
// of its output estimate (the manifest edit, the estimate's error).
const (
	spaceProbeEvery = time.Second
	spaceMargin     = 1 << 20
)

// spaceNeeded is the free space at which a job whose output is estimated
// at n bytes is retried before its backoff ends. An eighth more than the
// estimate because the estimate (memtable arena bytes, compaction input
// bytes) is close to, not above, what a table takes in the worst case
// (incompressible values, few deletions).
func spaceNeeded(n int64) uint64 {
	return uint64(max(n, 0)) + uint64(max(n, 0))/8 + spaceMargin
}

// spaceWatch tells a job that failed for lack of space when there is room
// to retry it.
type spaceWatch struct {
	fs    vfs.FS
	dir   string
	need  uint64
	short bool // a measurement since the failure found less than need
}

// watchSpace returns a watch for a job that failed with err and needs
// about n bytes, or nil when the free space says nothing useful: err is
// not ENOSPC (EDQUOT is a quota, which statfs does not show; any other
// error has nothing to do with space), or the file system cannot be
// measured (MemFS, a platform without statfs): the job then waits out its
// backoff as it always did. It measures once at once, so that the space
// the failed job left (its partial output is removed before the error is
// returned) counts as short and its rise as the operator's doing.
func (d *DB) watchSpace(err error, n int64) *spaceWatch {
	if !errors.Is(err, syscall.ENOSPC) {
		return nil
	}
	du, err := d.opts.FS.GetDiskUsage(d.dirname)
	if err != nil {
		return nil
	}
	need := spaceNeeded(n)
	return &spaceWatch{fs: d.opts.FS, dir: d.dirname, need: need, short: du.AvailBytes < need}
}

// roomAgain measures the free space and reports whether it has reached
// need after a measurement found it short. Both are required so that a
// disk which seems to have room and fails anyway (space taken and given
// back between two measurements, reserved blocks, an estimate that is too
// low) never retries the job more often than its backoff: an early retry
// takes space that was short and is no longer.
func (w *spaceWatch) roomAgain() bool {
	du, err := w.fs.GetDiskUsage(w.dir)
	if err != nil {
		return false // the backoff's timer still retries
	}
	if du.AvailBytes < w.need {
		w.short = true
		return false
	}
	return w.short
}

// retryWait waits wait before a failed background job is retried, or
// less: when wake is signalled (nil: never), or when w (nil: no watch)
// finds room for the job. It reports false when the DB closes.
func (d *DB) retryWait(wait time.Duration, w *spaceWatch, wake <-chan struct{}) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	var probe <-chan time.Time
	if w != nil {
		tk := time.NewTicker(spaceProbeEvery)
		defer tk.Stop()
		probe = tk.C
	}
	for {
		select {
		case <-d.closeCh:
			return false
		case <-wake:
			return true
		case <-t.C:
			return true
		case <-probe:
			if w.roomAgain() {
				return true
			}
		}
	}
}
