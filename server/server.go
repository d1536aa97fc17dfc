package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/internal/ratelog"
	"github.com/kvstore/kv/store"
)

// maxPending bounds the replies a connection may have outstanding before
// the server stops parsing its input (back-pressure towards the client).
const maxPending = 4096

// maxPendingWriteBytes bounds the keys and values of a connection's writes
// waiting for the store: past it, the connection parks until they drain.
const maxPendingWriteBytes = 64 << 20

// Info is static information the server reports (INFO, HELLO, logs).
type Info struct {
	Version string
	Mode    string // "standalone" or "cluster"
	DataDir string
	Sync    string
}

// Server is a running kvserver front end. Create it with New, run it with
// Serve, stop it with Shutdown.
type Server struct {
	gnet.BuiltinEventEngine

	cfg     conf.Server
	store   store.Store
	sync    store.SyncReader // non-nil when store reads never wait
	info    Info
	log     *slog.Logger
	limits  codec.Limits
	metrics *Metrics
	cursors *cursorTable
	// groups holds finished write groups that no connection keeps: those
	// whose reply their completion wrote itself (tryDirect), for any
	// connection's next group (writeOne).
	groups  sync.Pool
	authLog *ratelog.Limiter // closes after wrong passwords (authFailed)
	// authTimeout is authTimeout, in nanoseconds (tests shorten it).
	authTimeout atomic.Int64
	// tlsStall is tlsWriteStall, in nanoseconds (tests shorten it).
	tlsStall atomic.Int64
	started  time.Time

	// The listener and the event loops, set by Serve; Shutdown closes the
	// one and stops the other, and then closes stopped.
	engMu    sync.Mutex
	ln       net.Listener
	tln      net.Listener // server.tls_listen's, or nil
	cli      *gnet.Client
	shutdown bool
	booted   chan struct{}
	accepted chan struct{} // closed when the accept loop has returned
	stopped  chan struct{}
	stopOnce sync.Once
	stopErr  error

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loop
	order   []gnet.EventLoop // the loops in the order first seen (pickLoop)
	turn    atomic.Uint64
	// discoverMu serializes handovers until every loop has been seen.
	discoverMu sync.Mutex

	pipeTable, respTable                                    commandTable
	cmdGet, cmdPut, cmdDelete, cmdRange, cmdBatch, cmdAdmin int // latency series

	nextConnID atomic.Uint64
	conns      atomic.Int64
	inflight   atomic.Int64 // replies handed to the store and not yet delivered
	offers     atomic.Int64 // direct-reply offers out (offerDirect)
	input      atomic.Int64 // unparsed input of all connections (chargeInput)
	output     atomic.Int64 // unsent output of all connections (chargeOutput)
	// outDropping is the part of output held by connections closed for
	// output that gnet has not closed yet (dropOutput).
	outDropping atomic.Int64
	writing     atomic.Int64   // bytes of writes handed to the store and not yet acknowledged (overWriteBudget)
	enrolling   atomic.Int64   // accepted connections being handed to a loop (acceptLoop)
	bridges     sync.WaitGroup // TLS connections' bridges (bridge)
	// bridgeMu orders starting a bridge (enrollTLS) before Shutdown's wait
	// for them; bridgesDone says that wait has begun.
	bridgeMu    sync.Mutex
	bridgesDone bool
	// fdMu keeps handovers (read) from seeing the accept loop's reserve
	// descriptor freed for a moment (write; see reserve.refuseOne).
	fdMu     sync.RWMutex
	draining atomic.Bool
	// drained is cancelled by Shutdown: TLS handshakes under way stop.
	drained    context.Context
	stopDrain  context.CancelFunc
	totalConns atomic.Int64
	rejected   atomic.Int64
}

