package main

import (
	"context"
	"log/slog"

	"github.com/kvstore/kv/cluster"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/store"
)

// openCluster starts this node's raft groups (bootstrapping, restarting or
// joining, as the data directory and cluster.join say).
func openCluster(ctx context.Context, cfg conf.Config, logger *slog.Logger) (store.Store, error) {
	c, err := cluster.Open(ctx, cfg, logger.With("component", "cluster"))
	if err != nil {
		return nil, err // already says "open cluster: ..."
	}
	return c, nil
}
