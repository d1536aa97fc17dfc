package bench

import (
	"fmt"
	"io"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// interval is what one client measured in one second of the run. The
// client owns it until it hands it to the collector, at the first
// completion of a later second (or when it stops), so recording takes no
// lock; the collector merges it and hands it back for reuse.
type interval struct {
	sec    int64 // seconds since the warmup ended
	hist   *hdr.PackedHistogram
	counts [numOps]int64
	errs   int64
}

func (iv *interval) empty() bool {
	return iv.hist.TotalCount() == 0 && iv.errs == 0
}

func (iv *interval) reset() {
	iv.sec = -1
	iv.hist.Reset()
	iv.counts = [numOps]int64{}
	iv.errs = 0
}

// second is the merged intervals of every client for one second.
type second struct {
	hist   *hdr.PackedHistogram
	counts [numOps]int64
	errs   int64
}

// collector merges the clients' intervals into per-second totals and
// prints the live progress line. It runs on its own goroutine; only it
// touches its fields until runPhase has waited for it.
type collector struct {
	r       *runner
	ph      phase
	secs    []second
	sofar   *hdr.Histogram // every measured latency received so far, for the live p99
	elapsed time.Duration  // set by runPhase once the clients are done

	lastDone int64
	lastTick time.Time
	drawn    bool // a TTY line is on screen without its newline
}

func newCollector(r *runner, ph phase) *collector {
	c := &collector{r: r, ph: ph, sofar: newHist(), lastTick: r.base}
	for _, cl := range r.clients {
		c.lastDone += cl.live.done.Load() // the counters run on from the prefill
	}
	return c
}

func (c *collector) run() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case iv, ok := <-c.r.ivs:
			if !ok {
				c.endProgress()
				return
			}
			c.absorb(iv)
		case now := <-tick.C:
			c.progress(now)
		}
	}
}

func (c *collector) absorb(iv *interval) {
	for int64(len(c.secs)) <= iv.sec {
		c.secs = append(c.secs, second{})
	}
	s := &c.secs[iv.sec]
	if s.hist == nil {
		s.hist = newPacked()
	}
	s.hist.Merge(iv.hist)
	iv.hist.MergeInto(c.sofar)
	for op, n := range iv.counts {
		s.counts[op] += n
	}
	s.errs += iv.errs
	iv.reset()
	select {
	case c.r.free <- iv:
	default:
	}
}

// tickSlack keeps a tick that lands just after the warmup's end from
// reporting an "overall" rate over a few microseconds.
const tickSlack = 100 * time.Millisecond

// progress prints the live line: elapsed, ops/s in the last second and
// since the warmup, p99 so far, errors.
func (c *collector) progress(now time.Time) {
	w := c.r.cfg.Progress
	if w == nil {
		return
	}
	var done, measured int64
	for _, cl := range c.r.clients {
		done += cl.live.done.Load()
		measured += cl.live.measured.Load()
	}
	dt := now.Sub(c.lastTick).Seconds()
	rateNow := float64(done-c.lastDone) / max(dt, 1e-9)
	c.lastDone, c.lastTick = done, now
	elapsed := now.Sub(c.r.base)
	errs := c.r.errCount.Load()

	var line string
	switch {
	case c.ph.prefill:
		line = fmt.Sprintf("prefill %3.0fs  %s/%s keys  %s ops/s  errors %d",
			elapsed.Seconds(), groupDigits(done), groupDigits(int64(c.r.cfg.Keys)), groupDigits(int64(rateNow)), errs)
	case elapsed < time.Duration(c.ph.warmupNs)+tickSlack:
		line = fmt.Sprintf("warmup  %3.0fs  %s ops/s now  errors %d",
			elapsed.Seconds(), groupDigits(int64(rateNow)), errs)
	default:
		run := elapsed - time.Duration(c.ph.warmupNs)
		overall := float64(measured) / max(run.Seconds(), 1e-9)
		line = fmt.Sprintf("%6.0fs  %s ops/s now  %s ops/s overall  p99 %s  errors %d",
			run.Seconds(), groupDigits(int64(rateNow)), groupDigits(int64(overall)),
			formatLatency(c.sofar.ValueAtQuantile(99)), errs)
	}
	if c.r.cfg.ProgressTTY {
		_, _ = io.WriteString(w, "\r\033[K"+line)
		c.drawn = true
	} else {
		_, _ = io.WriteString(w, line+"\n")
	}
}

func (c *collector) endProgress() {
	if c.drawn {
		_, _ = io.WriteString(c.r.cfg.Progress, "\n")
		c.drawn = false
	}
}
