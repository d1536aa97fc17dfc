package bench

import (
	"runtime"
	"time"
)

// pacerMaxRate is the highest open-loop rate the pacer serves. Above it
// replies arrive often enough that the runtime checks its timers every few
// microseconds anyway, and a sleep per request would cost more than it buys.
const pacerMaxRate = 50_000

// pacer wakes open-loop clients on time. A client waiting for its next
// request to fall due sleeps in a read with a deadline, and Go fires
// deadlines from its network poller, which sleeps in whole milliseconds
// when the process is idle: at a few thousand requests per second every
// request would go out up to a millisecond late, and open-loop latency
// rightly counts that lateness. The pacer sleeps with nanosleep instead
// (late by the kernel's timer slack, ~50µs, never early) and at each due
// time wakes the client that owns the request, with a read deadline in
// the past, if it is waiting idle. The clients' own deadlines stay as the
// fallback.
//
// The schedule is global: request j is due at j/rate and belongs to client
// j mod C, which is exactly the per-client schedule the clients follow.
type pacer struct {
	r    *runner
	ph   phase
	stop chan struct{} // closed by runPhase once every client has finished
}

func (p *pacer) run() {
	period := 1e9 / p.r.cfg.Rate
	clients := p.r.clients
	for j := int64(0); ; j++ {
		due := int64(float64(j) * period)
		if p.ph.endNs > 0 && due >= p.ph.endNs {
			return
		}
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			if p.r.aborted.Load() {
				return
			}
			wait := time.Duration(due - int64(time.Since(p.r.base)))
			if wait <= 0 {
				break
			}
			preciseSleep(min(wait, 10*time.Millisecond)) // wake now and then to notice the end
		}
		c := clients[j%int64(len(clients))]
		if c.idle.Load() {
			if conn := c.conn.Load(); conn != nil {
				_ = (*conn).SetReadDeadline(pastDeadline)
				// The woken client is queued on this goroutine's P, which
				// the next sleep would hold in a system call until the
				// runtime's monitor takes it back (up to 10ms): run it first.
				runtime.Gosched()
			}
		}
	}
}

// pastDeadline makes a blocked read return at once.
var pastDeadline = time.Unix(1, 0)
