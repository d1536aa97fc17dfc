// Command kvserver runs a key-value store node: standalone on one LSM
// engine, or a member of a raft cluster. It serves the pipe protocol and
// RESP2 on one port.
//
//	kvserver                      # standalone on 127.0.0.1:8080, data in ./data
//	kvserver -c conf/node1.toml   # settings from a TOML file; flags override it
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/lni/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kvstore/kv/cluster"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/server"
	"github.com/kvstore/kv/store"
)

var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kvserver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kvserver", flag.ContinueOnError)
	var (
		file        = fs.String("c", "", "TOML configuration file (default: built-in standalone settings)")
		listen      = fs.String("listen", "", "client address host:port (overrides server.listen)")
		adminListen = fs.String("admin", "", "admin HTTP address host:port (overrides server.admin_listen; \"off\" disables)")
		dir         = fs.String("dir", "", "data directory (overrides storage.dir)")
		syncMode    = fs.String("sync", "", "always | batch | none (overrides storage.sync)")
		recoverWAL  = fs.Bool("recover-wal", false, "open a data directory whose WAL is damaged by keeping the writes before the damage and dropping the rest (standalone; the dropped WAL files are kept as *.corrupt)")
		showVersion = fs.Bool("version", false, "print the version and exit")
		check       = fs.Bool("check", false, "verify the data directory offline (the server stopped) and exit: every table read whole against its checksums and the manifest, the WAL replayed; exit status 1 on damage")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage is printed
		}
		return err
	}
	if fs.NArg() > 0 {
		// Flag parsing stops at the first argument that is not a flag:
		// without this check `kvserver node1.toml -listen ...` would start
		// a default standalone server, the flags after the file unread.
		return fmt.Errorf("unexpected argument %q (a configuration file is given with -c FILE)", fs.Arg(0))
	}
	if *showVersion {
		fmt.Println("kvserver", version)
		return nil
	}
	var overrides []conf.Override
	override := func(flag, key, value string, set func(*conf.Config)) {
		if value != "" {
			overrides = append(overrides, conf.Override{Source: flag, Key: key, Set: set})
		}
	}
	override("-listen", "server.listen", *listen, func(c *conf.Config) { c.Server.Listen = *listen })
	override("-admin", "server.admin_listen", *adminListen, func(c *conf.Config) {
		c.Server.AdminListen = *adminListen
		if *adminListen == "off" {
			c.Server.AdminListen = ""
		}
	})
	override("-dir", "storage.dir", *dir, func(c *conf.Config) { c.Storage.Dir = *dir })
	override("-sync", "storage.sync", *syncMode, func(c *conf.Config) { c.Storage.Sync = *syncMode })
	var cfg conf.Config
	var err error
	source, configName := *file, *file // what errors name; what the start-up line names
	if *file != "" {
		cfg, err = conf.Load(*file, overrides...)
	} else {
		source, configName = "built-in configuration", "built-in"
		cfg, err = conf.Parse(nil, source, overrides...)
	}
	if err != nil {
		return err
	}
	logger, level, closeLog, err := newLogger(cfg.Log, source)
	if err != nil {
		return err
	}
	defer closeLog()
	if *check {
		return checkData(context.Background(), cfg, os.Stdout, logger)
	}
	// The start-up and stop lines are what an operator looks for first:
	// they pass any level filter.
	milestone := max(slog.LevelInfo, level)

	spareProc(server.EventLoops(cfg.Server))
	memLimit := setMemoryLimit(cfg)

	mode := "standalone"
	if cfg.Cluster.Enabled {
		mode = "cluster"
	}
	syncSource := source
	if *syncMode != "" {
		syncSource = "-sync"
	}
	syncPolicy := reportedSync(cfg, source, syncSource, logger)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if *recoverWAL && cfg.Cluster.Enabled {
		return errors.New("-recover-wal: cluster nodes keep no engine WAL (the raft log is theirs); it applies to standalone mode")
	}
	st, err := openStore(ctx, cfg, *recoverWAL, logger)
	if err != nil {
		return err
	}

	if cfg.Server.MaxConnections, err = connectionBudget(cfg.Server.MaxConnections, cfg.Server, cfg.Storage, cfg.Cluster.Enabled, logger); err != nil {
		st.Close()
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if em, ok := st.(interface{ EngineMetrics() lsm.Metrics }); ok {
		reg.MustRegister(server.NewEngineCollector(em.EngineMetrics))
		go followTableMemory(ctx, memLimit, tableMemoryInterval, em.EngineMetrics)
	}
	if cl, ok := st.(*cluster.Cluster); ok {
		reg.MustRegister(server.NewClusterCollector(cl.Status))
		reg.MustRegister(server.NewRaftLogCollector(func() (server.RaftLogMetrics, bool) {
			m, ok := cl.RaftLogMetrics()
			return server.RaftLogMetrics{Bytes: m.Bytes, Segments: m.Segments, Syncs: m.Syncs, Written: m.Written, EarlySnapshots: m.EarlySnapshots}, ok
		}))
	}
	srv := server.New(cfg.Server, st, server.Info{Version: version, Mode: mode, DataDir: cfg.Storage.Dir, Sync: syncPolicy},
		logger, server.NewMetrics(reg))

	var admin *server.Admin
	if cfg.Server.AdminListen != "" {
		var adminTLS *tls.Config
		if cfg.Server.AdminTLS {
			if adminTLS, err = server.TLSConfig(cfg.Server, "admin", logger); err != nil {
				st.Close()
				return err
			}
		}
		if admin, err = server.StartAdmin(cfg.Server.AdminListen, cfg.Server.RequirePass, adminTLS, st, reg, logger); err != nil {
			st.Close()
			return err
		}
	}

	// Installed before the catch-up wait, so a SIGTERM during it is a
	// graceful stop too.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if sig, stopped := waitCaughtUp(st, sigs, catchUpTimeout(cfg), logger); stopped {
		logger.Info("shutting down", "signal", sig.String())
		if admin != nil {
			_ = admin.Close(context.Background())
		}
		if err := closeWithin(st, storeCloseTimeout); err != nil {
			return fmt.Errorf("close store: %w", err)
		}
		logger.Log(ctx, milestone, "kvserver stopped")
		return nil
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve() }()
	startCtx, cancelStart := context.WithTimeout(ctx, 10*time.Second)
	select {
	case err := <-serveErr:
		cancelStart()
		st.Close()
		return err
	case <-waitStarted(startCtx, srv):
	}
	cancelStart()
	// The signal handler is installed above, before the start-up line,
	// which tells a supervisor or a test that the server is up: a SIGTERM
	// sent on seeing it must find the handler.
	started := []any{"version", version, "config", configName, "listen", cfg.Server.Listen}
	if cfg.Server.TLSListen != "" {
		started = append(started, "tls_listen", cfg.Server.TLSListen)
	}
	started = append(started, "admin", cfg.Server.AdminListen, "dir", cfg.Storage.Dir, "mode", mode, "sync", syncPolicy,
		"memory_limit", conf.ByteSize(memLimit).String())
	logger.Log(ctx, milestone, "kvserver started", started...)
	warnExposed(cfg.Server, logger)

	select {
	case err := <-serveErr:
		// gnet stops its engine by itself on some errors (an accept
		// failing with EMFILE): that is a failure, not a clean exit.
		if err == nil {
			err = errors.New("the event loops stopped on their own (see the log above)")
		}
		logger.Error("kvserver stopped", "err", err)
		st.Close()
		return err
	case sig := <-sigs:
		logger.Info("shutting down", "signal", sig.String())
		go exitOnSecondSignal(sigs, sig, time.Now(), logger, os.Exit)
	}
	handOffLeadership(st, logger)

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(shutdownCtx); err != nil {
		errs = append(errs, err)
	}
	if err := <-serveErr; err != nil {
		errs = append(errs, err)
	}
	if admin != nil {
		_ = admin.Close(shutdownCtx)
	}
	if err := closeWithin(st, storeCloseTimeout); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger.Log(ctx, milestone, "kvserver stopped")
	return nil
}

