package cluster

import (
	"errors"
	"fmt"
	"os"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/raftio"
	"github.com/lni/vfs"
)

// removedFile marks the data directory of a node that was removed from the
// cluster. Raft stops a replica when it applies its own removal, and node
// ids are never reused, so such a node can never serve again: without the
// mark it would keep running (or restart) as an empty shell answering
// "cluster unavailable", and an operator would take it for an outage.
const removedFile = "REMOVED"

// errRemovedNode is the reply to every request on a removed node.
func (c *Cluster) errRemovedNode() error {
	return fmt.Errorf("cluster unavailable: node %d was removed from the cluster; stop it, and to use this machine again wipe %s and join with a new cluster.node_id", c.nodeID, c.dir)
}

// checkDataDir refuses to start on a data directory this node can no longer
// run on: marked removed, or created with another raft address.
func (c *Cluster) checkDataDir() error {
	if err := c.checkNotRemoved(); err != nil {
		return err
	}
	if err := c.checkRaftState(); err != nil {
		return err
	}
	if err := c.checkNotStandalone(); err != nil {
		return err
	}
	return c.checkRaftAddress()
}

// checkNotStandalone refuses a directory that holds a standalone server's
// data (a CURRENT file at its top: a cluster node keeps its engines in
// shard-N/): a node started there bootstrapped a new, empty cluster beside
// the data, which it never served.
func (c *Cluster) checkNotStandalone() error {
	if _, err := c.fs.Stat(c.fs.PathJoin(c.dir, "CURRENT")); err == nil {
		if _, found, _ := readIdentity(c.fs, c.dir); found {
			return fmt.Errorf("data directory %s is this node's, but also holds a standalone server's data at its top (CURRENT, MANIFEST-*, *.log, *.sst: a standalone kvserver was run on it, or a backup extracted into it): move those files away, keeping %s, %s and shard-*, and start again",
				c.dir, identityFile, RaftDir)
		}
		return fmt.Errorf("data directory %s holds a standalone server's data (CURRENT, MANIFEST-*, *.sst at its top), not a cluster node's: a cluster node cannot take it over; give the node an empty directory (or its own), and load the data through a client", c.dir)
	}
	return nil
}

// NodeDirMarker names what shows dir to be a cluster node's data directory
// (its identity file or its raft directory), or "" when nothing does:
// kvserver refuses to start a standalone engine there, which would create
// a new, empty DB beside the node's data (even while the node runs: their
// locks are different files).
func NodeDirMarker(fs vfs.FS, dir string) string {
	for _, name := range []string{identityFile, RaftDir} {
		if _, err := fs.Stat(fs.PathJoin(dir, name)); err == nil {
			return fs.PathJoin(dir, name)
		}
	}
	return ""
}

// checkRaftState refuses to start a node whose directory says it has been
// a member (CLUSTER_IDENTITY is written only once raft's directory exists)
// but whose raft directory is gone or empty: removed by hand, or lost with
// a disk. Started, raft would see a node it has never run: it bootstrapped
// every shard afresh from cluster.members, wiped the shard directories as
// stale state, and the new replicas, with no log and no vote, crashed on
// the leader's first heartbeat ("invalid commitTo index") or, had a leader
// lost its progress record, rejoined with the votes and log entries they
// had acknowledged forgotten.
func (c *Cluster) checkRaftState() error {
	id, found, err := readIdentity(c.fs, c.dir)
	if err != nil || !found {
		return err
	}
	raftDir := c.fs.PathJoin(c.dir, RaftDir)
	names, err := c.fs.List(raftDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("check %s: %w", raftDir, err)
	}
	for _, name := range names {
		if name != "LOCK" {
			return nil
		}
	}
	return fmt.Errorf("data directory %s belongs to node %d (%s) but its raft state %s is missing: the node's raft log and votes are gone, and starting would bootstrap it afresh and discard its shard data; restore %s from a copy taken with the node stopped, or remove node %d from the cluster (kvcli cluster remove %d), wipe %s and join with a new cluster.node_id",
		c.dir, id.NodeID, identityFile, raftDir, raftDir, id.NodeID, id.NodeID, c.dir)
}

