package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Errors Run returns; the report still describes what was measured when
// the run ended early.
var (
	// ErrUnreachable: a server could not be connected to, or did not answer
	// PING (or AUTH), before the run started.
	ErrUnreachable = errors.New("server unreachable")
	// ErrTooManyErrors: failed requests exceeded Config.MaxErrors.
	ErrTooManyErrors = errors.New("too many errors")
)

const (
	// prefillDepth is the pipeline depth of the prefill, which only needs
	// to be fast.
	prefillDepth = 64
	// dialParallel bounds concurrent dials, so 512 clients do not overflow
	// the server's accept backlog (a dropped SYN costs a second).
	dialParallel = 64
	// firstErrorsKept is how many error messages the report quotes.
	firstErrorsKept = 5
)

// runner is the state shared by the clients of one run. Configuration and
// the key and value generators are read-only; everything the clients
// update concurrently is atomic.
type runner struct {
	cfg        Config
	log        *slog.Logger
	keys       *keySpace
	values     *valuePool
	clients    []*client
	intervalNs float64 // open loop: spacing of one client's requests

	base time.Time // start of the current phase; set before clients start

	remaining  atomic.Int64 // -n: measured requests not yet claimed
	claimChunk int64        // -n: how many a client claims at a time
	errCount   atomic.Int64
	aborted    atomic.Bool
	done       chan struct{} // closed on abort

	mu        sync.Mutex
	abortErr  error
	firstErrs []string
	// reconnectErrs counts the failed reconnects among errCount.
	reconnectErrs atomic.Int64

	ivs  chan *interval // clients to collector
	free chan *interval // collector back to clients
}

// Run performs the run cfg describes and returns its result. The error is
// ErrUnreachable (with no result) when a server cannot be reached,
// ErrTooManyErrors or the context's error when the run stopped early (with
// the result so far), or a configuration error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kvbench config: %w", err)
	}
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	if err := r.connectAll(); err != nil {
		return nil, err
	}
	defer r.closeAll()
	stop := context.AfterFunc(ctx, func() { r.abort(context.Cause(ctx)) })
	defer stop()

	res := &Result{Schema: Schema, Tool: cfg.ToolVersion, Start: started.UTC().Truncate(time.Millisecond)}
	if cfg.Prefill {
		col := r.runPhase(phase{prefill: true, depth: prefillDepth})
		res.Prefill = &PrefillStats{Keys: cfg.Keys, Seconds: col.elapsed.Seconds(), Interrupted: r.aborted.Load()}
		r.log.Info("prefill done", "keys", cfg.Keys, "elapsed", col.elapsed)
	}
	if r.aborted.Load() {
		r.fillResult(res, nil, cpuSample{}, cpuSample{})
		return res, r.stopErr()
	}
	if cfg.Total > 0 {
		r.remaining.Store(cfg.Total)
	}
	cpu0 := sampleCPU()
	ph := phase{
		depth:    cfg.Pipeline,
		warmupNs: int64(cfg.Warmup),
		openLoop: cfg.Rate > 0,
	}
	if cfg.Duration > 0 {
		ph.endNs = int64(cfg.Warmup + cfg.Duration)
	}
	col := r.runPhase(ph)
	cpu1 := sampleCPU()
	r.fillResult(res, col, cpu0, cpu1)
	return res, r.stopErr()
}

