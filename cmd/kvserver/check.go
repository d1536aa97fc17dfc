package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/cluster"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// errDamage is returned by checkData when it found damage (the report
// names it).
var errDamage = errors.New("check found damage (see above)")

// checkData verifies, offline, the engine data of the data directory cfg
// names: every table read whole against its checksums and the manifest
// (lsm.DB.Verify), and the WAL replayed, each lsm opened read-only. The
// server must be stopped: the directory lock is taken. It writes a line
// per lsm and one per problem to w, and returns errDamage when anything
// is damaged.
func checkData(ctx context.Context, cfg conf.Config, w io.Writer, logger *slog.Logger) error {
	type target struct {
		name, dir string
		noWAL     bool
	}
	if _, err := os.Stat(cfg.Storage.Dir); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	var targets []target
	if cfg.Cluster.Enabled {
		dirs, err := cluster.EngineDirs(cfg.Storage.Dir)
		if err != nil {
			return fmt.Errorf("check %s: %w", cfg.Storage.Dir, err)
		}
		if len(dirs) == 0 {
			return fmt.Errorf("check %s: no shard data (is it a cluster node's data directory?)", cfg.Storage.Dir)
		}
		shards := make([]uint64, 0, len(dirs))
		for s := range dirs {
			shards = append(shards, s)
		}
		slices.Sort(shards)
		for _, s := range shards {
			targets = append(targets, target{fmt.Sprintf("shard %d", s), dirs[s], true})
		}
	} else {
		if m := cluster.NodeDirMarker(vfs.Default, cfg.Storage.Dir); m != "" {
			return fmt.Errorf("check %s: a cluster node's data directory (%s exists): check it with the node's configuration", cfg.Storage.Dir, m)
		}
		targets = []target{{"standalone", cfg.Storage.Dir, false}}
	}
	damaged := false
	for _, t := range targets {
		db, err := lsm.Open(t.dir, lsm.Options{ReadOnly: true, DisableWAL: t.noWAL, BlockCacheBytes: 8 << 20, Logger: logger})
		if err != nil {
			if !errors.Is(err, lsm.ErrCorruption) {
				return fmt.Errorf("check %s: %w", t.dir, err)
			}
			fmt.Fprintf(w, "%s %s: DAMAGED: %v\n", t.name, t.dir, err)
			damaged = true
			continue
		}
		rep, err := db.Verify(ctx)
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("check %s: %w", t.dir, err)
		}
		if !store.WriteVerifyReport(w, t.name+" "+t.dir, rep, nil) {
			damaged = true
		}
	}
	if cfg.Cluster.Enabled {
		fmt.Fprintln(w, "raft log: not checked (dragonboat's; a damaged node is replaced: remove it and join a fresh one)")
	}
	if damaged {
		return errDamage
	}
	return nil
}