// checkNotRemoved refuses to start a node whose directory is marked removed.
func (c *Cluster) checkNotRemoved() error {
	_, err := c.fs.Stat(c.fs.PathJoin(c.dir, removedFile))
	switch {
	case err == nil:
		return fmt.Errorf("node %d was removed from the cluster and node ids cannot be reused: wipe %s and join with a new cluster.node_id", c.nodeID, c.dir)
	case errors.Is(err, os.ErrNotExist):
		return nil
	default:
		return fmt.Errorf("check %s: %w", removedFile, err)
	}
}

// noteRemoved records that the replica of shard with id replica was
// removed, by dragonboat's account (the replica applied its removal from the
// log or from a snapshot) or a peer's (a removal notice): if it is this
// node's, the node serves nothing from now on. The first call marks the
// directory and logs.
//
// The mark is durable before any request is refused: every refusal tells
// the operator to stop the node, and a node stopped before its mark was
// written would start again as a member. removedMu makes a second caller
// (dragonboat's event and a peer's notice may race) wait for the first.
func (c *Cluster) noteRemoved(shard, replica uint64) {
	if replica != c.nodeID {
		return
	}
	c.removedMu.Lock()
	defer c.removedMu.Unlock()
	if c.removed.Load() {
		return
	}
	if err := writeFileAtomic(c.fs, c.dir, removedFile, fmt.Appendf(nil, "node_id=%d\nshard=%d\n", c.nodeID, shard)); err != nil {
		c.log.Error("mark the data directory removed", "err", err)
	}
	c.removed.Store(true)
	c.background(func() error { c.stopReplicas(); return nil }, func(error) {})
	c.log.Warn("this node was removed from the cluster: it serves no requests from now on; stop it, and to use this machine again wipe its data directory and join with a new cluster.node_id",
		"shard", shard, "dir", c.dir)
}

// stopReplicas stops this node's replicas once it knows it was removed:
// raft tells a removed replica nothing more, and left running, the replicas
// of shards that never applied the removal (the node was down, or the
// leader dropped it first) would campaign for ever, their peers answering
// with removal notices. The node is then, to the cluster, a stopped node,
// as it is told to be.
func (c *Cluster) stopReplicas() {
	for s := uint64(1); s <= uint64(c.shards); s++ {
		if err := c.nh.StopShard(s); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) && !errors.Is(err, dragonboat.ErrClosed) {
			c.log.Warn("stop the replica of a removed node", "shard", s, "err", err)
		}
	}
}

// systemListener passes dragonboat's system events on; only a replica's
// own removal matters here.
type systemListener struct{ c *Cluster }

func (l systemListener) NodeDeleted(info raftio.NodeInfo) {
	l.c.noteRemoved(info.ShardID, info.ReplicaID)
}

func (systemListener) NodeHostShuttingDown()                       {}
func (systemListener) NodeUnloaded(raftio.NodeInfo)                {}
func (systemListener) NodeReady(raftio.NodeInfo)                   {}
func (systemListener) MembershipChanged(raftio.NodeInfo)           {}
func (systemListener) ConnectionEstablished(raftio.ConnectionInfo) {}
func (systemListener) ConnectionFailed(raftio.ConnectionInfo)      {}
func (systemListener) SendSnapshotStarted(raftio.SnapshotInfo)     {}
func (systemListener) SendSnapshotCompleted(raftio.SnapshotInfo)   {}
func (systemListener) SendSnapshotAborted(raftio.SnapshotInfo)     {}
func (systemListener) SnapshotReceived(raftio.SnapshotInfo)        {}
func (systemListener) SnapshotRecovered(raftio.SnapshotInfo)       {}
func (systemListener) SnapshotCreated(raftio.SnapshotInfo)         {}
func (systemListener) SnapshotCompacted(raftio.SnapshotInfo)       {}
func (systemListener) LogCompacted(raftio.EntryInfo)               {}
func (systemListener) LogDBCompacted(raftio.EntryInfo)             {}