func newRunner(cfg Config) (*runner, error) {
	keys, err := newKeySpace(cfg.Keys, cfg.Dist, cfg.ZipfS)
	if err != nil {
		return nil, fmt.Errorf("kvbench config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &runner{
		cfg:    cfg,
		log:    log,
		keys:   keys,
		values: newValuePool(cfg.ValueSize, cfg.Seed),
		done:   make(chan struct{}),
	}
	if cfg.Rate > 0 {
		r.intervalNs = float64(cfg.Clients) * 1e9 / cfg.Rate
	}
	// Clients claim -n requests a few at a time, to keep the shared count
	// cold, but never so many that some clients get none (the run would
	// have fewer connections busy than asked) or, in open loop, that the
	// last requests are left to a few clients, each sending at 1/clients
	// of the rate (the run's end would stretch and its rate fall short).
	r.claimChunk = 1
	if cfg.Rate == 0 {
		r.claimChunk = min(max(cfg.Total/(16*int64(cfg.Clients)), 1), 16)
	}
	r.clients = make([]*client, cfg.Clients)
	for i := range r.clients {
		r.clients[i] = newClient(r, i)
	}
	return r, nil
}

// connectAll connects every client, a bounded number at a time. The first
// failure stops it: a server that refuses one of N connections is not
// benchmarkable either.
func (r *runner) connectAll() error {
	// One connection per address first, so an unreachable server costs
	// one dial and says which address it was.
	probed := make(map[string]bool)
	for _, c := range r.clients {
		if probed[c.addr] {
			continue
		}
		probed[c.addr] = true
		if err := r.connectClient(c); err != nil {
			r.closeAll()
			return err
		}
	}
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for _, c := range r.clients {
		if c.conn.Load() != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.connectClient(c); err != nil {
				once.Do(func() { firstErr = err })
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		r.closeAll()
	}
	return firstErr
}

func (r *runner) connectClient(c *client) error {
	conn, err := c.connect()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	c.conn.Store(&conn)
	return nil
}

func (r *runner) closeAll() {
	for _, c := range r.clients {
		if p := c.conn.Load(); p != nil {
			_ = (*p).Close()
		}
	}
}

// runPhase runs every client through ph and returns the collector holding
// the per-second data.
func (r *runner) runPhase(ph phase) *collector {
	r.ivs = make(chan *interval, 4*len(r.clients))
	r.free = make(chan *interval, 4*len(r.clients))
	r.base = time.Now()
	col := newCollector(r, ph)
	colDone := make(chan struct{})
	go func() {
		defer close(colDone)
		col.run()
	}()
	for _, c := range r.clients {
		c.startPhase(ph)
	}
	var pacerDone chan struct{}
	stopPacer := make(chan struct{})
	if ph.openLoop && r.cfg.Rate <= pacerMaxRate {
		pacerDone = make(chan struct{})
		p := &pacer{r: r, ph: ph, stop: stopPacer}
		go func() {
			defer close(pacerDone)
			p.run()
		}()
	}
	var wg sync.WaitGroup
	for _, c := range r.clients {
		wg.Go(c.run)
	}
	wg.Wait()
	col.elapsed = time.Since(r.base)
	close(stopPacer)
	if pacerDone != nil {
		<-pacerDone
	}
	close(r.ivs)
	<-colDone
	return col
}

// claim takes up to n of the remaining -n requests.
func (r *runner) claim(n int64) int64 {
	for {
		cur := r.remaining.Load()
		if cur <= 0 {
			return 0
		}
		take := min(cur, n)
		if r.remaining.CompareAndSwap(cur, cur-take) {
			if cur == take && r.cfg.Rate > 0 {
				r.wakeIdle() // open-loop clients waiting for their next due time stop now
			}
			return take
		}
	}
}

// wakeIdle wakes the open-loop clients blocked until their next request is
// due, with a read deadline in the past, as the pacer does.
func (r *runner) wakeIdle() {
	for _, c := range r.clients {
		if c.idle.Load() {
			if p := c.conn.Load(); p != nil {
				_ = (*p).SetReadDeadline(pastDeadline)
			}
		}
	}
}

// addReconnectError counts a failed attempt to reconnect: not a request,
// so no operation's row has it, but a dead server must still end the run
// once the errors exceed the limit.
func (r *runner) addReconnectError(msg string) {
	r.reconnectErrs.Add(1)
	r.addError(msg)
}

// addError counts one failed request and stops the run when the errors
// exceed the limit.
func (r *runner) addError(msg string) {
	n := r.errCount.Add(1)
	r.mu.Lock()
	if len(r.firstErrs) < firstErrorsKept {
		r.firstErrs = append(r.firstErrs, msg)
	}
	r.mu.Unlock()
	if n > r.cfg.MaxErrors {
		r.abort(ErrTooManyErrors) // described by stopErr, once the count is final
	}
}

// stopErr is why the run stopped early, nil if it did not; it is called
// once the clients have stopped. Requests that fail while the clients stop
// are counted too, so ErrTooManyErrors is given the final count, the one
// the report shows, rather than the count that crossed the limit.
func (r *runner) stopErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.abortErr != ErrTooManyErrors {
		return r.abortErr
	}
	return fmt.Errorf("%w: %d errors exceed -max-errors %d (first: %s)",
		ErrTooManyErrors, r.errCount.Load(), r.cfg.MaxErrors, r.firstErrs[0])
}

// abort stops every client now; requests in flight are not counted.
func (r *runner) abort(err error) {
	if !r.aborted.CompareAndSwap(false, true) {
		return
	}
	r.mu.Lock()
	r.abortErr = err
	r.mu.Unlock()
	close(r.done)
	// Clients set their own deadlines and then check aborted before every
	// read, so a deadline in the past set after aborted is stored always
	// wakes them.
	for _, c := range r.clients {
		if p := c.conn.Load(); p != nil {
			_ = (*p).SetDeadline(pastDeadline)
		}
	}
}

func (r *runner) newInterval() *interval {
	select {
	case iv := <-r.free:
		return iv
	default:
		return &interval{sec: -1, hist: newPacked()}
	}
}

// procs is the number of CPUs kvbench may use.
func procs() int { return runtime.GOMAXPROCS(0) }
