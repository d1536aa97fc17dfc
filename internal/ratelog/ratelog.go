// Package ratelog lets one log line of a kind through per interval and
// counts the lines it holds back, so that a condition that repeats (a flood
// of wrong passwords, writes stalling again and again, a raft library
// reporting the same failure hundreds of times a second) cannot flood the
// log, while the line that does get through says how many it stands for.
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets one line through per Every. Its zero value with Every set
// is ready; it is safe for concurrent use.
type Limiter struct {
	Every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow reports whether a line may be logged at now, and how many were
// held back since the last one that was.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.Every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}

// Keyed is a Limiter per key (a message format, say): keys must come from
// a bounded set. Its zero value with Every set is ready.
type Keyed struct {
	Every time.Duration

	mu       sync.Mutex
	limiters map[string]*Limiter
}

// Allow is Limiter.Allow for key's lines.
func (k *Keyed) Allow(key string, now time.Time) (ok bool, suppressed int) {
	k.mu.Lock()
	l := k.limiters[key]
	if l == nil {
		if k.limiters == nil {
			k.limiters = make(map[string]*Limiter)
		}
		l = &Limiter{Every: k.Every}
		k.limiters[key] = l
	}
	k.mu.Unlock()
	return l.Allow(now)
}
