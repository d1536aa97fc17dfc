package lsm

import (
	"log/slog"
	"time"
)

// retryBackoff spaces the retries of a failing background job (a flush, a
// compaction) and with them its error lines: waits double from a second
// up to a minute, so a full disk costs a log line a minute, not one a
// second forever. The first success after failures is logged too. A job
// that failed for lack of space is retried sooner once the free space
// covers it (retryWait, space.go).
type retryBackoff struct {
	wait     time.Duration
	failures int
	// limit, when set, is the longest wait instead of maxRetryWait.
	limit time.Duration
}

const (
	minRetryWait = time.Second
	maxRetryWait = time.Minute
	// maxRecoveryRetryWait is the longest wait between attempts of a DB
	// that Open left recovering (a full disk): it serves no write until
	// one succeeds, so space freed must be noticed within seconds.
	maxRecoveryRetryWait = 5 * time.Second
)

// after records the outcome of an attempt and reports whether the caller
// must wait r.wait before the next one.
func (r *retryBackoff) after(err error, log *slog.Logger, failMsg, recoverMsg string, attrs ...any) bool {
	if err == nil {
		if r.failures > 0 {
			log.Info(recoverMsg, append(attrs, "failures", r.failures)...)
		}
		*r = retryBackoff{}
		return false
	}
	r.failures++
	limit := maxRetryWait
	if r.limit > 0 {
		limit = r.limit
	}
	r.wait = min(max(2*r.wait, minRetryWait), limit)
	log.Error(failMsg, append(attrs, "err", err, "failures", r.failures, "next_retry", r.wait)...)
	return true
}
