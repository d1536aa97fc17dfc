package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// Admin is the operator's HTTP endpoint: /healthz, /metrics,
// /debug/pprof/ and /backup. It listens separately from the data port so a
// scrape, a profile or a backup never competes with client parsing on the
// event loops.
//
// It shares the process's file descriptors with the data port, where an
// accept failing with EMFILE stops gnet's whole engine: so it holds at most
// AdminMaxConns connections (more wait in the kernel's accept queue, which
// costs no descriptor) and closes connections that idle, or that stall
// while sending headers. And it answers only requests naming this server
// (Host: an IP address, localhost or the admin_listen host), so that a web
// page in a browser on this machine cannot read it through a DNS name
// rebound to 127.0.0.1.
type Admin struct {
	srv      *http.Server
	ln       net.Listener
	log      *slog.Logger
	st       store.Store
	password string
	limits   adminLimits
	name     string         // the admin_listen host, when it is a name (lower case, no final dot)
	backupMu sync.Mutex     // one backup at a time
	verifyMu sync.Mutex     // one verify at a time
	backups  sync.WaitGroup // backups running, for Close
	// backupStall is how long a backup's write may wait on a client that
	// does not read before the backup is abandoned (its checkpoint removed,
	// the lock released).
	backupStall time.Duration
}

const backupStallTimeout = 30 * time.Second

// AdminMaxConns is the most connections the admin endpoint holds open at
// once; cmd/kvserver counts them among the descriptors it keeps free of
// client connections.
const AdminMaxConns = 32

// adminLimits are the admin server's connection limit and timeouts (tests
// shorten them). None of them cuts a long response short:
//   - read (http.Server.ReadTimeout) bounds reading a request, headers and
//     body; net/http clears the read deadline before the handler runs
//     (its background read), so it does not cancel a running request;
//   - write (WriteTimeout) bounds writing a response from the end of the
//     request; pprof adds the seconds a profile or trace asks for, and
//     /backup sets a deadline of its own before every write (backupStall),
//     so a backup may stream for as long as its client keeps reading;
//   - idle bounds a kept-alive connection's wait for its next request.
type adminLimits struct {
	maxConns                      int
	readHeader, read, write, idle time.Duration
}

var defaultAdminLimits = adminLimits{
	maxConns:   AdminMaxConns,
	readHeader: 10 * time.Second,
	read:       30 * time.Second,
	write:      30 * time.Second,
	idle:       30 * time.Second,
}

// adminMaxHeaderBytes bounds a request's headers (net/http's default is
// 1 MiB); an admin request needs at most an Authorization header.
const adminMaxHeaderBytes = 32 << 10

// backuper is a store that can write a consistent copy of its data as a
// tar archive (standalone mode).
type backuper interface{ Backup(w io.Writer) error }

// StartAdmin listens on addr and serves in the background. password, when
// set (server.requirepass), is required by /backup, which hands out every
// key, and by /debug/pprof/ (HTTP basic authentication, any user name, as
// `curl -u :PASSWORD`); /healthz and /metrics stay open to probes and
// Prometheus scrapes, which send no credentials by convention.
func StartAdmin(addr, password string, tlsCfg *tls.Config, st store.Store, gatherer prometheus.Gatherer, logger *slog.Logger) (*Admin, error) {
	return startAdmin(addr, password, tlsCfg, st, gatherer, logger, defaultAdminLimits)
}

func startAdmin(addr, password string, tlsCfg *tls.Config, st store.Store, gatherer prometheus.Gatherer, logger *slog.Logger, limits adminLimits) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	// The connection limit counts connections, handshakes included.
	ln = netutil.LimitListener(ln, limits.maxConns)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
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
		state := status.State
		if code != http.StatusOK && state == "healthy" {
			// The cluster is fine but the storage is not: a reader of the
			// body alone (a log line, a human) must not see "healthy".
			state = "unhealthy"
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s mode=%s nodes=%d/%d shards_with_leader=%d/%d %s\n",
			state, status.Mode, status.NodesUp, status.Nodes, status.ShardsWithLeader, status.Shards, storage)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	a := &Admin{
		ln:          ln,
		log:         logger,
		st:          st,
		password:    password,
		limits:      limits,
		name:        adminName(addr),
		backupStall: backupStallTimeout,
	}
	a.srv = &http.Server{
		Handler:           a.guard(mux),
		ReadHeaderTimeout: limits.readHeader,
		ReadTimeout:       limits.read,
		WriteTimeout:      limits.write,
		IdleTimeout:       limits.idle,
		MaxHeaderBytes:    adminMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// A profile shows what the process runs and pprof's cmdline its
	// arguments: with requirepass set, they need it as /backup does.
	for path, h := range map[string]http.HandlerFunc{
		"/debug/pprof/":        pprof.Index,
		"/debug/pprof/cmdline": pprof.Cmdline,
		"/debug/pprof/profile": pprof.Profile,
		"/debug/pprof/symbol":  pprof.Symbol,
		"/debug/pprof/trace":   pprof.Trace,
	} {
		mux.Handle(path, a.requirePass("pprof", h))
	}
	mux.HandleFunc("/backup", a.backup)
	mux.HandleFunc("/verify", a.verify)
	go func() {
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server stopped", "err", err)
		}
	}()
	return a, nil
}

