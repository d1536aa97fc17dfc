package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lni/dragonboat/v4"

	"github.com/kvstore/kv/store"
)

// Join adds node id, reachable for raft at raftAddr and for clients at
// client, to every shard as a non-voting replica, after recording its
// client address in shard 1; the node promotes itself to a voter of each
// shard once its replica there has caught up (promoteLoop). It refuses ids
// that are or were members: dragonboat never lets a removed replica id back
// in, and a second node under a live id would corrupt the shards. It also
// refuses, before changing anything, addresses that are not host:port and a
// node whose raft port does not answer (a joining node serves it before it
// asks). A non-voting replica changes no quorum, so the quorum check is the
// promotion's (promoteQuorumError), not the join's. A join interrupted part
// way (some shards added) can be repeated with the same addresses and
// completes the rest.
func (c *Cluster) Join(id uint64, raftAddr, client string, done func(error)) {
	c.background(func() error { return c.join(id, raftAddr, client) }, done)
}

// Remove takes node id out of every shard.
func (c *Cluster) Remove(id uint64, done func(error)) {
	c.background(func() error { return c.remove(id) }, done)
}

// background runs fn (a membership change, or stopping a removed node's
// replicas) on its own goroutine; Close waits for it. The status view is
// rebuilt before done runs, so that CLUSTER_NODES right after a change's
// reply shows it.
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
		err := fn()
		if !c.closed.Load() {
			c.refresh()
		}
		done(err)
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
	present, nonVoting := 0, 0
	for i := range ms {
		shard := uint64(i + 1)
		m, err := c.membership(ctx, shard)
		if err != nil {
			return err
		}
		if _, ok := m.Removed[id]; ok {
			return fmt.Errorf("node %d was removed from the cluster and node ids cannot be reused; give the new node another cluster.node_id", id)
		}
		if addr, ok := memberAddr(m, id); ok {
			if !sameAddr(addr, raftAddr) {
				return fmt.Errorf("node %d is already a member (raft address %s)", id, addr)
			}
			present++
			if _, ok := m.NonVotings[id]; ok {
				nonVoting++
			}
		}
		for _, replicas := range []map[uint64]string{m.Nodes, m.NonVotings} {
			for other, addr := range replicas {
				if other != id && sameAddr(addr, raftAddr) {
					return fmt.Errorf("raft address %s is already used by node %d", raftAddr, other)
				}
			}
		}
		ms[i] = m
	}
	if present == c.shards {
		return errors.New(alreadyMemberMsg(id, nonVoting, c.shards))
	}
	// The checks above come first: a repeated join of a member gets "already
	// a member", which a joiner whose earlier request may have been carried
	// out takes as its success (sendJoin).
	if err := checkJoin(c.tls, id, raftAddr, client); err != nil {
		return err
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
		if _, ok := memberAddr(m, id); ok {
			continue
		}
		if err := c.addNonVoting(ctx, shard, id, raftAddr, m); err != nil {
			return partlyDone(fmt.Errorf("join node %d: shard %d: %w", id, shard, err), added)
		}
		added++
	}
	c.log.Info("node joined as non-voting", "id", id, "raft", raftAddr, "client", client)
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

// alreadyMemberMsg is Join's refusal of node id, a member of every shard
// at the address it asks with and non-voting in nonVoting of them. A node
// that is a voter everywhere gets the plain form, as from earlier builds,
// which refused only voters (they added joiners as voters).
func alreadyMemberMsg(id uint64, nonVoting, shards int) string {
	msg := fmt.Sprintf("node %d is already a member", id)
	if nonVoting > 0 {
		msg += fmt.Sprintf(", non-voting in %d of %d shards", nonVoting, shards)
	}
	return msg
}

// parseAlreadyMember recognises alreadyMemberMsg's refusal of node id, and
// reports whether it says the node is non-voting in some shard. The
// refusal of id held at another raft address ("node N is already a member
// (raft address ...)") is not one: that is another node under this id.
func parseAlreadyMember(msg string, id uint64) (member, nonVoting bool) {
	rest, ok := strings.CutPrefix(msg, fmt.Sprintf("node %d is already a member", id))
	switch {
	case !ok:
		return false, false
	case rest == "":
		return true, false
	case strings.HasPrefix(rest, ", non-voting in "):
		return true, true
	}
	return false, false
}