// New returns a server for store st. m may be nil (unregistered metrics).
func New(cfg conf.Server, st store.Store, info Info, logger *slog.Logger, m *Metrics) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Server{
		cfg:      cfg,
		store:    st,
		info:     info,
		log:      logger,
		metrics:  m,
		cursors:  newCursorTable(64<<10, 32<<20),
		authLog:  newAuthLog(),
		started:  time.Now(),
		booted:   make(chan struct{}),
		stopped:  make(chan struct{}),
		accepted: make(chan struct{}),
		loops:    make(map[gnet.EventLoop]*loop),
		limits: codec.Limits{
			MaxFrame: int(cfg.MaxFrameBytes),
			MaxArgs:  cfg.MaxArgs,
			MaxBulk:  int(cfg.MaxFrameBytes),
		},
	}
	s.drained, s.stopDrain = context.WithCancel(context.Background())
	s.sync, _ = st.(store.SyncReader)
	s.pipeTable = s.buildTable("pipe", s.pipeCommands())
	s.respTable = s.buildTable("resp", s.respCommands())
	s.cmdGet = m.bindOp("get")
	s.cmdPut = m.bindOp("put")
	s.cmdDelete = m.bindOp("delete")
	s.cmdRange = m.bindOp("range")
	s.cmdBatch = m.bindOp("batch")
	s.cmdAdmin = m.bindOp("admin")
	m.loops = s.loopStats
	s.authTimeout.Store(int64(authTimeout))
	s.tlsStall.Store(int64(tlsWriteStall))
	return s
}

func (s *Server) buildTable(proto string, cmds []*command) commandTable {
	t := make(commandTable, len(cmds))
	for _, c := range cmds {
		c.id = s.metrics.bindCommand(proto, c.name)
		t[c.name] = c
	}
	return t
}

// EventLoops returns how many event loops a server with cfg runs:
// server.event_loops, or the number of CPUs when it is 0.
func EventLoops(cfg conf.Server) int {
	if cfg.EventLoops > 0 {
		return cfg.EventLoops
	}
	return runtime.NumCPU()
}

// Serve listens on cfg.Listen (and cfg.TLSListen) and serves until
// Shutdown; it blocks.
func (s *Server) Serve() error {
	var tlsCfg *tls.Config
	if s.cfg.TLSListen != "" {
		var err error
		if tlsCfg, err = TLSConfig(s.cfg, "client port", s.log); err != nil {
			return err
		}
	}
	ln, err := net.Listen(listenNetwork(s.cfg.Listen), s.cfg.Listen) // SO_REUSEADDR, backlog somaxconn
	if err != nil {
		return fmt.Errorf("serve %s: %w", s.cfg.Listen, err)
	}
	var tln net.Listener
	if tlsCfg != nil {
		if tln, err = net.Listen(listenNetwork(s.cfg.TLSListen), s.cfg.TLSListen); err != nil {
			ln.Close()
			return fmt.Errorf("serve TLS %s: %w", s.cfg.TLSListen, err)
		}
	}
	closeListeners := func() {
		ln.Close()
		if tln != nil {
			tln.Close()
		}
	}
	cli, err := gnet.NewClient(s,
		gnet.WithNumEventLoop(EventLoops(s.cfg)),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithTicker(true),
		gnet.WithLogger(gnetLogger{s.log}),
	)
	if err == nil {
		err = cli.Start()
	}
	if err != nil {
		closeListeners()
		return fmt.Errorf("serve %s: start event loops: %w", s.cfg.Listen, err)
	}
	s.engMu.Lock()
	if s.shutdown {
		// Shutdown ran before the loops existed: nothing to wait for.
		s.engMu.Unlock()
		closeListeners()
		return cli.Stop()
	}
	s.ln, s.tln, s.cli = ln, tln, cli
	s.engMu.Unlock()
	close(s.booted)
	// s.accepted is closed once the accept loops have returned and no
	// connection is being handed over (a handover to a loop that is stuck
	// may never end: Serve does not wait for it). The loops count in wg
	// themselves, so that it cannot reach zero while one still adds.
	var wg sync.WaitGroup
	wg.Add(1)
	if tln != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.acceptLoop(tln, tlsCfg, cli, &wg) }()
	}
	go func() { wg.Wait(); close(s.accepted) }()
	s.acceptLoop(ln, nil, cli, &wg)
	wg.Done()
	<-s.stopped
	return nil
}

