package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors Run returns; the report still describes what was measured when
// the run ended early.
var (
	// ErrUnreachable: a server could not be connected to, or did not answer
	// PING, before the run started.
	ErrUnreachable = errors.New("server unreachable")
	// ErrAuth: a server refused Config.Password, or wanted a password and
	// none was set, before the run started.
	ErrAuth = errors.New("authentication failed")
	// ErrOutOfFiles: kvbench could not open its connections because the
	// process (or the system) ran out of file descriptors: a local limit,
	// not the server's.
	ErrOutOfFiles = errors.New("out of file descriptors")
	// ErrTooManyErrors: failed requests exceeded Config.MaxErrors.
	ErrTooManyErrors = errors.New("too many errors")
	// ErrNothingMeasured: the run ended without a single measured request
	// answered or failed, so every figure of the report is zero.
	ErrNothingMeasured = errors.New("no request was measured")
)

const (
	// prefillDepth is the pipeline depth of the prefill, which only needs
	// to be fast.
	prefillDepth = 64
	// dialParallel bounds concurrent dials, so 512 clients do not overflow
	// the server's accept backlog (a dropped SYN costs a second).
	dialParallel = 64
	// firstErrorsKept is how many distinct error messages the report
	// quotes.
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
	// stopped is canceled on abort; it wakes clients waiting to reconnect
	// and cuts short their dials and handshakes.
	stopped context.Context
	stopAll context.CancelFunc

	mu       sync.Mutex
	abortErr error
	// firstErrs are the first distinct error messages, in the order they
	// first came, and firstErrsN how many errors had each: a dead server
	// fails every request with the same message, which would otherwise
	// fill the list.
	firstErrs  []string
	firstErrsN []int64
	// reconnectErrs counts the failed reconnects among errCount.
	reconnectErrs atomic.Int64

	ivs  chan *interval // clients to collector
	free chan *interval // collector back to clients

	// cpuStart is the process's CPU time when the measured phase's
	// warmup ended; nil until then.
	cpuStart atomic.Pointer[cpuSample]

	// route, when the run is routed, is where each shard's leader is; a
	// refresher replaces it now and then, and clients follow. shards[i]
	// is the shard client i works on.
	route      atomic.Pointer[routeTable]
	shards     []uint64
	routeEvery time.Duration // how often refreshRoute reads the leaders
}

// Run performs the run cfg describes and returns its result. The error is
// ErrUnreachable, ErrAuth or ErrOutOfFiles (with no result) when the run
// could not start; ErrTooManyErrors, the context's error, or ErrUnreachable
// (a server that took no new connection for Timeout in a phase with no
// time limit: the prefill, or a run with Total alone) when the run
// stopped early (with the result so far); ErrNothingMeasured (with the
// result) when it measured no request at all; or a configuration error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kvbench config: %w", err)
	}
	leaders, route, routeErr := findLeaders(ctx, &cfg)
	if leaders != nil {
		defer leaders.close()
	}
	r, err := newRunner(cfg, route)
	if err != nil {
		return nil, err
	}
	if routeErr != nil {
		// A server that cannot say who leads (standalone, older, down)
		// is run unrouted: routing saves a hop, it is not needed.
		r.log.Warn("not routing to shard leaders", "err", routeErr)
	}
	defer r.stopAll()
	started := time.Now()
	// Registered before the connections are made: an interrupt while they
	// are (a server that takes connections but does not answer PING) used
	// to wait for the dials and handshakes to time out.
	stop := context.AfterFunc(ctx, func() { r.abort(context.Cause(ctx)) })
	defer stop()
	if err := r.connectAll(); err != nil {
		if r.aborted.Load() {
			return nil, r.stopErr() // why the dials failed
		}
		return nil, err
	}
	defer r.closeAll()
	if route != nil {
		defer r.startRefresh(leaders)()
	}

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
	// A run that stopped before its warmup ended has no CPU start: its
	// CPU use is not measured, rather than measured over the warmup.
	var cpu0 cpuSample
	if p := r.cpuStart.Load(); p != nil {
		cpu0 = *p
	}
	r.fillResult(res, col, cpu0, cpu1)
	if err := r.stopErr(); err != nil {
		return res, err
	}
	if res.All.Count == 0 && res.All.Errors == 0 {
		// All zeros look like a result; they are the absence of one.
		return res, ErrNothingMeasured // the report's warning says more
	}
	return res, nil
}

