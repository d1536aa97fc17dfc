package cluster

import (
	"context"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
)

// The raft log bound. A node's raft log (raftwal) is one sequence of
// files for all its shards, and a file can go only once every shard has
// compacted past the entries in it, which dragonboat does after each
// snapshot (every cluster.snapshot_entries applied entries). A shard that
// sees few writes would keep its entries, and with them every later file,
// for a long time (for ever if its writes stop, or with snapshot_entries
// = 0). So past cluster.max_raft_log_bytes, the shards whose entries keep
// the oldest files are snapshotted early, their logs compacted to the
// snapshot; and while the node is short of disk space (the free-space
// guard refuses writes), so is every shard with entries in any but the
// newest file.
const logKeeperInterval = 2 * time.Second

// raftLogSegmentBytes is the segment size for a bound: an eighth of it,
// so the bound holds to within a few segments, at most raftwal's default.
func raftLogSegmentBytes(cfg conf.Config) int64 {
	return min(int64(cfg.Cluster.MaxRaftLogBytes)/8, 16<<20)
}

// keepLog checks the raft log against its bound and starts releasing the
// shards that keep it above (one release at a time per shard).
func (c *Cluster) keepLog() {
	wal := c.wal.Load()
	if wal == nil {
		return // dragonboat's pebble LogDB compacts by itself
	}
	limit := int64(c.cfg.Cluster.MaxRaftLogBytes)
	if g := c.space; g != nil && g.low.Load() {
		// Short of disk space, writes are refused until some is freed,
		// and a log under its bound would never shrink without writes:
		// release every segment but the newest.
		limit = 0
	}
	for _, ni := range wal.Over(limit) {
		shard := ni.ShardID
		if shard < 1 || shard > uint64(c.shards) || !c.releasing[shard-1].CompareAndSwap(false, true) {
			continue
		}
		c.loops.Add(1)
		go func() {
			defer c.loops.Done()
			defer c.releasing[shard-1].Store(false)
			c.releaseLog(shard)
		}()
	}
}

// releaseLog snapshots this node's replica of shard and compacts its log
// to the snapshot. A replica that applied nothing since its last snapshot
// cannot take another (dragonboat skips it), so an empty write goes first:
// an entry that changes nothing, applied by every replica.
func (c *Cluster) releaseLog(shard uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := c.proposeWait(ctx, shard, cmdWrite, new(lsm.Batch).Repr()); err != nil {
		if c.stopping() {
			return
		}
		c.log.Warn("raft log over cluster.max_raft_log_bytes: empty write before an early snapshot failed", "shard", shard, "err", err)
		return
	}
	index, err := c.nh.SyncRequestSnapshot(ctx, shard, dragonboat.SnapshotOption{OverrideCompactionOverhead: true})
	if err != nil {
		if c.stopping() {
			return
		}
		c.log.Warn("raft log over cluster.max_raft_log_bytes: early snapshot failed", "shard", shard, "err", err)
		return
	}
	c.earlySnapshots.Add(1)
	c.log.Debug("raft log over cluster.max_raft_log_bytes: snapshotted a shard early to release its oldest entries", "shard", shard, "index", index)
}

// RaftLogMetrics is the state of a node's raft log.
type RaftLogMetrics struct {
	Bytes          int64  // its files on disk
	Segments       int    // files
	Syncs          uint64 // fdatasyncs since start
	Written        uint64 // bytes written since start
	EarlySnapshots uint64 // snapshots taken to keep it under cluster.max_raft_log_bytes
}

// RaftLogMetrics reports the node's raft log; false for a node on
// dragonboat's pebble LogDB.
func (c *Cluster) RaftLogMetrics() (RaftLogMetrics, bool) {
	wal := c.wal.Load()
	if wal == nil {
		return RaftLogMetrics{}, false
	}
	st := wal.Stats()
	return RaftLogMetrics{Bytes: st.Bytes, Segments: st.Segments, Syncs: st.Syncs, Written: st.Written, EarlySnapshots: c.earlySnapshots.Load()}, true
}

// stopping says whether the node is stopping.
func (c *Cluster) stopping() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}
