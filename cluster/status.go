package cluster

import (
	"cmp"
	"context"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/kvstore/kv/store"
)

const (
	// statusInterval is how often the cached status is rebuilt.
	statusInterval = 500 * time.Millisecond
	// dialTimeout bounds the connect of a liveness probe of a member's
	// raft port, probeTimeout the whole probe: a process that is stopped
	// or hung still has its port accepting connections (the kernel does
	// that), so the probe also waits for the member to answer.
	dialTimeout  = 300 * time.Millisecond
	probeTimeout = time.Second
)

// view is a snapshot of the cluster's state as this node sees it, rebuilt
// in the background so Status, Nodes and Leader never wait on the network.
type view struct {
	status store.Status
	nodes  []store.Node // by id
	// lowSpace lists the other members that answered the last probe as
	// short of disk space: writes are refused while any is (space.go).
	lowSpace []memberSpace
	// leaving lists the other members that answered the last probe as
	// stopping.
	leaving map[uint64]bool
	// kinds is each member's newest raft command kind, as it last
	// answered a probe (requireKind).
	kinds map[uint64]byte
}

func (c *Cluster) statusLoop() { c.every(statusInterval, c.refresh) }

// every runs f every d until the node stops; it is a background loop
// (c.loops).
func (c *Cluster) every(d time.Duration, f func()) {
	defer c.loops.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			f()
		}
	}
}

// refresh rebuilds the view of the members: the union of every local
// replica's membership, voters and non-voting replicas (the configured
// members until a replica knows better); a member is up if it answers a
// probe on its raft port (probeMember; this node always is). Leaders are
// not cached: Status asks dragonboat, which keeps them in memory.
func (c *Cluster) refresh() {
	// The status loop and the end of a membership change both refresh.
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	raftAddrs := make(map[uint64]string)
	nonVoting := make(map[uint64]bool)
	if info := c.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}); info != nil {
		c.refreshMembers(info.ShardInfoList)
		c.refreshRemoved()
		for _, si := range info.ShardInfoList {
			for id, addr := range si.Replicas {
				raftAddrs[id] = addr
			}
			if si.Pending || si.ShardID < 1 || si.ShardID > uint64(len(c.members)) {
				continue
			}
			m := c.members[si.ShardID-1]
			if m == nil {
				continue
			}
			for id, addr := range m.NonVotings {
				// Replicas is current, the cached membership may be a
				// change behind: a voter there is no longer non-voting.
				if _, voter := si.Replicas[id]; !voter {
					nonVoting[id] = true
					if _, ok := raftAddrs[id]; !ok {
						raftAddrs[id] = addr
					}
				}
			}
		}
	}
	if len(raftAddrs) == 0 {
		// Until a replica reports membership, the bootstrap list is it.
		for _, m := range c.cfg.Cluster.Members {
			raftAddrs[m.ID] = m.Raft
		}
	}
	clients := make(map[uint64]string)
	for _, m := range c.cfg.Cluster.Members {
		clients[m.ID] = m.Client
	}
	for _, m := range c.registeredMembers() {
		clients[m.ID] = m.Client
	}
	if _, ok := clients[c.nodeID]; !ok {
		clients[c.nodeID] = c.clientAddress()
	}
	nodes, answers := c.probe(raftAddrs, clients)
	low := lowSpace(answers)
	c.noteLowSpace(low)

	up, nv := 0, 0
	for i := range nodes {
		if nodes[i].Up {
			up++
		}
		if nonVoting[nodes[i].ID] {
			nodes[i].NonVoting = true
			nv++
		}
	}
	st := store.Status{
		Mode:           "cluster",
		NodeID:         c.nodeID,
		Nodes:          len(nodes),
		NodesUp:        up,
		Shards:         c.shards,
		NodesNonVoting: nv,
	}
	leaving := make(map[uint64]bool)
	for id, a := range answers {
		if a.leaving {
			leaving[id] = true
		}
	}
	c.view.Store(&view{status: st, nodes: nodes, lowSpace: low, leaving: leaving, kinds: knownKinds(c.view.Load(), answers)})
}