// checkJoin refuses a join that must not change the cluster, before it
// changes anything: an address that is not host:port, or a node whose raft
// port does not answer.
func checkJoin(p *peerTLS, id uint64, raftAddr, client string) error {
	if err := checkHostPort(raftAddr, true); err != nil {
		return fmt.Errorf("invalid raft address %s for node %d: %w", shortQuote(raftAddr), id, err)
	}
	// A node may listen for clients on every interface (":8080"), as its
	// server.listen allows, so the host may be empty.
	if err := checkHostPort(client, false); err != nil {
		return fmt.Errorf("invalid client address %s for node %d: %w", shortQuote(client), id, err)
	}
	// A joining node starts its raft transport (NewNodeHost) before it sends
	// CLUSTER_JOIN, so one that does not answer now is not running, or not
	// reachable at that address. As a non-voter it would count against no
	// quorum, but the leaders would keep sending to it for nothing.
	if !probeMember(p, raftAddr) {
		return fmt.Errorf("join of node %d refused: its raft address %s does not answer (a joining node listens there before it asks to join); check that it runs and that this member reaches that address", id, raftAddr)
	}
	return nil
}

// memberAddr reports node id's raft address in m if it is a voter or a
// non-voting replica there.
func memberAddr(m *dragonboat.Membership, id uint64) (string, bool) {
	if addr, ok := m.Nodes[id]; ok {
		return addr, true
	}
	addr, ok := m.NonVotings[id]
	return addr, ok
}

// promoteQuorum reports how many live voters a shard of voters voters needs
// once a caught-up non-voting replica is promoted (its quorum, n/2+1 of the
// grown shard), and whether live voters, with the promoted node (which has
// just shown it is up and caught up), are enough. If they are not, a
// failure of the new voter would leave the shard without a quorum for
// good: a CLUSTER_REMOVE of it needs a quorum too.
func promoteQuorum(voters, live int) (need int, ok bool) {
	need = (voters+1)/2 + 1
	return need, live+1 >= need
}

// promoteQuorumError is promoteQuorum's refusal for shard, whose voters
// are m.Nodes, of node id.
func promoteQuorumError(shard, id uint64, m *dragonboat.Membership, live *liveness) error {
	up := live.count(m, id)
	need, ok := promoteQuorum(len(m.Nodes), up)
	if ok {
		return nil
	}
	return fmt.Errorf("promotion of node %d to a voter of shard %d waits: the shard has %d voters and %d of them up; with node %d it needs %d up for a quorum: bring the down members back or CLUSTER_REMOVE them",
		id, shard, len(m.Nodes), up, id, need)
}

// liveness is which members answer on their raft port, as CLUSTER_STATUS
// counts nodes_up (probeMember; this node always is), probed afresh for one
// membership command rather than taken from the status view, which can be
// over a second old. Only the command's goroutine uses it.
type liveness struct {
	self uint64
	tls  *peerTLS
	seen map[string]bool // raft address -> answered
}

// probeMembers probes the raft addresses of every voter of ms but this
// node at once.
func (c *Cluster) probeMembers(ms []*dragonboat.Membership) *liveness {
	var addrs []string
	for _, m := range ms {
		for nid, addr := range m.Nodes {
			if nid != c.nodeID {
				addrs = append(addrs, addr)
			}
		}
	}
	return probeAll(c.tls, c.nodeID, addrs)
}

// count is how many voters of m answered, not counting node except (0:
// none; node ids start at 1).
func (l *liveness) count(m *dragonboat.Membership, except uint64) int {
	up := 0
	for nid, addr := range m.Nodes {
		if nid != except && l.up(nid, addr) {
			up++
		}
	}
	return up
}

// probeAll probes every address at once.
func probeAll(p *peerTLS, self uint64, addrs []string) *liveness {
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	up := make([]bool, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			up[i] = probeMember(p, addr)
		}()
	}
	wg.Wait()
	l := &liveness{self: self, tls: p, seen: make(map[string]bool, len(addrs))}
	for i, addr := range addrs {
		l.seen[addr] = up[i]
	}
	return l
}

// up reports whether member id at raftAddr answered, probing an address
// not seen before (a member added meanwhile).
func (l *liveness) up(id uint64, raftAddr string) bool {
	if id == l.self {
		return true
	}
	up, ok := l.seen[raftAddr]
	if !ok {
		up = probeMember(l.tls, raftAddr)
		l.seen[raftAddr] = up
	}
	return up
}

