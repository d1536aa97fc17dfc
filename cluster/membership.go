package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/kvstore/kv/store"
)

// Join adds node id, reachable for raft at raftAddr and for clients at
// client, to every shard, after recording its client address in shard 1.
// It refuses ids that are or were members: dragonboat never lets a removed
// replica id back in, and a second node under a live id would corrupt the
// shards. A join interrupted part way (some shards added) can be repeated
// with the same addresses and completes the rest.
func (c *Cluster) Join(id uint64, raftAddr, client string, done func(error)) {
	c.background(func() error { return c.join(id, raftAddr, client) }, done)
}

// Remove takes node id out of every shard.
func (c *Cluster) Remove(id uint64, done func(error)) {
	c.background(func() error { return c.remove(id) }, done)
}

// background runs a membership change on its own goroutine; Close waits
// for it.
func (c *Cluster) background(fn func() error, done func(error)) {
	c.bgMu.Lock()
	if c.bgClosed {
		c.bgMu.Unlock()
		done(errClosed)
		return
	}
	c.loops.Add(1)
	c.bgMu.Unlock()
	go func() {
		defer c.loops.Done()
		done(fn())
	}()
}

// membershipTimeout bounds a whole Join or Remove.
func (c *Cluster) membershipTimeout() time.Duration {
	return max(3*c.timeout, 10*time.Second)
}