// refreshRemoved gives the transport the replicas the cached memberships
// list as removed.
func (c *Cluster) refreshRemoved() {
	known := make(map[shardReplica]struct{})
	for i, m := range c.members {
		if m == nil {
			continue
		}
		for id := range m.Removed {
			known[shardReplica{uint64(i + 1), id}] = struct{}{}
		}
	}
	c.removals.known.Store(&known)
}

// refreshMembers re-reads, at once, the membership of each shard whose
// configuration changed since it was cached. Dragonboat reports a local
// replica's voters and configuration change index without a network
// round, but not its non-voting replicas; only a linearizable read
// (ReadIndex) gives those, so it is made when the index moved, not twice
// a second. A shard without a known leader is left for a later refresh
// rather than held up for: a read there would only time out.
func (c *Cluster) refreshMembers(infos []dragonboat.ShardInfo) {
	if c.members == nil {
		c.members = make([]*dragonboat.Membership, c.shards)
	}
	ctx, cancel := context.WithTimeout(c.stopCtx, min(c.attemptTimeout, time.Second))
	defer cancel()
	var wg sync.WaitGroup
	for _, si := range infos {
		if si.Pending || si.ShardID < 1 || si.ShardID > uint64(c.shards) {
			continue
		}
		i := si.ShardID - 1
		if m := c.members[i]; m != nil && m.ConfigChangeID == si.ConfigChangeIndex {
			continue
		}
		if _, _, ok, err := c.nh.GetLeaderID(si.ShardID); err != nil || !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m, err := c.nh.SyncGetShardMembership(ctx, si.ShardID); err == nil {
				c.members[i] = m
			}
		}()
	}
	wg.Wait()
}

