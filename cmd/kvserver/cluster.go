package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/store"
)

// openCluster starts this node's raft groups.
func openCluster(ctx context.Context, cfg conf.Config, logger *slog.Logger) (store.Store, error) {
	return nil, errors.New("cluster mode is not available in this build yet")
}
