package cluster

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/lni/dragonboat/v4"
)

// Leader balancing. Elections put leaders wherever the first candidate
// timed out, and a node that restarts leads nothing until its peers fail:
// after a rolling restart one node can lead every shard, and it then does
// every shard's leader work (appends, fsyncs, replication to both peers,
// ReadIndex rounds) while the others only follow. cluster.balance_leaders
// (on by default) moves leaders back, slowly and only on a settled
// cluster:
//
//   - nothing moves until the cluster has been healthy (every member up,
//     every shard led, no non-voting member, none stopping) for
//     balanceSettle, so a failover, a restart or a join is never met with
//     transfers;
//   - each node only gives away shards it leads, one per balanceInterval,
//     while it leads more than its share, ceil(shards/voters), to the
//     voter leading the fewest (below its share);
//   - of the shards it could give away, the least busy moves first (fewest
//     entries applied here since the last look): a move costs the shard's
//     writes up to an election timeout (dragonboat's leader refuses
//     proposals while it hands over; the proposers re-send them, rechecking
//     forwarded ones, see proposer.recheck), so the idlest shard pays it;
//   - a transfer that did not take (dragonboat gives one up when the
//     target is still applying; proposals of the shard wait meanwhile,
//     an election timeout at most) doubles the pause before the next try,
//     up to balanceMaxBackoff, so a node that cannot shed a shard costs
//     that shard little.
const (
	balanceInterval   = 5 * time.Second
	balanceSettle     = 20 * time.Second
	balanceMaxBackoff = 5 * time.Minute
)

// balancer is balanceLoop's state.
type balancer struct {
	interval, settle time.Duration
	healthySince     time.Time // zero: not healthy at the last look
	next             time.Time // no transfer before
	backoff          time.Duration
	// applied is each shard's applied index here at the last look.
	applied map[uint64]uint64
}

func (c *Cluster) balanceLoop(interval, settle time.Duration) {
	b := &balancer{interval: interval, settle: settle}
	c.every(interval, func() { c.balanceOnce(b, time.Now()) })
}

// balanceOnce is one look of the balancer at time now.
func (c *Cluster) balanceOnce(b *balancer, now time.Time) {
	if c.serving() != nil || c.Status().State != "healthy" || !c.settled() {
		b.healthySince = time.Time{}
		return
	}
	if b.healthySince.IsZero() {
		b.healthySince = now
	}
	busy := c.shardActivity(b)
	if now.Sub(b.healthySince) < b.settle {
		return
	}
	if now.Before(b.next) {
		return
	}
	info := c.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return
	}
	shard, target, ok := pickTransfer(c.nodeID, info.ShardInfoList, busy)
	if !ok {
		return
	}
	c.log.Info("moving shard leadership to balance leaders", "shard", shard, "to", target)
	if c.moveLeader(shard, target, 3*c.election) {
		c.leaderMoves.Add(1)
		b.backoff = 0
		return
	}
	b.backoff = min(max(2*b.backoff, 2*b.interval), balanceMaxBackoff)
	b.next = time.Now().Add(b.backoff)
	c.log.Info("leader move did not take", "shard", shard, "to", target, "retry_in", b.backoff)
}

// moveLeader asks dragonboat to hand shard's leadership from this node to
// target, again every tick (it ignores the request while a transfer runs
// and gives a transfer up after an election timeout, which under writes
// happens whenever target has not applied all it committed when asked),
// until another node leads or within passes; it reports whether target
// took over. A transfer that took is a leader change, at which every
// proposer re-sends what it had in flight, including proposals a
// follower forwarded here that were dropped during the transfer (nothing
// tells the follower); one given up leaves those to the attempt timeout.
func (c *Cluster) moveLeader(shard, target uint64, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		id, _, ok, err := c.nh.GetLeaderID(shard)
		switch {
		case err != nil:
			return false
		case ok && id == target:
			return true
		case ok && id != c.nodeID:
			return false
		case ok: // still this node's
			if err := c.nh.RequestLeaderTransfer(shard, target); err != nil {
				c.log.Debug("leader transfer refused", "shard", shard, "target", target, "err", err)
				return false
			}
		}
		// !ok: an election under way (the target campaigning); wait.
		select {
		case <-c.stop:
			return false
		case <-time.After(c.minTimeout()):
		}
	}
	return false
}

// shardActivity returns how many entries each shard applied here since
// the last look (absent at the first), and records the applied indexes
// for the next.
func (c *Cluster) shardActivity(b *balancer) map[uint64]uint64 {
	busy := make(map[uint64]uint64)
	now := make(map[uint64]uint64)
	c.smMu.Lock()
	for shard, sm := range c.sms {
		now[shard] = sm.appliedIndex.Load()
	}
	c.smMu.Unlock()
	for shard, idx := range now {
		if prev, ok := b.applied[shard]; ok && idx >= prev {
			busy[shard] = idx - prev
		}
	}
	b.applied = now
	return busy
}

// settled reports whether every member is a voter (no join under way)
// and none is stopping (a rolling restart under way: the stopping node,
// which leads nothing once it has handed its shards over, would be the
// natural target).
func (c *Cluster) settled() bool {
	v := c.view.Load()
	if v == nil || len(v.leaving) > 0 {
		return false
	}
	for _, n := range v.nodes {
		if n.NonVoting {
			return false
		}
	}
	return true
}

// pickTransfer chooses a shard node me leads and the voter to hand it to,
// if me leads more than its share (ceil(shards/voters)) and some voter of
// that shard leads fewer than its share: the voter leading the fewest
// (lowest id on ties), for the least busy such shard (by busy, the entries
// each applied lately; a shard absent from it counts as busiest; lowest
// id on ties). Replica ids are node ids.
func pickTransfer(me uint64, shards []dragonboat.ShardInfo, busy map[uint64]uint64) (shard, target uint64, ok bool) {
	leads := make(map[uint64]int)
	voters := make(map[uint64]bool)
	var mine []dragonboat.ShardInfo
	for _, si := range shards {
		for id := range si.Replicas {
			voters[id] = true
		}
		if si.Pending || si.LeaderID == 0 {
			return 0, 0, false // starting, or an election under way: look again later
		}
		leads[si.LeaderID]++
		if si.LeaderID == me {
			mine = append(mine, si)
		}
	}
	if len(voters) < 2 {
		return 0, 0, false
	}
	share := (len(shards) + len(voters) - 1) / len(voters)
	if len(mine) <= share {
		return 0, 0, false
	}
	activity := func(id uint64) uint64 {
		if n, ok := busy[id]; ok {
			return n
		}
		return math.MaxUint64
	}
	slices.SortFunc(mine, func(a, b dragonboat.ShardInfo) int {
		if c := cmp.Compare(activity(a.ShardID), activity(b.ShardID)); c != 0 {
			return c
		}
		return cmp.Compare(a.ShardID, b.ShardID)
	})
	for _, si := range mine {
		best := uint64(0)
		for id := range si.Replicas {
			if id == me || leads[id] >= share {
				continue
			}
			if best == 0 || leads[id] < leads[best] || leads[id] == leads[best] && id < best {
				best = id
			}
		}
		if best != 0 {
			return si.ShardID, best, true
		}
	}
	return 0, 0, false
}
