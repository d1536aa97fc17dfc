package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kvstore/kv/store"
)

// Admin is the operator's HTTP endpoint: /healthz, /metrics and
// /debug/pprof/. It listens separately from the data port so a scrape or a
// profile never competes with client parsing on the event loops.
type Admin struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// StartAdmin listens on addr and serves in the background.
func StartAdmin(addr string, st store.Store, gatherer prometheus.Gatherer, logger *slog.Logger) (*Admin, error) {
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
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:  ln,
		log: logger,
	}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server stopped", "err", err)
		}
	}()
	return a, nil
}

// Addr is the address the admin endpoint listens on.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Close stops the admin endpoint.
func (a *Admin) Close(ctx context.Context) error { return a.srv.Shutdown(ctx) }
