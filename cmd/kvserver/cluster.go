package main

import (
	"context"
	"fmt"
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
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	return c, nil
}
