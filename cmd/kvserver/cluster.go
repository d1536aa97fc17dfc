package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/kvstore/kv/cluster"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/store"
)

// openCluster starts this node's raft groups (bootstrapping, restarting or
// joining, as the data directory and cluster.join say).
func openCluster(ctx context.Context, cfg conf.Config, logger *slog.Logger) (store.Store, error) {
	if cfg.Cluster.Secret == "" && !cfg.Cluster.PeerTLS() && !loopbackAddr(cfg.Cluster.RaftAddress) {
		logger.Warn("neither cluster.secret nor cluster.tls_* is set: anything that reaches the raft port is trusted, and one forged message can crash this node; set mutual TLS (or the same secret) on every member",
			"raft_address", cfg.Cluster.RaftAddress)
	}
	c, err := cluster.Open(ctx, cfg, logger)
	if err != nil {
		return nil, err // already says "open cluster: ..."
	}
	return c, nil
}

// loopbackAddr reports whether addr (host:port) names a loopback host.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