// checkHostPort accepts host:port with a port number 1-65535 and a host
// (required if needHost) of at most 253 bytes without spaces or control
// characters. Syntax only: the host is not resolved.
func checkHostPort(addr string, needHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return errors.New("want host:port with a port number 1-65535")
	}
	switch {
	case host == "" && needHost:
		return errors.New("want host:port with a host")
	case len(host) > 253:
		return errors.New("host name too long")
	case strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f || r == utf8.RuneError }):
		return errors.New("want host:port without spaces or control characters")
	}
	return nil
}

// shortQuote quotes s for an error message, cut to 64 bytes.
func shortQuote(s string) string {
	const n = 64
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q... (%d bytes)", strings.ToValidUTF8(s[:n], ""), len(s))
}

// addNonVoting adds node id to shard as a non-voting replica. The request
// is made against the membership m (which dragonboat applies only if the
// shard's configuration has not changed since, OrderedConfigChange), and
// retried against a fresh one.
func (c *Cluster) addNonVoting(ctx context.Context, shard, id uint64, raftAddr string, m *dragonboat.Membership) error {
	return c.changeReplica(ctx, shard, m, nil,
		func(ctx context.Context, ccid uint64) error {
			return c.nh.SyncRequestAddNonVoting(ctx, shard, id, raftAddr, ccid)
		},
		func(m *dragonboat.Membership) (bool, error) {
			if _, ok := memberAddr(m, id); ok {
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
	return fmt.Errorf("%w (%s; %s)", err, what, partlyDoneNote)
}

// partlyDoneNote ends partlyDone's errors.
const partlyDoneNote = "the same command again completes it"

// changeReplica runs one membership change on shard until it is in effect
// (applied reports that from a fresh membership, or an error that makes
// retrying pointless) or fails for good. check, if not nil, vets the
// membership each attempt is made against; its error ends the change.
// Rejected (another change got in first), busy, or timed out with an
// unknown outcome: look at the membership again and retry. Once an attempt
// timed out it may still take effect, so a failure after it is an unknown
// outcome, whatever the later error.
func (c *Cluster) changeReplica(ctx context.Context, shard uint64, m *dragonboat.Membership, check func(*dragonboat.Membership) error,
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
		if check != nil {
			if err := check(m); err != nil {
				return fail(err)
			}
		}
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
		if _, ok := memberAddr(m, id); ok {
			present++
		}
		if _, ok := m.Nodes[id]; ok && len(m.Nodes) == 1 {
			return fmt.Errorf("node %d is the last voter of shard %d and cannot be removed", id, i+1)
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
	live := c.probeMembers(ms)
	for i, m := range ms {
		if err := removeQuorumError(uint64(i+1), id, m, live); err != nil {
			return err
		}
	}
	done := 0
	for i, m := range ms {
		shard := uint64(i + 1)
		if _, ok := memberAddr(m, id); !ok {
			continue
		}
		if err := c.deleteReplica(ctx, shard, id, m, live); err != nil {
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

// removeQuorumError refuses the removal of voter id from shard (voters
// m.Nodes) when the voters left would have fewer live ones than their
// quorum: removing a live voter while another is down (3 voters, 1 down)
// leaves a shard that can never elect a leader again. Removing the down
// one is what such a shard needs, and passes. A non-voting replica counts
// for no quorum, so its removal always passes.
func removeQuorumError(shard, id uint64, m *dragonboat.Membership, live *liveness) error {
	if _, ok := m.Nodes[id]; !ok {
		return nil
	}
	up := live.count(m, id)
	left := len(m.Nodes) - 1
	if need := left/2 + 1; up < need {
		return fmt.Errorf("removal of node %d refused: shard %d would keep %d voters with %d of them up, fewer than the %d a quorum needs: bring the down members back first, or remove a down member instead",
			id, shard, left, up, need)
	}
	return nil
}

func (c *Cluster) deleteReplica(ctx context.Context, shard, id uint64, m *dragonboat.Membership, live *liveness) error {
	return c.changeReplica(ctx, shard, m,
		func(m *dragonboat.Membership) error { return removeQuorumError(shard, id, m, live) },
		func(ctx context.Context, ccid uint64) error {
			return c.nh.SyncRequestDeleteReplica(ctx, shard, id, ccid)
		},
		func(m *dragonboat.Membership) (bool, error) { _, ok := memberAddr(m, id); return !ok, nil })
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