// leaderTransferer is a store whose node may lead raft shards (a cluster
// node): it can hand them to its peers before it stops.
type leaderTransferer interface {
	TransferLeadership(ctx context.Context) error
}

// handOffTimeout bounds the leadership hand-off at a graceful stop. A
// transfer takes a few raft round trips; one that does not complete
// within an election timeout is tried again with another peer.
const handOffTimeout = 5 * time.Second

// handOffLeadership hands the shards this node leads to its peers before
// it stops serving (cluster mode), so that stopping it costs its shards no
// election: their leaders are in place on the other nodes before this one
// goes. Requests keep being served meanwhile; a hand-off that fails or
// times out is logged, and the stop goes on (the shards then elect new
// leaders, as after a crash).
func handOffLeadership(st store.Store, logger *slog.Logger) {
	lt, ok := st.(leaderTransferer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), handOffTimeout)
	defer cancel()
	if err := lt.TransferLeadership(ctx); err != nil {
		logger.Warn("leadership not handed over before stopping; the other nodes elect new leaders", "err", err)
	}
}

// caughtUpWaiter is a store that can say when this node is ready to serve
// without waiting on its peers (a cluster node whose replicas know their
// leaders and have applied what was committed while it was down).
type caughtUpWaiter interface {
	WaitCaughtUp(ctx context.Context) error
}

