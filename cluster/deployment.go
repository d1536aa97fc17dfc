package cluster

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/kvstore/kv/conf"
)

// deployment picks the raft deployment id this node runs under, before its
// NodeHost starts. Dragonboat drops messages of another deployment, so the
// nodes of two clusters that reach each other's raft ports (a node of an
// old cluster that still lists an address another cluster now uses, or
// two clusters on one machine) ignore each other instead of mixing raft
// state. Without it, such a message crashed the receiving process
// ("inconsistent target" in dragonboat's address registry) when its replica
// id was known at another address, and was handed to raft when it was not.
//
//   - A data directory that records one (CLUSTER_IDENTITY) keeps it; one of
//     an earlier build (no record, or no identity file but shard data)
//     keeps dragonboat's default (0), as the rest of its cluster does.
//   - A new node that joins asks a member (CLUSTER_DEPLOYMENT).
//   - A new initial member derives it from what every initial member has
//     alike: the shard count and [[cluster.members]] (deriveDeployment).
func (c *Cluster) deployment(ctx context.Context) (uint64, error) {
	cc := c.cfg.Cluster
	have, found, err := readIdentity(c.fs, c.dir)
	if err != nil {
		return 0, err
	}
	if found {
		return have.Deployment, nil
	}
	// State machines exist only once replicas started, which a node of this
	// build does after recording its identity: these are an earlier build's
	// (checkIdentity then says whether they are this node's).
	if dirs, err := shardDirs(c.fs, c.dir); err != nil || len(dirs) > 0 {
		return 0, err
	}
	_, err = c.fs.Stat(c.joinMarker())
	if err == nil || len(cc.Join) > 0 {
		wait := max(6*c.timeout, 30*time.Second)
		id, err := fetchDeployment(ctx, cc.Join, c.cfg.Server.RequirePass, wait, c.log)
		if err != nil {
			return 0, fmt.Errorf("ask the cluster for its deployment id: %w", err)
		}
		return id, nil
	}
	return deriveDeployment(c.shards, cc.Members), nil
}

// deriveDeployment hashes the shard count and the initial members (id and
// raft address, in id order) into a deployment id (FNV-1a 64, never 0).
func deriveDeployment(shards int, members []conf.Member) uint64 {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b conf.Member) int { return cmp.Compare(a.ID, b.ID) })
	h := fnv.New64a()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(shards)))
	for _, m := range ms {
		h.Write(binary.BigEndian.AppendUint64(nil, m.ID))
		h.Write([]byte(m.Raft))
		h.Write([]byte{0})
	}
	return max(h.Sum64(), 1)
}

// Deployment is the raft deployment id this node runs under; a joining
// node asks for it (CLUSTER_DEPLOYMENT) before it starts raft.
func (c *Cluster) Deployment() uint64 { return c.deploymentID }