// adminName is addr's host when it is a name, as a Host header would carry
// it: lower case, without a final dot; "" for an IP address or no host.
func adminName(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// hostAllowed reports whether a request naming host (its Host header) is
// meant for this server: an IP address, localhost, or the admin_listen
// host. A page whose DNS name was rebound to 127.0.0.1 sends its own name
// and is refused. No Host at all (HTTP/1.0) is no browser's request.
func (a *Admin) hostAllowed(host string) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	return host == "localhost" || (a.name != "" && host == a.name)
}

// guard refuses requests for other hosts before any handler runs.
func (a *Admin) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.hostAllowed(r.Host) {
			w.Header().Set("Connection", "close")
			http.Error(w, fmt.Sprintf("admin: Host %q is not this server; use its IP address, localhost or the admin_listen host", r.Host),
				http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// authorized reports whether r carries the requirepass password (always,
// without one): HTTP basic authentication, any user name.
func (a *Admin) authorized(r *http.Request) bool {
	if a.password == "" {
		return true
	}
	_, pass, ok := r.BasicAuth()
	return ok && subtle.ConstantTimeCompare([]byte(pass), []byte(a.password)) == 1
}

// checkPass answers 401 and returns false when r lacks the password.
func (a *Admin) checkPass(w http.ResponseWriter, r *http.Request, what string) bool {
	if a.authorized(r) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="kvserver"`)
	http.Error(w, what+": the server's requirepass is needed (curl -u :PASSWORD)", http.StatusUnauthorized)
	return false
}

// requirePass serves h only to requests that carry the password.
func (a *Admin) requirePass(what string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.checkPass(w, r, what) {
			h.ServeHTTP(w, r)
		}
	})
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
	if !a.checkPass(w, r, "backup") {
		return
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
			// The checkpoint may have outlasted WriteTimeout.
			_ = cw.rc.SetWriteDeadline(time.Now().Add(a.backupStall))
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

// verify reads every table of the store's engines whole against their
// checksums and manifests (store.Verifier) while the server runs, and
// answers a line per engine and one per damaged table: 200 when all were
// read whole and sound, 500 otherwise. It reads as much as the node holds
// (one at a time, with the password when requirepass is set), and leaves
// the block cache as it is.
func (a *Admin) verify(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "verify: use GET", http.StatusMethodNotAllowed)
		return
	}
	if !a.checkPass(w, r, "verify") {
		return
	}
	v, ok := a.st.(store.Verifier)
	if !ok {
		http.Error(w, "verify: not available for this store", http.StatusNotImplemented)
		return
	}
	if !a.verifyMu.TryLock() {
		http.Error(w, "verify: another verify is running", http.StatusConflict)
		return
	}
	defer a.verifyMu.Unlock()
	// The answer comes once everything is read, which can outlast the
	// server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	start := time.Now()
	var body bytes.Buffer
	sound := true
	err := v.Verify(r.Context(), func(name string, rep lsm.VerifyReport, err error) {
		if !store.WriteVerifyReport(&body, name, rep, err) {
			sound = false
		}
	})
	if err != nil {
		a.log.Warn("verify stopped", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "verify: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	a.log.Info("verify done", "remote", r.RemoteAddr, "sound", sound, "took", time.Since(start).Round(time.Millisecond))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !sound {
		w.WriteHeader(http.StatusInternalServerError)
	}
	_, _ = w.Write(body.Bytes())
}