// Addr returns the address the server listens on, once it has started.
func (s *Server) Addr() net.Addr {
	s.engMu.Lock()
	defer s.engMu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// TLSAddr returns the address of the TLS port once the server has
// started, or nil when it has none.
func (s *Server) TLSAddr() net.Addr {
	s.engMu.Lock()
	defer s.engMu.Unlock()
	if s.tln == nil {
		return nil
	}
	return s.tln.Addr()
}

// WaitStarted blocks until the listener is up or ctx ends.
func (s *Server) WaitStarted(ctx context.Context) error {
	select {
	case <-s.booted:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops accepting work, waits (until ctx ends) for replies already
// handed to the store to be delivered, then stops the event loops. It does
// not close the store: the caller owns it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.stopDrain()
	s.engMu.Lock()
	s.shutdown = true
	ln, tln, cli := s.ln, s.tln, s.cli
	s.engMu.Unlock()
	if cli == nil {
		return nil // Serve has not started the loops; it will not
	}
	ln.Close()
	if tln != nil {
		tln.Close()
	}
	// Connections accepted just before are still being handed to the
	// loops, which must be running to take them (Enroll waits for
	// OnOpen); a loop stuck in a callback must not hold Shutdown past ctx.
	select {
	case <-s.accepted:
	case <-ctx.Done():
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !s.quiet() {
		select {
		case <-ctx.Done():
			s.log.Warn("shutdown: giving up waiting for in-flight requests", "inflight", s.inflight.Load())
			goto stop
		case <-tick.C:
		}
	}
stop:
	// Stopping the loops closes their connections (OnClose). A second
	// Shutdown waits for the first and returns its result.
	s.stopOnce.Do(func() {
		stopped := make(chan error, 1)
		go func() { stopped <- cli.Stop() }()
		select {
		case err := <-stopped:
			if err != nil {
				s.stopErr = fmt.Errorf("stop event loops: %w", err)
			}
		case <-time.After(10 * time.Second):
			s.stopErr = errors.New("stop event loops: still running after 10s")
		}
		// The loops closed their connections: the TLS bridges deliver
		// what was written before and close the clients' connections.
		s.bridgeMu.Lock()
		s.bridgesDone = true
		s.bridgeMu.Unlock()
		if !waitBridges(&s.bridges, time.After(time.Duration(s.tlsStall.Load()))) {
			s.log.Warn("shutdown: TLS connections still closing")
		}
		close(s.stopped)
	})
	return s.stopErr
}

// quiet reports that no request is in flight: no loop callback is running
// that may still hand requests to the store (read first: such a callback
// has counted its requests in inflight by the time it ends), and no reply
// handed to the store is undelivered.
func (s *Server) quiet() bool {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	entered := make([]uint64, len(s.order))
	for i, el := range s.order {
		l := s.loops[el]
		if l.busy.Load() > 0 {
			return false
		}
		entered[i] = l.entered.Load()
	}
	if s.inflight.Load() != 0 {
		return false
	}
	// A callback that started after the first look may have taken the
	// count to zero on its way to starting another request (a read run
	// again): look again.
	for i, el := range s.order {
		if l := s.loops[el]; l.busy.Load() > 0 || l.entered.Load() != entered[i] {
			return false
		}
	}
	return true
}

// OnOpen admits a connection or rejects it when max_connections is reached.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	var peer *tlsPeer
	if h, ok := c.Context().(*handover); ok {
		peer = h.peer
		s.leaveEnrolling(h)
	}
	if s.draining.Load() {
		return []byte(refusedDraining), gnet.Close
	}
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.rejected.Add(1)
		return []byte(refusedFull), gnet.Close
	}
	s.totalConns.Add(1)
	s.metrics.Connections.Inc()
	l := s.loopFor(c.EventLoop())
	now := time.Now().UnixNano()
	cs := &conn{
		tls:    peer,
		c:      c,
		id:     s.nextConnID.Add(1),
		loop:   l,
		authed: s.cfg.RequirePass == "",
		last:   now,
		fd:     c.Fd(),
		opened: now,
	}
	l.conns[cs] = struct{}{}
	c.SetContext(cs)
	return nil, gnet.None
}

// OnClose forgets the connection; completions that arrive later are dropped.
func (s *Server) OnClose(c gnet.Conn, _ error) gnet.Action {
	cs, ok := c.Context().(*conn)
	if !ok {
		return gnet.None
	}
	// gnet closes the fd after this returns: no completion may write to it
	// from now on (tryDirect).
	cs.dmu.Lock()
	cs.gone = true
	cs.dropOffer()
	cs.dmu.Unlock()
	s.uncharge(cs) // whichever way it was closed (closeIdle marks it closed first)
	s.unchargeOutput(cs)
	if cs.watched {
		delete(cs.loop.outHeld, cs)
		cs.watched = false
	}
	if cs.closed {
		return gnet.None
	}
	cs.closed = true
	delete(cs.loop.conns, cs)
	s.conns.Add(-1)
	s.metrics.Connections.Dec()
	return gnet.None
}

// OnTraffic parses and executes every whole request buffered on c.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cs, ok := c.Context().(*conn)
	if !ok || cs.closed {
		return gnet.Close
	}
	// Before the draining check: if it sees draining unset, Shutdown sees
	// this callback (quiet) and waits for the requests it starts.
	cs.loop.enter()
	defer cs.loop.busy.Add(-1)
	cs.loop.retire()
	cs.last = time.Now().UnixNano()
	if s.draining.Load() && !cs.closing {
		// Shutting down: what was read before finishes (a parked
		// connection resumes through deliver, not here), traffic read
		// after is refused, so the in-flight count reaches zero however
		// busy the clients are.
		s.emit(cs, s.appendErr(cs, nil, "", causeShutdown, "server is shutting down"))
		cs.closing = true
	}
	return s.process(cs)
}