// catchUpTimeout bounds the wait for a cluster node to catch up before it
// serves clients: cluster.request_timeout, what a request on it would
// have waited for its shards at most. A node whose shards have no quorum
// (the first of a cluster started one node at a time) then serves anyway,
// as before, answering what it cannot do yet with errors.
func catchUpTimeout(cfg conf.Config) time.Duration {
	return cfg.Cluster.RequestTimeout.D()
}

// waitCaughtUp waits, up to timeout, until st (a cluster node) has caught
// up, before the client port opens: clients that find the port closed
// take another node (the Go client passes over a node that refuses a
// connection), where a restarted node used to take their requests and keep
// them waiting for seconds. A signal ends the wait: stopped reports it.
func waitCaughtUp(st store.Store, sigs <-chan os.Signal, timeout time.Duration, logger *slog.Logger) (sig os.Signal, stopped bool) {
	w, ok := st.(caughtUpWaiter)
	if !ok {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- w.WaitCaughtUp(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			logger.Warn("serving clients before every shard has caught up; requests on those shards wait for their leader", "err", err)
		} else {
			logger.Info("shards caught up; serving clients", "waited", time.Since(start).Round(time.Millisecond))
		}
		return nil, false
	case sig := <-sigs:
		cancel()
		<-done
		return sig, true
	}
}

// storeCloseTimeout bounds closing the store at shutdown: a standalone
// engine flushes its memtables, a cluster node stops its raft engine.
const storeCloseTimeout = time.Minute

// closeWithin closes c, giving up after timeout. A cluster node whose raft
// engine hangs (its raft log's writer blocked on a full disk) never
// finished closing, and the process stayed up until a second signal.
// Giving up is safe: what was acknowledged is durable (the store survives
// kill -9), and the error makes the exit status say it was cut short.
func closeWithin(c io.Closer, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("not finished after %v; exiting without it", timeout)
	}
}

// signalEcho is how soon a repeat of the signal that started the shutdown
// is taken for the same request. GNU timeout sends SIGTERM to its child
// and then to its process group, about 1 ms apart; a person pressing ^C
// twice is far slower.
const signalEcho = 250 * time.Millisecond

// exitOnSecondSignal calls exit(1) on a signal after first, the one that
// started the graceful shutdown at firstAt, so that a shutdown that hangs
// can be cut short; a repeat of first within signalEcho is not one.
func exitOnSecondSignal(sigs <-chan os.Signal, first os.Signal, firstAt time.Time, logger *slog.Logger, exit func(int)) {
	for sig := range sigs {
		if since := time.Since(firstAt); sig == first && since < signalEcho {
			logger.Debug("repeated signal taken as the first", "signal", sig.String(), "after", since)
			continue
		}
		logger.Warn("second signal, exiting at once", "signal", sig.String())
		exit(1)
		return
	}
}

// reportedSync is the sync policy kvserver reports: in its start-up line,
// INFO persistence and CONFIG GET appendfsync. Cluster nodes keep no
// engine WAL (the raft log is their log, and a write is acknowledged once
// a quorum has fsynced it), so there it is "raft", and storage.sync and
// storage.sync_interval change nothing: a config that sets them, likely
// written for standalone mode, gets a warning rather than an error.
// source names the configuration, syncSource where storage.sync came from.
func reportedSync(cfg conf.Config, source, syncSource string, logger *slog.Logger) string {
	if !cfg.Cluster.Enabled {
		return cfg.Storage.Sync
	}
	def := conf.Default().Storage
	var ignored []string
	if cfg.Storage.Sync != def.Sync {
		ignored = append(ignored, fmt.Sprintf("storage.sync = %q (from %s)", cfg.Storage.Sync, syncSource))
	}
	if cfg.Storage.SyncInterval != def.SyncInterval {
		ignored = append(ignored, fmt.Sprintf("storage.sync_interval = %q (from %s)", cfg.Storage.SyncInterval, source))
	}
	if len(ignored) > 0 {
		logger.Warn("no effect in cluster mode, where a write is durable once a quorum has fsynced the raft log",
			"ignored", strings.Join(ignored, ", "))
	}
	return "raft"
}

