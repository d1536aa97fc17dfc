// Package store defines what the server needs from the data layer: the
// Store interface and the values it exchanges. Two implementations exist:
// Local (one lsm engine, standalone mode, in this package) and the cluster
// package (dragonboat raft groups over lsm engines).
//
// The interface lives here rather than in server because Go matches method
// signatures by named type: cluster must name Status, Node and KV without
// importing server (cmd/kvserver wires the two together; cluster must
// never import server).
//
// Invariants every implementation keeps:
//   - done is called exactly once per call, either before the method returns
//     (on the caller's goroutine) or later from any goroutine; it must not
//     block, because in the server it hands the result to an event loop.
//   - A write's done(nil) means the write is durable under the configured
//     sync policy (and, in cluster mode, committed by a raft quorum).
//   - Slices passed in are valid only during the call; an implementation that
//     needs them later copies them. A *lsm.Batch passed to Write belongs to
//     the store until done runs. Slices passed to done belong to the receiver.
//   - Errors carry the reply text the wire protocol shows after "ERROR|":
//     "timeout: outcome unknown", "cluster unavailable: no leader for shard 3",
//     "storage unavailable: ...". ErrNotFound is returned for absent keys.
package store

import (
	"errors"

	"github.com/kvstore/kv/lsm"
)

// ErrNotFound is what Get reports for an absent key.
var ErrNotFound = lsm.ErrNotFound

// ErrTimeout reports a write whose outcome is unknown: it may or may not
// have been applied.
var ErrTimeout = errors.New("timeout: outcome unknown")

// MaxRangeBytes bounds the keys and values one Range collects, whatever
// its limit: a RANGE of 1000 pairs of 32 MiB values would otherwise build
// 32 GB. A Range that reaches it stops and reports ErrRangeTruncated with
// the pairs it has, which are complete up to the last of them.
const MaxRangeBytes = 64 << 20

// ErrRangeTruncated is what Range reports, with a prefix of its result,
// when the pairs reached MaxRangeBytes before limit.
var ErrRangeTruncated = errors.New("range reply too large: over 64 MiB of keys and values; ask for fewer pairs")

// KV is one key/value pair of a range result.
type KV struct {
	Key, Value []byte
}

// Node describes one member of the cluster.
type Node struct {
	ID     uint64
	Client string // client (pipe/RESP) address
	Raft   string // raft address; empty in standalone mode
	Up     bool
	// NonVoting is set for a node that joined and is not yet a voter of
	// every shard (it catches up as a non-voting replica first).
	NonVoting bool
}

// Status is the cluster's health as CLUSTER_STATUS reports it.
type Status struct {
	Mode             string // "standalone" or "cluster"
	State            string // "healthy", "degraded" or "unavailable"
	NodeID           uint64
	Nodes            int
	NodesUp          int
	Shards           int
	ShardsWithLeader int
	// NodesNonVoting counts the members, among Nodes, that are not yet
	// voters of every shard. Not one of PROTOCOL.md's fields: CLUSTER_STATUS
	// reports it after them, in cluster mode only.
	NodesNonVoting int
	// ShardsLed counts the shards whose leader is this node, as far as it
	// knows (INFO and metrics; not a CLUSTER_STATUS field): leaders
	// crowded on one node show there.
	ShardsLed int
	// LeaderMoves counts the leaderships this node handed to another to
	// balance leaders (cluster.balance_leaders) since it started (metrics
	// only).
	LeaderMoves uint64
	// ProposalRechecks counts writes' raft proposals this node forwarded
	// to another node's leader and sent again after no answer came
	// (metrics only): a leader that handed over, or a lossy link.
	ProposalRechecks uint64
}

// Store is the data layer as the server sees it. All methods are safe for
// concurrent use.
type Store interface {
	// Get reads one key; done receives ErrNotFound when it is absent.
	Get(key []byte, done func(value []byte, err error))
	// Write applies a batch atomically (cluster mode: atomically per shard).
	// The store does not touch b once it has called done: the caller may
	// reuse it from then on.
	Write(b *lsm.Batch, done func(err error))
	// Range returns up to limit pairs with start <= key < end in key order;
	// an empty end means no upper bound.
	// Range reports at most limit pairs with start <= key < end (nil end:
	// no bound) in key order; past MaxRangeBytes, a prefix of them and
	// ErrRangeTruncated.
	Range(start, end []byte, limit int, done func(kvs []KV, err error))
	// Clear deletes every key (FLUSHALL).
	Clear(done func(err error))
	// ApproxKeys estimates the number of live keys (DBSIZE).
	ApproxKeys() int64

	Status() Status
	Nodes() []Node
	// Leader reports the leader of the shard that owns key.
	Leader(key []byte) (Node, error)
	// Join adds a node to every shard; Remove takes one out of every shard.
	Join(id uint64, raft, client string, done func(err error))
	Remove(id uint64, done func(err error))
	// Deployment is the cluster's raft deployment id, which a joining node
	// needs before it can talk to the members; 0 in standalone mode.
	Deployment() uint64

	Close() error
}

// SyncReader is implemented by stores whose point reads usually complete
// on the caller's goroutine without waiting (standalone: memtables, block
// cache, OS page cache). The server then reads directly and encodes the
// reply in place, skipping the asynchronous completion machinery and its
// allocations.
type SyncReader interface {
	// GetSync is Get with the result returned instead of passed to done.
	// It never waits for the disk: ErrWouldBlock means the read needs it,
	// and the caller uses Get, which then reads on another goroutine
	// (unless the store is closing).
	GetSync(key []byte) ([]byte, error)
}

// ErrWouldBlock is GetSync's answer when the read would wait for the disk.
var ErrWouldBlock = lsm.ErrWouldBlock