// OnTick runs on its own goroutine: it asks every loop to sweep idle
// connections (connection state is only touched on its loop), and to
// retire directly answered requests on a loop with no other traffic.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.loopsMu.Lock()
	loops := make([]*loop, 0, len(s.loops))
	for _, l := range s.loops {
		loops = append(loops, l)
	}
	s.loopsMu.Unlock()
	idle := s.cfg.IdleTimeout.D()
	deadline := time.Now().Add(-idle).UnixNano()
	authGate := s.cfg.RequirePass != ""
	authDeadline := time.Now().Add(-time.Duration(s.authTimeout.Load())).UnixNano()
	for _, l := range loops {
		if idle <= 0 && !l.unsent.Load() && !authGate {
			continue
		}
		_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			l.retire()
			if idle > 0 {
				s.closeIdle(l, deadline)
			}
			if authGate {
				s.closeUnauthenticated(l, authDeadline)
			}
			return nil
		}))
	}
	if idle <= 0 {
		return time.Second, gnet.None
	}
	return min(max(idle/4, 10*time.Millisecond), time.Second), gnet.None
}

// closeIdle closes l's connections silent since deadline (unix nanos) with
// no reply owed. It runs on l.
func (s *Server) closeIdle(l *loop, deadline int64) {
	for cs := range l.conns {
		if cs.last < deadline && cs.q.len() == 0 {
			s.log.Debug("closing idle connection", "conn", cs.id, "remote", cs.remoteAddr())
			s.dropConn(l, cs)
		}
	}
}

// authTimeout is how long a connection may stay unauthenticated while
// requirepass is set: idle_timeout (off by default) counts any traffic,
// so clients without the password trickling a byte a second could hold
// every max_connections slot for ever.
const authTimeout = 10 * time.Second

// closeUnauthenticated closes l's connections opened before deadline (unix
// nanos) that have not authenticated. It runs on l.
func (s *Server) closeUnauthenticated(l *loop, deadline int64) {
	for cs := range l.conns {
		if !cs.authed && cs.opened < deadline {
			s.log.Debug("closing connection that did not authenticate in time", "conn", cs.id, "remote", cs.remoteAddr())
			s.dropConn(l, cs)
		}
	}
}

// dropConn closes cs at once, on its loop l.
func (s *Server) dropConn(l *loop, cs *conn) {
	cs.closed = true
	delete(l.conns, cs)
	s.conns.Add(-1)
	s.metrics.Connections.Dec()
	_ = cs.c.Close()
}

func (s *Server) loopFor(el gnet.EventLoop) *loop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	l, ok := s.loops[el]
	if !ok {
		l = &loop{s: s, el: el, conns: make(map[*conn]struct{}), stats: s.metrics.newLoopStats()}
		s.loops[el] = l
		s.order = append(s.order, el)
	}
	return l
}

// pickLoop is the loop a new connection goes to, in turn, or nil while
// some loop has had no connection yet (gnet.Client.Enroll then picks the
// loop with the fewest, which is one of those). gnet's own choice counts
// only connections a loop has opened: a loop stuck in a callback, with
// connections waiting to be opened, looked the least loaded and got every
// new one.
func (s *Server) pickLoop() gnet.EventLoop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if len(s.order) < EventLoops(s.cfg) {
		return nil
	}
	return s.order[s.turn.Add(1)%uint64(len(s.order))]
}

// loopsSeen reports whether every loop has had a connection.
func (s *Server) loopsSeen() bool {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	return len(s.order) >= EventLoops(s.cfg)
}

// loopStats returns every loop's counters (for scrapes and INFO).
func (s *Server) loopStats() []*loopStats {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	out := make([]*loopStats, 0, len(s.loops))
	for _, l := range s.loops {
		out = append(out, l.stats)
	}
	return out
}

// gnetLogger routes gnet's own log lines into slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