// probe builds the member list, dialling every other member's raft port
// at once, with the answers of those up.
func (c *Cluster) probe(raftAddrs map[uint64]string, clients map[uint64]string) ([]store.Node, map[uint64]probeAnswer) {
	if _, ok := raftAddrs[c.nodeID]; !ok {
		raftAddrs[c.nodeID] = c.cfg.Cluster.RaftAddress
	}
	nodes := make([]store.Node, 0, len(raftAddrs))
	for id, addr := range raftAddrs {
		nodes = append(nodes, store.Node{ID: id, Raft: addr, Client: clients[id]})
	}
	slices.SortFunc(nodes, func(a, b store.Node) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	answers := make([]probeAnswer, len(nodes))
	var wg sync.WaitGroup
	for i := range nodes {
		if nodes[i].ID == c.nodeID {
			nodes[i].Up = true
			continue
		}
		wg.Add(1)
		go func(n *store.Node, a *probeAnswer) {
			defer wg.Done()
			n.Up, *a = probeMemberAnswer(c.tls, n.Raft)
		}(&nodes[i], &answers[i])
	}
	wg.Wait()
	up := make(map[uint64]probeAnswer)
	for i, a := range answers {
		if nodes[i].Up && nodes[i].ID != c.nodeID {
			up[nodes[i].ID] = a
		}
	}
	return nodes, up
}

// lowSpace lists the members whose answer says they are short of space.
func lowSpace(answers map[uint64]probeAnswer) []memberSpace {
	var low []memberSpace
	for id, a := range answers {
		if a.low {
			low = append(low, memberSpace{id: id, avail: a.avail})
		}
	}
	slices.SortFunc(low, func(a, b memberSpace) int { return cmp.Compare(a.id, b.id) })
	return low
}

// knownKinds is each member's newest command kind by its latest answer:
// this refresh's, or an earlier one's for a member down now.
func knownKinds(before *view, answers map[uint64]probeAnswer) map[uint64]byte {
	kinds := make(map[uint64]byte, len(answers))
	if before != nil {
		maps.Copy(kinds, before.kinds)
	}
	for id, a := range answers {
		kinds[id] = a.maxKind
	}
	return kinds
}

// noteLowSpace logs the members that became, or stopped being, short of
// disk space since the last refresh.
func (c *Cluster) noteLowSpace(now []memberSpace) {
	var before []memberSpace
	if v := c.view.Load(); v != nil {
		before = v.lowSpace
	}
	has := func(list []memberSpace, id uint64) bool {
		return slices.ContainsFunc(list, func(m memberSpace) bool { return m.id == id })
	}
	for _, m := range now {
		if !has(before, m.id) {
			c.log.Warn("a member is short of disk space: refusing writes until it has room again", "member", m.id, "free", fmtBytes(m.avail))
		}
	}
	for _, m := range before {
		if !has(now, m.id) {
			c.log.Info("a member is no longer short of disk space (or no longer answers)", "member", m.id)
		}
	}
}

// probeMember reports whether the member at raftAddr answers on its raft
// port: it sends the transport's end-of-stream frame, which a serving
// transport answers at once (frameClosed), as it does for a snapshot stream.
func probeMember(p *peerTLS, raftAddr string) bool {
	up, _ := probeMemberAnswer(p, raftAddr)
	return up
}

// probeMemberAnswer is probeMember that also returns the answer (probe.go).
func probeMemberAnswer(p *peerTLS, raftAddr string) (bool, probeAnswer) {
	conn, err := net.DialTimeout("tcp", raftAddr, dialTimeout)
	if err != nil {
		return false, probeAnswer{}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(probeTimeout))
	if conn, err = p.secure(context.Background(), conn, raftAddr); err != nil {
		return false, probeAnswer{}
	}
	if _, err := conn.Write(appendFrameHeader(nil, frameClose, nil)); err != nil {
		return false, probeAnswer{}
	}
	// A member with cluster.secret set sends its challenge first.
	kind, payload, err := firstFrameAfterChallenge(conn)
	if err != nil || kind != frameClosed {
		return false, probeAnswer{}
	}
	return true, parseProbeAnswer(payload)
}

// registeredMembers reads the member records of shard 1 from the local
// replica (nil until it is open).
func (c *Cluster) registeredMembers() []member {
	v, err := c.nh.StaleRead(1, membersQuery{})
	if err != nil {
		return nil
	}
	ms, _ := v.([]member)
	return ms
}

// Status reports the members as of the last refresh and the shards'
// leaders as of now; it never blocks on the network.
func (c *Cluster) Status() store.Status {
	st := store.Status{Mode: "cluster", NodeID: c.nodeID, Shards: c.shards}
	if v := c.view.Load(); v != nil {
		st = v.status
	}
	for s := uint64(1); s <= uint64(c.shards); s++ {
		if id, _, ok, err := c.nh.GetLeaderID(s); err == nil && ok {
			st.ShardsWithLeader++
			if id == c.nodeID { // replica ids are node ids
				st.ShardsLed++
			}
		}
	}
	st.LeaderMoves = c.leaderMoves.Load()
	st.ProposalRechecks = c.rechecks.Load()
	switch {
	case st.ShardsWithLeader < c.shards:
		st.State = "unavailable"
	case st.NodesUp < st.Nodes:
		st.State = "degraded"
	default:
		st.State = "healthy"
	}
	return st
}

// Nodes lists the members as of the last refresh.
func (c *Cluster) Nodes() []store.Node {
	if v := c.view.Load(); v != nil {
		return slices.Clone(v.nodes)
	}
	return nil
}

// Leader reports the member leading the shard that owns key, as this node
// currently knows it.
func (c *Cluster) Leader(key []byte) (store.Node, error) {
	shard := shardOf(key, c.shards)
	id, _, ok, err := c.nh.GetLeaderID(shard)
	if err != nil || !ok || id == 0 {
		return store.Node{}, errNoLeader(shard)
	}
	// A leader this node follows is up as far as raft is concerned, even
	// if the last liveness probe is older than its election.
	if v := c.view.Load(); v != nil {
		for _, n := range v.nodes {
			if n.ID == id {
				n.Up = true
				return n, nil
			}
		}
	}
	return store.Node{ID: id, Up: true}, nil
}
