package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lni/dragonboat/v4"
)

// joinNonVoting is the content of the join marker of a node that asks to
// join as a non-voting replica. Its replicas start non-voting (in join mode
// and at every restart: dragonboat turns a non-voting replica into a voter
// itself when it applies or recovers its promotion), and it runs promoteLoop
// until it is a voter of every shard. A marker without it was written by a
// build that joined nodes as voters at once, or by a node that a member of
// such a build added (joinVoter): such a node's replicas must start as
// voters, since dragonboat does not turn a replica that starts
// non-voting into a voter when it replays an addition that was never a
// promotion.
const joinNonVoting = "replicas=non-voting\n"

// joinVoter is the content of the join marker of a node that no member
// that adds joiners non-voting may have added (a member of an earlier
// build added it as a voter of every shard, or it has not asked yet): its
// replicas start as voters, as those of a node that an earlier build
// joined (empty marker).
const joinVoter = "replicas=voter\n"

// joinedNonVoting reports whether the join marker says this node joined as
// a non-voting replica.
func (c *Cluster) joinedNonVoting() (bool, error) {
	data, err := c.readJoinMarker()
	return string(data) == joinNonVoting, err
}

// markerNonVoting reports whether the join marker of a node that asked to
// join before any of its replicas started allows that it was added as a
// non-voting replica: all but joinVoter do, including the empty marker of
// an earlier build, which did not record what it asked.
func (c *Cluster) markerNonVoting() (bool, error) {
	data, err := c.readJoinMarker()
	return string(data) != joinVoter, err
}

// readJoinMarker returns the join marker's content (nil if there is none).
func (c *Cluster) readJoinMarker() ([]byte, error) {
	f, err := c.fs.Open(c.joinMarker())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read join marker: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return nil, fmt.Errorf("read join marker: %w", err)
	}
	return data, nil
}

// promoteLoop makes this node, which joined as a non-voting replica, a
// voter of every shard once it has caught up there, and returns when it is
// one everywhere (or was removed). It is the joining node that drives its
// promotion because its state is all in raft: the loop runs at every start
// until it is done, so a node restarted mid-catch-up still ends up a voter,
// and its requests go through its own replica to whichever node leads the
// shard, so no member it asked has to stay up.
//
// Catching up is judged by a linearizable read of the shard's membership
// on the local replica: it completes only once the replica has applied
// the leader's commit index as of a moment after the read was issued
// (ReadIndex), so the replica is then as current as the shard, give or
// take the entries committed since. A replica still receiving a snapshot
// times out and is tried again later.
func (c *Cluster) promoteLoop() {
	defer c.loops.Done()
	pending := make([]uint64, 0, c.shards)
	for s := uint64(1); s <= uint64(c.shards); s++ {
		pending = append(pending, s)
	}
	backoff := 100 * time.Millisecond
	var lastErr string
	for len(pending) > 0 {
		rest := pending[:0]
		for _, shard := range pending {
			done, err := c.promote(shard)
			if c.closed.Load() || c.removed.Load() {
				return
			}
			if err != nil && err.Error() != lastErr {
				// Each distinct reason once: a node catching up for minutes
				// would otherwise log every attempt.
				lastErr = err.Error()
				c.log.Info("promotion to voter waits", "shard", shard, "reason", err)
			}
			if !done {
				rest = append(rest, shard)
			}
		}
		pending = rest
		if len(pending) == 0 {
			break
		}
		if c.sleepOrStop(backoff, nil) {
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	c.log.Info("node is a voter of every shard")
}

// promote makes this node a voter of shard if its replica there has caught
// up. done reports that there is nothing more to do for the shard: the node
// is a voter, or no longer a member.
func (c *Cluster) promote(shard uint64) (done bool, err error) {
	if c.isLocalVoter(shard) {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(c.stopCtx, c.attemptTimeout)
	m, err := c.nh.SyncGetShardMembership(ctx, shard)
	cancel()
	if err != nil {
		return false, fmt.Errorf("not shown caught up yet (membership read on the local replica: %w)", err)
	}
	// The read above has completed: the local replica is caught up.
	id := c.nodeID
	if _, ok := m.Nodes[id]; ok {
		return true, nil
	}
	if _, ok := m.Removed[id]; ok {
		c.log.Warn("node was removed from a shard before it became a voter", "shard", shard)
		return true, nil
	}
	addr, ok := m.NonVotings[id]
	if !ok {
		c.log.Warn("node is not a member of a shard it joined", "shard", shard)
		return true, nil
	}
	live := c.probeMembers([]*dragonboat.Membership{m})
	ctx, cancel = context.WithTimeout(c.stopCtx, c.membershipTimeout())
	defer cancel()
	err = c.changeReplica(ctx, shard, m,
		func(m *dragonboat.Membership) error { return promoteQuorumError(shard, id, m, live) },
		func(ctx context.Context, ccid uint64) error {
			// The same replica id and address as the non-voting replica:
			// dragonboat then promotes it, keeping its progress.
			return c.nh.SyncRequestAddReplica(ctx, shard, id, addr, ccid)
		},
		func(m *dragonboat.Membership) (bool, error) {
			if _, ok := m.Nodes[id]; ok {
				return true, nil
			}
			if _, ok := m.NonVotings[id]; !ok {
				return false, errNotPromotable
			}
			return false, nil
		})
	switch {
	case errors.Is(err, errNotPromotable):
		return true, nil
	case err != nil:
		return false, err
	}
	c.log.Info("promoted to voter", "shard", shard)
	return true, nil
}

// errNotPromotable ends a promotion whose node left the shard meanwhile.
var errNotPromotable = errors.New("node is no longer a non-voting replica")

// isLocalVoter reports whether this node's replica of shard knows itself a
// voter, from local state: a node restarted long after its promotion then
// needs no read that waits for a quorum.
func (c *Cluster) isLocalVoter(shard uint64) bool {
	info := c.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return false
	}
	for _, si := range info.ShardInfoList {
		if si.ShardID == shard && !si.Pending {
			_, voter := si.Replicas[c.nodeID]
			return voter && !si.IsNonVoting
		}
	}
	return false
}