func sameAddr(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

func (c *Cluster) join(id uint64, raftAddr, client string) error {
	if id == 0 {
		return errors.New("invalid node id 0")
	}
	if strings.TrimSpace(raftAddr) == "" {
		return errors.New("join needs the node's raft address")
	}
	ctx, cancel := context.WithTimeout(c.stopCtx, c.membershipTimeout())
	defer cancel()
	ms := make([]*dragonboat.Membership, c.shards)
	present := 0
	for i := range ms {
		shard := uint64(i + 1)
		m, err := c.membership(ctx, shard)
		if err != nil {
			return err
		}
		if _, ok := m.Removed[id]; ok {
			return fmt.Errorf("node %d was removed from the cluster and node ids cannot be reused; give the new node another cluster.node_id", id)
		}
		if addr, ok := m.Nodes[id]; ok {
			if !sameAddr(addr, raftAddr) {
				return fmt.Errorf("node %d is already a member (raft address %s)", id, addr)
			}
			present++
		}
		for other, addr := range m.Nodes {
			if other != id && sameAddr(addr, raftAddr) {
				return fmt.Errorf("raft address %s is already used by node %d", raftAddr, other)
			}
		}
		ms[i] = m
	}
	if present == c.shards {
		return fmt.Errorf("node %d is already a member", id)
	}
	// From here on every step changes the cluster: a failure says what
	// was done before it (the steps are idempotent, so the same join again
	// completes it).
	if recorded, err := c.recordAddresses(ctx, ms[0], member{ID: id, Raft: raftAddr, Client: client}); err != nil {
		err = fmt.Errorf("join node %d: %w", id, err)
		if recorded > 0 {
			err = partlyDone(err, 0)
		}
		return err
	}
	added := 0
	for i, m := range ms {
		shard := uint64(i + 1)
		if _, ok := m.Nodes[id]; ok {
			continue
		}
		if err := c.addReplica(ctx, shard, id, raftAddr, m); err != nil {
			return partlyDone(fmt.Errorf("join node %d: shard %d: %w", id, shard, err), added)
		}
		added++
	}
	c.log.Info("node joined", "id", id, "raft", raftAddr, "client", client)
	return nil
}

// recordAddresses records in shard 1 the client addresses of the initial
// members (from this node's cluster.members) that are still in the cluster
// and not recorded yet, then the joining node's. Only joined nodes need
// the initial members': they have no member list of their own, and
// CLUSTER_NODES and CLUSTER_LEADER show every node's client address. It
// returns how many records it wrote.
func (c *Cluster) recordAddresses(ctx context.Context, m *dragonboat.Membership, joiner member) (int, error) {
	recorded := make(map[uint64]bool)
	for _, r := range c.registeredMembers() {
		recorded[r.ID] = true
	}
	n := 0
	for _, im := range c.cfg.Cluster.Members {
		if _, ok := m.Nodes[im.ID]; !ok || recorded[im.ID] || im.Client == "" {
			continue
		}
		rec := member{ID: im.ID, Raft: im.Raft, Client: im.Client}
		if err := c.proposeWait(ctx, 1, cmdMember, encodeMemberValue(rec)); err != nil {
			return n, fmt.Errorf("record the address of member %d: %w", im.ID, err)
		}
		n++
	}
	if err := c.proposeWait(ctx, 1, cmdMember, encodeMemberValue(joiner)); err != nil {
		return n, fmt.Errorf("record its address: %w", err)
	}
	return n + 1, nil
}

// isAlreadyMember recognises Join's refusal of a node that is a member of
// every shard already.
func isAlreadyMember(msg string) bool {
	return strings.Contains(msg, "is already a member")
}

func (c *Cluster) addReplica(ctx context.Context, shard, id uint64, raftAddr string, m *dragonboat.Membership) error {
	return c.changeReplica(ctx, shard, m,
		func(ctx context.Context, ccid uint64) error {
			return c.nh.SyncRequestAddReplica(ctx, shard, id, raftAddr, ccid)
		},
		func(m *dragonboat.Membership) (bool, error) {
			if _, ok := m.Nodes[id]; ok {
				return true, nil
			}
			if _, ok := m.Removed[id]; ok {
				return false, fmt.Errorf("node %d was removed from shard %d meanwhile", id, shard)
			}
			return false, nil
		})
}

// partlyDone marks a membership command's failure after some of its steps
// changed the cluster (shards is how many shards it changed; 0: only
// address records), so the reply does not read as "nothing happened".
func partlyDone(err error, shards int) error {
	what := "its first steps were applied"
	if shards > 0 {
		what = fmt.Sprintf("%d shard(s) were changed before it", shards)
	}
	return fmt.Errorf("%w (%s; the same command again completes it)", err, what)
}

// changeReplica runs one membership change on shard until it is in effect
// (applied reports that from a fresh membership, or an error that makes
// retrying pointless) or fails for good.
// Rejected (another change got in first), busy, or timed out with an
// unknown outcome: look at the membership again and retry. Once an attempt
// timed out it may still take effect, so a failure after it is an unknown
// outcome, whatever the later error.
func (c *Cluster) changeReplica(ctx context.Context, shard uint64, m *dragonboat.Membership,
	request func(ctx context.Context, ccid uint64) error, applied func(*dragonboat.Membership) (bool, error)) error {
	backoff := 10 * time.Millisecond
	unknown := false
	fail := func(err error) error {
		if unknown && !errors.Is(err, store.ErrTimeout) {
			return fmt.Errorf("%w (membership change on shard %d: %v)", store.ErrTimeout, shard, err)
		}
		return err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, c.timeout)
		err := request(actx, m.ConfigChangeID)
		cancel()
		if err == nil {
			return nil
		}
		// Timed out or cut short (the node is stopping) after it was handed
		// to dragonboat: it may still commit.
		unknown = unknown || errors.Is(err, dragonboat.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
			errors.Is(err, dragonboat.ErrCanceled) || errors.Is(err, context.Canceled) || errors.Is(err, dragonboat.ErrShardClosed)
		if !retryableMembershipError(err) || ctx.Err() != nil {
			return fail(c.membershipError(shard, err, ctx))
		}
		if c.sleepOrStop(backoff, nil) {
			return fail(errClosed)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
		if m, err = c.membership(ctx, shard); err != nil {
			return fail(err)
		}
		if ok, err := applied(m); ok || err != nil {
			return err
		}
	}
}

func (c *Cluster) remove(id uint64) error {
	ctx, cancel := context.WithTimeout(c.stopCtx, c.membershipTimeout())
	defer cancel()
	ms := make([]*dragonboat.Membership, c.shards)
	present, removed := 0, 0
	for i := range ms {
		m, err := c.membership(ctx, uint64(i+1))
		if err != nil {
			return err
		}
		if _, ok := m.Nodes[id]; ok {
			present++
			if len(m.Nodes) == 1 {
				return fmt.Errorf("node %d is the last member of shard %d and cannot be removed", id, i+1)
			}
		}
		if _, ok := m.Removed[id]; ok {
			removed++
		}
		ms[i] = m
	}
	if present == 0 {
		if removed > 0 {
			return fmt.Errorf("node %d was already removed", id)
		}
		return fmt.Errorf("node %d is not a member", id)
	}
	done := 0
	for i, m := range ms {
		shard := uint64(i + 1)
		if _, ok := m.Nodes[id]; !ok {
			continue
		}
		if err := c.deleteReplica(ctx, shard, id, m); err != nil {
			err = fmt.Errorf("remove node %d: shard %d: %w", id, shard, err)
			if done > 0 {
				err = partlyDone(err, done)
			}
			return err
		}
		done++
	}
	// The address record only serves CLUSTER_NODES, which no longer lists
	// the node; dropping it is tidiness, not correctness.
	if err := c.proposeWait(ctx, 1, cmdForget, encodeForget(id)); err != nil {
		c.log.Warn("forget removed node's address", "id", id, "err", err)
	}
	c.log.Info("node removed", "id", id)
	return nil
}

func (c *Cluster) deleteReplica(ctx context.Context, shard, id uint64, m *dragonboat.Membership) error {
	return c.changeReplica(ctx, shard, m,
		func(ctx context.Context, ccid uint64) error {
			return c.nh.SyncRequestDeleteReplica(ctx, shard, id, ccid)
		},
		func(m *dragonboat.Membership) (bool, error) { _, ok := m.Nodes[id]; return !ok, nil })
}

func retryableMembershipError(err error) bool {
	return errors.Is(err, dragonboat.ErrRejected) || dragonboat.IsTempError(err) ||
		errors.Is(err, context.DeadlineExceeded)
}

// membershipError words a failed membership step for the reply.
func (c *Cluster) membershipError(shard uint64, err error, ctx context.Context) error {
	if c.closed.Load() {
		return errClosed
	}
	if ctx.Err() != nil || errors.Is(err, dragonboat.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		if _, _, ok, _ := c.nh.GetLeaderID(shard); !ok {
			return errNoLeader(shard)
		}
		return fmt.Errorf("%w (membership change on shard %d)", store.ErrTimeout, shard)
	}
	return c.mapError(shard, err)
}

// membership reads a shard's membership linearizably, retrying temporary
// failures until ctx ends.
func (c *Cluster) membership(ctx context.Context, shard uint64) (*dragonboat.Membership, error) {
	backoff := 5 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
		m, err := c.nh.SyncGetShardMembership(actx, shard)
		cancel()
		if err == nil {
			return m, nil
		}
		if !dragonboat.IsTempError(err) && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return nil, c.membershipError(shard, err, ctx)
		}
		if c.sleepOrStop(backoff, c.leaders[shard-1].watch()) {
			return nil, errClosed
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// proposeWait proposes one command through shard's proposer and waits for
// it.
func (c *Cluster) proposeWait(ctx context.Context, shard uint64, kind byte, body []byte) error {
	ch := make(chan error, 1)
	c.proposers[shard-1].enqueue(&writeOp{
		kind:     kind,
		data:     body,
		deadline: time.Now().Add(c.timeout),
		done:     func(err error) { ch <- err },
	})
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("timeout: outcome unknown: %w", ctx.Err())
	}
}