// newRunner prepares a run; route, when not nil, makes it routed.
func newRunner(cfg Config, route *routeTable) (*runner, error) {
	keys, err := newKeySpace(cfg.Keys, cfg.Dist, cfg.ZipfS)
	if err != nil {
		return nil, fmt.Errorf("kvbench config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &runner{
		cfg:        cfg,
		log:        log,
		keys:       keys,
		values:     newValuePool(cfg.ValueSize, cfg.Seed),
		routeEvery: routeRefresh,
	}
	if route != nil {
		r.route.Store(route)
		r.shards = assignShards(keys, route.shards, cfg.Clients, cfg.Seed)
	}
	r.stopped, r.stopAll = context.WithCancel(context.Background())
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
	switch {
	case err == nil:
		c.conn.Store(&conn)
		return nil
	case errors.Is(err, ErrAuth):
		return err
	}
	// Running out of file descriptors is kvbench's problem, not the
	// server's: saying "unreachable" sent people to look at the server.
	switch process, system := outOfFiles(err); {
	case process:
		limit := ""
		if n, ok := openFileLimit(); ok {
			limit = fmt.Sprintf(" of %d", n)
		}
		return fmt.Errorf("%w: -clients %d needs a file descriptor per connection, beyond this process's limit%s (a local limit, not the server's: raise it with ulimit -n, or lower -clients): %w",
			ErrOutOfFiles, r.cfg.Clients, limit, err)
	case system:
		return fmt.Errorf("%w: the system's open-file table is full (a local limit, not the server's: lower -clients): %w",
			ErrOutOfFiles, err)
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

func (r *runner) closeAll() {
	for _, c := range r.clients {
		if p := c.conn.Load(); p != nil {
			_ = (*p).Close()
		}
	}
}

// startRefresh runs refreshRoute(src) on its own goroutine; the returned
// func stops the run (stopAll) and waits for that goroutine to end.
func (r *runner) startRefresh(src *leaderSource) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.refreshRoute(src)
	}()
	return func() {
		r.stopAll()
		<-done
	}
}

// refreshRoute reads the shard leaders every routeEvery until the run
// stops. A failed read keeps the table: requests sent by it are forwarded
// by whichever node gets them.
func (r *runner) refreshRoute(src *leaderSource) {
	t := time.NewTicker(r.routeEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stopped.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(r.stopped, r.cfg.Timeout)
		table, err := src.table(ctx)
		cancel()
		if err != nil || table == nil {
			r.log.Debug("shard leaders not refreshed", "err", err)
			continue
		}
		r.route.Store(table)
	}
}

// runPhase runs every client through ph and returns the collector holding
// the per-second data.
func (r *runner) runPhase(ph phase) *collector {
	r.ivs = make(chan *interval, 4*len(r.clients))
	r.free = make(chan *interval, 4*len(r.clients))
	r.base = time.Now()
	if !ph.prefill {
		// The client CPU figure is for the measured time, which starts
		// when the warmup ends, not when the phase does.
		r.cpuStart.Store(nil)
		markStart := func() {
			s := sampleCPU()
			r.cpuStart.Store(&s)
		}
		if ph.warmupNs <= 0 {
			markStart()
		} else {
			t := time.AfterFunc(time.Until(r.base.Add(time.Duration(ph.warmupNs))), markStart)
			defer t.Stop()
		}
	}
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
	if i := slices.Index(r.firstErrs, msg); i >= 0 {
		r.firstErrsN[i]++
	} else if len(r.firstErrs) < firstErrorsKept {
		r.firstErrs = append(r.firstErrs, msg)
		r.firstErrsN = append(r.firstErrsN, 1)
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
	hint := ""
	if isNoAuth(r.firstErrs[0]) {
		// kvserver answers PING without a password, so a missing -a shows
		// only once the requests fail.
		hint = "; the server wants a password: give it with -a"
	}
	return fmt.Errorf("%w: %d errors exceed -max-errors %d (first: %s%s)",
		ErrTooManyErrors, r.errCount.Load(), r.cfg.MaxErrors, r.firstErrs[0], hint)
}

// abort stops every client now; requests in flight are not counted.
func (r *runner) abort(err error) {
	if !r.aborted.CompareAndSwap(false, true) {
		return
	}
	r.mu.Lock()
	r.abortErr = err
	r.mu.Unlock()
	r.stopAll()
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
