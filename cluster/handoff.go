package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
)

// TransferLeadership hands every shard this node leads to another live
// voter, as etcd's leader does when it is stopped: a graceful stop (SIGTERM)
// calls it before it stops serving, so the shards it led keep a leader
// throughout instead of waiting out an election timeout on the other nodes
// (0.5-1 s with the defaults, during which every request on those shards,
// on every node, waited). Dragonboat's leader sends the target what it
// lacks and then tells it to campaign at once; proposals of the shard
// pause meanwhile (dropped and re-sent by the proposer at the leader
// change), reads do not.
//
// It returns once no shard it led at the call is led by this node and each
// of them has a leader it knows of, or when ctx ends (then with an error
// naming the shards still led here: stopping then costs those an
// election, as before). A shard whose other voters are all down (by the
// status view's probe) is left as it is: no one could take it. Close does
// not call it: a stop that fails over (a crash, a test of one) stays
// possible.
//
// A transfer can fail, and under writes often does: the target skips the
// campaign dragonboat's TimeoutNow asks of it while it has committed
// entries not yet applied (internal/raft/raft.go, hasConfigChangeToApply
// is "committed > applied"), the leader never sends TimeoutNow again, and
// the transfer is given up after an election timeout, proposals of the
// shard refused all that time ("leader transferring"; the proposers
// re-send them). The request is therefore repeated every tick
// (dragonboat ignores it while a transfer runs): the next transfer starts
// the tick the last one is given up, when the target, which got no new
// entries meanwhile, has applied everything, so it takes over at once.
// One failed try thus costs the shard's writes one election timeout,
// against a full failover (an election timeout to notice the leader gone,
// then the election) without the hand-off. Each target in turn gets an
// election timeout.
func (c *Cluster) TransferLeadership(ctx context.Context) error {
	if err := c.serving(); err != nil {
		return err
	}
	c.leaving.Store(true)
	var mine []uint64
	for s := uint64(1); s <= uint64(c.shards); s++ {
		if id, _, ok, err := c.nh.GetLeaderID(s); err == nil && ok && id == c.nodeID {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	start := time.Now()
	asked := make(map[uint64]time.Time)
	tries := make(map[uint64]int)
	tick := c.minTimeout()
	for {
		var pending, stuck []uint64
		var targets map[uint64][]uint64
		for _, s := range mine {
			id, _, ok, err := c.nh.GetLeaderID(s)
			if err != nil {
				return c.mapError(s, err)
			}
			if ok && id != 0 && id != c.nodeID {
				continue // handed over, and its new leader is known here
			}
			pending = append(pending, s)
			if !ok || id != c.nodeID {
				continue // stepped down, the new leader not heard of yet
			}
			if targets == nil {
				targets = c.handOffTargets()
			}
			cands := targets[s]
			if len(cands) == 0 {
				stuck = append(stuck, s)
				continue
			}
			if at, ok := asked[s]; !ok || time.Since(at) >= c.election {
				// The first request, or the last target did not take
				// over within an election timeout: try the next one.
				tries[s]++
				asked[s] = time.Now()
			}
			target := cands[(tries[s]-1)%len(cands)]
			// Asked again every tick: dragonboat ignores the request while
			// a transfer runs, and starts a new one the moment it gives
			// the last one up (see above).
			if err := c.nh.RequestLeaderTransfer(s, target); err != nil {
				c.log.Debug("leader transfer refused", "shard", s, "target", target, "err", err)
			}
		}
		if len(pending) == 0 {
			c.log.Info("handed over leadership", "shards", len(mine), "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if len(stuck) == len(pending) {
			return fmt.Errorf("cluster: shards %v have no other live voter to lead them", stuck)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: leadership of shards %v not handed over: %w", pending, ctx.Err())
		case <-c.stop:
			return errClosed
		case <-time.After(tick):
		}
	}
}

// handOffTargets lists, for each shard, the voters other than this node
// that the status view has up, those leading the fewest shards first (a
// node restarted one at a time should not leave one peer leading all).
func (c *Cluster) handOffTargets() map[uint64][]uint64 {
	up := make(map[uint64]bool)
	if v := c.view.Load(); v != nil {
		for _, n := range v.nodes {
			up[n.ID] = n.Up && !n.NonVoting && !v.leaving[n.ID]
		}
	}
	info := c.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return nil
	}
	leads := make(map[uint64]int)
	for _, si := range info.ShardInfoList {
		if si.LeaderID != 0 {
			leads[si.LeaderID]++
		}
	}
	out := make(map[uint64][]uint64)
	for _, si := range info.ShardInfoList {
		var cands []uint64
		for id := range si.Replicas {
			if id != c.nodeID && up[id] {
				cands = append(cands, id)
			}
		}
		slices.SortFunc(cands, func(a, b uint64) int {
			if leads[a] != leads[b] {
				return leads[a] - leads[b]
			}
			return int(a) - int(b)
		})
		out[si.ShardID] = cands
	}
	return out
}

// WaitCaughtUp waits until every shard has a leader and this node's
// replica has applied everything the shard committed before the call: a
// ReadIndex round through the leader completed on it, which dragonboat
// reports only once the replica applied the leader's commit index of
// that moment. kvserver waits for it (bounded) before it opens its client
// port at start: a restarted node otherwise took requests that waited
// for its replicas to hear of their leaders (dragonboat redials a peer
// that was down with a backoff of up to ~1.5 s) and to replay the log, up
// to several seconds, while the other nodes served at once. Reads on a
// node that has not caught up are linearizable all the same (each waits
// for its own ReadIndex); this is about latency. ctx ending returns its
// error, with the shards not caught up yet.
func (c *Cluster) WaitCaughtUp(ctx context.Context) error {
	if err := c.serving(); err != nil {
		return err
	}
	if up, voters := c.votersUp(); up*2 <= voters {
		// The first node of a cluster started one node at a time (or a
		// node that finds most members down): no shard can elect a leader
		// until more members start, which may be waiting for this one's
		// port; waiting would only delay them.
		return fmt.Errorf("cluster: %d of %d voting members up, no quorum to catch up with", up, voters)
	}
	var mu sync.Mutex
	var behind []uint64
	var wg sync.WaitGroup
	for s := uint64(1); s <= uint64(c.shards); s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.readIndexRound(ctx, s); err != nil {
				mu.Lock()
				behind = append(behind, s)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(behind) > 0 {
		slices.Sort(behind)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cluster: shards %v not caught up: %w", behind, err)
		}
		return fmt.Errorf("cluster: shards %v not caught up: %w", behind, errClosed)
	}
	return nil
}

// readIndexRound completes one ReadIndex on this node's replica of shard,
// retrying refusals (no leader yet) until ctx ends or the node stops.
func (c *Cluster) readIndexRound(ctx context.Context, shard uint64) error {
	backoff := minRetryBackoff
	for {
		watch := c.leaders[shard-1].watch()
		timeout := c.attemptTimeout
		if d, ok := ctx.Deadline(); ok {
			timeout = max(min(timeout, time.Until(d)), c.minTimeout())
		}
		rs, err := c.nh.ReadIndex(shard, timeout)
		if err == nil {
			select {
			case r := <-rs.ResultC():
				rs.Release()
				if r.Completed() {
					return nil
				}
			case <-ctx.Done():
				return ctx.Err()
			case <-c.stop:
				return errClosed
			}
		} else if errors.Is(err, dragonboat.ErrClosed) || errors.Is(err, dragonboat.ErrShardClosed) {
			return errClosed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stop:
			return errClosed
		case <-watch:
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// votersUp counts the voting members the status view has, and those of
// them up (this node included).
func (c *Cluster) votersUp() (up, voters int) {
	v := c.view.Load()
	if v == nil {
		return 0, 0
	}
	for _, n := range v.nodes {
		if n.NonVoting {
			continue
		}
		voters++
		if n.Up {
			up++
		}
	}
	return up, voters
}
