package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/kvstore/kv/client"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// The consistency check compares what the replicas of a shard hold at one
// point of its raft log, as etcd's corruption check compares hashes of its
// members' key spaces: replicas that applied the same entries must hold
// the same data, and a replica that does not (a bug, damage no checksum
// caught, an operator's edit) would answer reads wrongly for good.
//
// The point is a cmdHash entry with a random token: a node proposes it
// through the shard's proposer, and every replica, applying it, hashes its
// state as of the entries before it (hashJob), whenever its Update runs and
// however dragonboat split the entries into Updates. Then the node asks
// every member for its hash of the token (CLUSTER_HASH over the client
// port) and compares. The entry changes nothing, so a replica of an
// earlier build, which skips an unknown kind, stays consistent.

// maxHashJobs bounds the hash results a replica keeps.
const maxHashJobs = 16

// hashJob is one replica's hash of its state at a cmdHash entry.
type hashJob struct {
	index uint64
	done  chan struct{}
	// set before done closes
	sum  string // hex SHA-256 of the state
	keys int64
	err  error
}

// hashJobs are a replica's hash jobs, by token.
type hashJobs struct {
	mu   sync.Mutex
	jobs map[uint64]*hashJob
}

func (h *hashJobs) add(token uint64, j *hashJob) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.jobs == nil {
		h.jobs = make(map[uint64]*hashJob)
	}
	h.jobs[token] = j
	for len(h.jobs) > maxHashJobs {
		var oldest uint64
		first := true
		for t, j := range h.jobs {
			if first || j.index < h.jobs[oldest].index {
				oldest, first = t, false
			}
		}
		delete(h.jobs, oldest)
	}
}

func (h *hashJobs) get(token uint64) *hashJob {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.jobs[token]
}

// startHash begins hashing the state as it is now, which Update has made
// the state after every entry before index (the cmdHash entry). The view
// is taken here, on the apply goroutine; the reading happens on another.
// The applied index is left out: a replica restored from a snapshot
// records the snapshot's index, which may be a raft entry (a membership
// change) that the others never record.
func (s *stateMachine) startHash(db *lsm.DB, token, index uint64) {
	j := &hashJob{index: index, done: make(chan struct{})}
	it := db.NewIterator(nil, nil)
	s.hashes.add(token, j)
	go func() {
		defer close(j.done)
		defer it.Close()
		h := sha256.New()
		var lens [16]byte
		for ok := it.First(); ok; ok = it.Next() {
			k, v := it.Key(), it.Value()
			if bytes.Equal(k, appliedKey) {
				continue
			}
			binary.BigEndian.PutUint64(lens[:8], uint64(len(k)))
			binary.BigEndian.PutUint64(lens[8:], uint64(len(v)))
			h.Write(lens[:])
			h.Write(k)
			h.Write(v)
			if len(k) > 0 && k[0] == prefixUser {
				j.keys++
			}
		}
		if err := it.Err(); err != nil {
			j.err = fmt.Errorf("read the state at entry %d: %w", index, err)
			return
		}
		j.sum = hex.EncodeToString(h.Sum(nil))
	}()
}

// ReplicaHash is this node's hash of its replica of shard at the cmdHash
// entry token names (index is that entry's index on the node that
// proposed it): it waits, until ctx ends, for the replica to apply the
// entry and to hash its state.
func (c *Cluster) ReplicaHash(ctx context.Context, shard, token, index uint64) (store.ReplicaHash, error) {
	rh := store.ReplicaHash{Node: c.nodeID}
	if err := c.serving(); err != nil {
		return rh, err
	}
	c.smMu.Lock()
	s := c.sms[shard]
	c.smMu.Unlock()
	if s == nil {
		return rh, fmt.Errorf("shard %d has no replica on node %d", shard, c.nodeID)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if j := s.hashes.get(token); j != nil {
			select {
			case <-j.done:
			case <-ctx.Done():
				return rh, fmt.Errorf("hash of shard %d at entry %d not done: %w", shard, index, ctx.Err())
			}
			if j.err != nil {
				return rh, j.err
			}
			rh.Hash, rh.Keys = j.sum, j.keys
			return rh, nil
		}
		if a := s.appliedIndex.Load(); index > 0 && a > index {
			return rh, fmt.Errorf("the replica of shard %d is past entry %d without having applied it (it caught up by snapshot), or dropped its hash", shard, index)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return rh, fmt.Errorf("replica of shard %d has not applied entry %d: %w", shard, index, ctx.Err())
		}
	}
}

