package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kvstore/kv/store"
)

// Admin is the operator's HTTP endpoint: /healthz, /metrics,
// /debug/pprof/ and /backup. It listens separately from the data port so a
// scrape, a profile or a backup never competes with client parsing on the
// event loops.
type Admin struct {
	srv      *http.Server
	ln       net.Listener
	log      *slog.Logger
	st       store.Store
	password string
	backupMu sync.Mutex     // one backup at a time
	backups  sync.WaitGroup // backups running, for Close
	// backupStall is how long a backup's write may wait on a client that
	// does not read before the backup is abandoned (its checkpoint removed,
	// the lock released).
	backupStall time.Duration
}

const backupStallTimeout = 30 * time.Second

// backuper is a store that can write a consistent copy of its data as a
// tar archive (standalone mode).
type backuper interface{ Backup(w io.Writer) error }

// StartAdmin listens on addr and serves in the background. password, when
// set (server.requirepass), is required by /backup, which hands out every
// key (HTTP basic authentication, any user name, as `curl -u :PASSWORD`).
func StartAdmin(addr, password string, st store.Store, gatherer prometheus.Gatherer, logger *slog.Logger) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		status := st.Status()
		code := http.StatusOK
		if status.State == "unavailable" {
			code = http.StatusServiceUnavailable
		}
		storage := "storage=ok"
		if err := storeHealth(st); err != nil {
			code = http.StatusServiceUnavailable
			storage = "storage=err: " + err.Error()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s mode=%s nodes=%d/%d shards_with_leader=%d/%d %s\n",
			status.State, status.Mode, status.NodesUp, status.Nodes, status.ShardsWithLeader, status.Shards, storage)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a := &Admin{
		srv:         &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:          ln,
		log:         logger,
		st:          st,
		password:    password,
		backupStall: backupStallTimeout,
	}
	mux.HandleFunc("/backup", a.backup)
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server stopped", "err", err)
		}
	}()
	return a, nil
}

// Addr is the address the admin endpoint listens on.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Close stops the admin endpoint. Requests still running when ctx ends
// (a backup to a slow client) have their connections closed, and Close
// waits for a backup to give up, so the store may close after it.
func (a *Admin) Close(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err != nil {
		a.srv.Close()
	}
	a.backups.Wait()
	return err
}

// backup streams a consistent copy of the data as a tar archive; extracted
// into an empty directory it is a data directory kvserver starts on
// (-dir). A failure before the first byte is a 500 with the reason; after
// it, the connection is cut, so a client never takes a truncated archive
// for a whole one (tar reports the missing end).
func (a *Admin) backup(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "backup: use GET", http.StatusMethodNotAllowed)
		return
	}
	if !r.ProtoAtLeast(1, 1) {
		// Without chunked encoding a cut connection reads as a clean end,
		// and a cut at an entry boundary as a whole archive.
		http.Error(w, "backup: needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return
	}
	if a.password != "" {
		_, pass, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(pass), []byte(a.password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="kvserver"`)
			http.Error(w, "backup: the server's requirepass is needed (curl -u :PASSWORD)", http.StatusUnauthorized)
			return
		}
	}
	b, ok := a.st.(backuper)
	if !ok {
		http.Error(w, "backup: available in standalone mode; a cluster node's data is its raft log and snapshots, kept by its peers",
			http.StatusNotImplemented)
		return
	}
	if !a.backupMu.TryLock() {
		http.Error(w, "backup: another backup is running", http.StatusConflict)
		return
	}
	a.backups.Add(1)
	defer a.backups.Done()
	defer a.backupMu.Unlock()

	start := time.Now()
	name := "kv-backup-" + start.UTC().Format("20060102T150405Z") + ".tar"
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	cw := &countWriter{w: w, rc: http.NewResponseController(w), stall: a.backupStall}
	if err := b.Backup(cw); err != nil {
		a.log.Error("backup failed", "remote", r.RemoteAddr, "bytes", cw.n, "err", err)
		if cw.n == 0 {
			w.Header().Del("Content-Disposition")
			http.Error(w, "backup: "+err.Error(), http.StatusInternalServerError)
			return
		}
		panic(http.ErrAbortHandler)
	}
	a.log.Info("backup written", "remote", r.RemoteAddr, "bytes", cw.n, "duration", time.Since(start).Round(time.Millisecond))
}

// countWriter counts what reaches w, giving each write stall to complete;
// an empty write does not reach w (it would send the response's header,
// after which no error can be reported).
type countWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	stall time.Duration
	n     int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.rc.SetWriteDeadline(time.Now().Add(c.stall)); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
