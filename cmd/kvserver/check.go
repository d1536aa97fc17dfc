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
	"github.com/kvstore/kv/cluster/raftwal"
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
		ok, err := checkRaftLog(cfg.Storage.Dir, w)
		if err != nil {
			return fmt.Errorf("check raft log: %w", err)
		}
		damaged = damaged || !ok
	}
	if damaged {
		return errDamage
	}
	return nil
}

// checkRaftLog verifies a cluster node's raft log (raftwal.Verify) and
// writes a line about it to w; ok is false when it is damaged.
func checkRaftLog(dataDir string, w io.Writer) (ok bool, err error) {
	dir, pebble, err := cluster.RaftLog(dataDir)
	switch {
	case err != nil:
		return false, err
	case pebble:
		fmt.Fprintf(w, "raft log %s: not checked (dragonboat's pebble LogDB; a damaged node is replaced: remove it and join a fresh one)\n", dir)
		return true, nil
	case dir == "":
		fmt.Fprintln(w, "raft log: none")
		return true, nil
	}
	rep, err := raftwal.Verify(dir)
	if errors.Is(err, raftwal.ErrCorrupt) {
		fmt.Fprintf(w, "raft log %s: DAMAGED: %v (a damaged node is replaced: remove it and join a fresh one)\n", dir, err)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fmt.Fprintf(w, "raft log %s: ok (%d segments, %d bytes, %d replicas, %d entries held", dir, rep.Segments, rep.Bytes, rep.Replicas, rep.Entries)
	if rep.TornBytes > 0 {
		fmt.Fprintf(w, "; %d bytes of an unfinished write at the end, dropped at the next start", rep.TornBytes)
	}
	fmt.Fprintln(w, ")")
	return true, nil
}