// CheckConsistency compares every shard's replicas at one point of its
// log (see above), shard by shard. A member that cannot be asked (down,
// or the check timed out) leaves its shard "incomplete"; replicas that
// differ make it "inconsistent". The error is for a check that could not
// run at all.
func (c *Cluster) CheckConsistency(ctx context.Context) ([]store.ShardCheck, error) {
	if err := c.serving(); err != nil {
		return nil, err
	}
	if err := c.requireKind(cmdHash, "the consistency check"); err != nil {
		return nil, err
	}
	var out []store.ShardCheck
	for shard := uint64(1); shard <= uint64(c.shards); shard++ {
		sc, err := c.checkShard(ctx, shard)
		if err != nil {
			return out, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func (c *Cluster) checkShard(ctx context.Context, shard uint64) (store.ShardCheck, error) {
	sc := store.ShardCheck{Shard: shard}
	var tb [8]byte
	if _, err := rand.Read(tb[:]); err != nil {
		return sc, fmt.Errorf("check shard %d: %w", shard, err)
	}
	token := binary.LittleEndian.Uint64(tb[:])
	pctx, cancel := context.WithTimeout(ctx, c.timeout)
	err := c.proposeWait(pctx, shard, cmdHash, tb[:])
	cancel()
	if err != nil {
		return sc, fmt.Errorf("check shard %d: %w", shard, err)
	}
	c.smMu.Lock()
	s := c.sms[shard]
	c.smMu.Unlock()
	// The proposal's result came from this replica's Update, which
	// recorded the job first.
	j := s.hashes.get(token)
	if j == nil {
		return sc, fmt.Errorf("check shard %d: the entry was applied but no hash was recorded", shard)
	}
	sc.Index = j.index
	nodes := c.Nodes()
	replicas := make([]store.ReplicaHash, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rh store.ReplicaHash
			var err error
			if n.ID == c.nodeID {
				rh, err = c.ReplicaHash(ctx, shard, token, j.index)
			} else {
				rh, err = c.askReplicaHash(ctx, n, shard, token, j.index)
			}
			rh.Node = n.ID
			if err != nil {
				rh.Err = err.Error()
				rh.Unreachable = errors.Is(err, errUnreachable)
			}
			replicas[i] = rh
		}()
	}
	wg.Wait()
	sc.Replicas = replicas
	sc.State = "consistent"
	var first string
	for _, rh := range replicas {
		switch {
		case rh.Err != "":
			if sc.State == "consistent" {
				sc.State = "incomplete"
			}
		case first == "":
			first = rh.Hash
		case rh.Hash != first:
			sc.State = "inconsistent"
		}
	}
	return sc, nil
}

// errUnreachable is wrapped by the error of a member that could not be
// asked for its hash.
var errUnreachable = errors.New("unreachable")

// askReplicaHash asks member n for its hash (CLUSTER_HASH), with the
// cluster's password.
func (c *Cluster) askReplicaHash(ctx context.Context, n store.Node, shard, token, index uint64) (store.ReplicaHash, error) {
	rh := store.ReplicaHash{Node: n.ID}
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	cl, err := client.Dial(n.Client, client.Options{Password: c.cfg.Server.RequirePass, PoolSize: 1,
		DialTimeout: min(timeout, 2*time.Second), Timeout: timeout})
	if err != nil {
		return rh, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer cl.Close()
	f, err := cl.Do(ctx, []byte("CLUSTER_HASH"), strconv.AppendUint(nil, shard, 10),
		strconv.AppendUint(nil, token, 10), strconv.AppendUint(nil, index, 10))
	if err != nil {
		return rh, err
	}
	if len(f) != 3 || string(f[0]) != "HASH" {
		return rh, fmt.Errorf("unexpected reply to CLUSTER_HASH: %q", f)
	}
	rh.Hash = string(f[1])
	if rh.Keys, err = strconv.ParseInt(string(f[2]), 10, 64); err != nil {
		return rh, fmt.Errorf("unexpected reply to CLUSTER_HASH: %q", f)
	}
	return rh, nil
}
