package client

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"
)

// pool holds the idle connections and bounds the open ones.
//
// A token is held by every caller between get and put, whether it reuses
// an idle connection or dials a new one. A dial happens only when the idle
// list is empty, and an idle connection only appears when a token holder
// puts one back, so (connections held) + (idle connections) never exceeds
// the token count: at most size connections are open. Idle connections
// are reused most recently used first, so a burst leaves the rest idle long
// enough for the liveness check to cull them if the server closes them.
type pool struct {
	tokens chan struct{} // holds one token per connection in use or being dialed
	dial   func(ctx context.Context, deadline time.Time) (*conn, error)
	// current reports whether an idle connection still fits the client's
	// settings (its password) and its node is not shutting down; one that
	// does not is closed, not reused.
	current func(*conn) bool

	mu     sync.Mutex
	idle   []*conn // most recently used last
	closed bool
	done   chan struct{} // closed by close: wakes callers waiting for a token
}

func (p *pool) init(size int, dial func(context.Context, time.Time) (*conn, error), current func(*conn) bool) {
	p.tokens = make(chan struct{}, size)
	p.done = make(chan struct{})
	p.dial = dial
	p.current = current
}

// get returns an idle connection that still looks alive, or dials one.
func (p *pool) get(ctx context.Context, deadline time.Time) (*conn, error) {
	return p.getOrDial(ctx, deadline, p.dial)
}

// getOrDial is get opening a connection, when it must, with dial instead
// of the pool's own.
func (p *pool) getOrDial(ctx context.Context, deadline time.Time, dial func(context.Context, time.Time) (*conn, error)) (*conn, error) {
	select {
	case <-p.done:
		return nil, ErrClosed // at once, even when every connection is busy
	default:
	}
	select {
	case p.tokens <- struct{}{}:
	default:
		// Every connection is busy: wait, but no longer than the call's
		// deadline (Options.Timeout), which a call stuck behind slow
		// requests would otherwise outlive by as long as they take.
		var expired <-chan time.Time
		if !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			expired = t.C
		}
		select {
		case p.tokens <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.done:
			return nil, ErrClosed
		case <-expired:
			return nil, fmt.Errorf("waiting for a free connection (PoolSize): %w", os.ErrDeadlineExceeded)
		}
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.tokens
			return nil, ErrClosed
		}
		var cn *conn
		if k := len(p.idle); k > 0 {
			cn = p.idle[k-1]
			p.idle[k-1] = nil
			p.idle = p.idle[:k-1]
		}
		p.mu.Unlock()
		if cn == nil {
			break
		}
		if p.current(cn) && cn.usable() {
			return cn, nil
		}
		cn.close()
	}
	cn, err := dial(ctx, deadline)
	if err != nil {
		<-p.tokens
		return nil, err
	}
	return cn, nil
}

// put returns cn to the pool after an exchange when ok, and closes it
// otherwise.
func (p *pool) put(cn *conn, ok bool) {
	if ok {
		cn.lastUsed = time.Now()
	}
	p.release(cn, ok)
}

// putUnused returns cn, taken by get but not written to, to the pool as it
// was: its last use, and so whether it is probed before reuse, is unchanged.
func (p *pool) putUnused(cn *conn) { p.release(cn, true) }

// release makes cn idle when ok, and closes it otherwise; either way the
// caller's token is given back.
func (p *pool) release(cn *conn, ok bool) {
	p.mu.Lock()
	if ok && !p.closed {
		p.idle = append(p.idle, cn)
		cn = nil
	}
	p.mu.Unlock()
	if cn != nil {
		cn.close()
	}
	<-p.tokens
}

// suspectIdle has every idle connection probed before its next use,
// however recently it was used: one connection turned out broken, and
// whatever broke it (a server restart, a network failure) may have broken
// the others too, each of which would otherwise fail a request in turn.
func (p *pool) suspectIdle() {
	p.mu.Lock()
	for _, cn := range p.idle {
		cn.suspect = true
	}
	p.mu.Unlock()
}

func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if !p.closed {
		close(p.done)
	}
	p.closed = true
	p.mu.Unlock()
	for _, cn := range idle {
		cn.close()
	}
}