func waitStarted(ctx context.Context, srv *server.Server) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		_ = srv.WaitStarted(ctx)
		close(ch)
	}()
	return ch
}

// openStore opens the standalone engine or joins the cluster. recoverWAL
// opens a standalone engine whose WAL is damaged (-recover-wal).
func openStore(ctx context.Context, cfg conf.Config, recoverWAL bool, logger *slog.Logger) (store.Store, error) {
	if cfg.Cluster.Enabled {
		return openCluster(ctx, cfg, logger)
	}
	if m := cluster.NodeDirMarker(vfs.Default, cfg.Storage.Dir); m != "" {
		return nil, fmt.Errorf("open storage: %s is a cluster node's data directory (%s exists): a standalone server cannot use it; start the node with its cluster configuration (cluster.enabled = true), or give the standalone server a directory of its own", cfg.Storage.Dir, m)
	}
	opts := store.LSMOptions(cfg.Storage, logger.With("component", "lsm"))
	opts.RecoverDamagedWAL = recoverWAL
	db, err := lsm.Open(cfg.Storage.Dir, opts)
	if errors.Is(err, lsm.ErrDamagedWAL) {
		return nil, fmt.Errorf("open storage: %w; to start anyway with every write before the damage and none after it, run once with -recover-wal", err)
	}
	if err != nil {
		return nil, fmt.Errorf("open storage: %w", err)
	}
	return store.NewLocal(db, cfg.Server.Listen), nil
}

// newLogger returns the logger c describes, with its level. source names
// the configuration in errors, as conf does: "<source>: log.file: ...".
func newLogger(c conf.Log, source string) (logger *slog.Logger, level slog.Level, closeFn func(), err error) {
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, 0, nil, fmt.Errorf("%s: log.level: %w", source, err)
	}
	var w io.Writer = os.Stderr
	closeFn = func() {}
	if c.File != "" {
		f, err := os.OpenFile(c.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			// The path is in the message already: keep only the cause.
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, 0, nil, fmt.Errorf("%s: log.file: cannot open %q: %w", source, c.File, err)
		}
		w = f
		closeFn = func() { f.Close() }
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h), level, closeFn, nil
}

// spareProc gives the Go scheduler one processor (P) more than there are
// event loops, unless GOMAXPROCS is set in the environment. gnet's loops
// block in epoll_wait outside the Go netpoller, so with exactly as many Ps
// as loops every P is often in a system call: the runtime's monitor then
// takes Ps away from the blocked loops and hands them on every 20 µs
// (futex wake-ups, its own nanosleeps), and a loop returning from
// epoll_wait may have to wait for a P. With a P to spare none of that
// happens. Measured with redis-benchmark on two CPUs, two loops, five
// alternating runs each (docs/benchmarks.md): -P 1 SET +15%, GET +3%;
// -P 16 SET +6%, GET +4% (medians).
func spareProc(loops int) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if want := loops + 1; want > runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(want)
	}
}

// warnExposed warns when a port listens beyond loopback with no password:
// anything that reaches it reads and writes every key (the admin port:
// takes a backup of them and profiles the process). Redis refuses such
// clients in its "protected mode"; here the operator is told at start-up.
func warnExposed(c conf.Server, logger *slog.Logger) {
	if c.RequirePass != "" {
		return
	}
	if !loopbackAddr(c.Listen) {
		logger.Warn("server.listen is not a loopback address and server.requirepass is not set: anyone who can reach the port can read and write every key",
			"listen", c.Listen)
	}
	if c.TLSListen != "" && c.TLSCAFile == "" && !loopbackAddr(c.TLSListen) {
		logger.Warn("server.tls_listen is not a loopback address and neither server.requirepass nor server.tls_ca_file is set: anyone who can reach the port can read and write every key",
			"tls_listen", c.TLSListen)
	}
	if c.AdminListen != "" && !loopbackAddr(c.AdminListen) && !(c.AdminTLS && c.TLSCAFile != "") {
		logger.Warn("server.admin_listen is not a loopback address and server.requirepass is not set: anyone who can reach it can download a backup of every key and profile the process",
			"admin_listen", c.AdminListen)
	}
}
