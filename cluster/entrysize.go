package cluster

import (
	"fmt"
	"time"

	"github.com/kvstore/kv/conf"
)

// Raft entry size, and the election timeout it calls for.
const (
	// maxCommandBytes bounds one raft command: one shard's part of a
	// write. A follower receives an entry in a message batch, which the
	// transport carries in one frame of at most maxFramePayload bytes; an
	// entry too large for one could be committed by no one, and the leader
	// would send it again forever while the shard's later writes waited
	// behind it. Write refuses such a part up front instead.
	maxCommandBytes = maxFramePayload - 1<<20

	// minLogBytesPerSec is the slowest rate at which we expect a node to
	// persist a raft entry: its LogDB write and fsync. While it persists
	// one, that node's step worker sends no heartbeats and handles no
	// message of any shard, and the ticks it missed are all counted at
	// once afterwards. Measured on a two-core VM with three nodes on one
	// disk: a 30 MiB entry took 25-230 ms, at worst 611 ms.
	minLogBytesPerSec = 64 << 20
)

// errCommandTooLarge is a write part over maxCommandBytes.
func errCommandTooLarge(shard uint64, n int) error {
	return fmt.Errorf("request too large for shard %d: %d bytes, at most %d in cluster mode", shard, n, maxCommandBytes)
}

// electionTicks is the election timeout of every shard, in ticks:
// cluster.election_rtt, raised to the time the largest entry a client can
// send (one server.max_frame_bytes request) takes to persist at
// minLogBytesPerSec.
//
// Raft needs an election timeout well above the time a round takes, and
// here a round includes persisting its entries on the leader and on the
// followers at once. With the defaults (10 ticks of 10 ms) a 30 MiB write
// stalled every node longer than that: the leader lost its quorum
// (CheckQuorum) and the followers elected another, the proposer re-sent
// the 30 MiB proposal after each leader change, each copy stalled the
// nodes again, and the request timed out as "outcome unknown" while an
// earlier copy had been applied. At 500 ms (32 MiB at 64 MiB/s) no
// election happened in 80 such writes. The price is a slower failover
// (0.5-1 s with the defaults); a smaller max_frame_bytes keeps it short.
func electionTicks(cfg conf.Config) uint64 {
	cc := cfg.Cluster
	largest := min(int64(cfg.Server.MaxFrameBytes), maxCommandBytes)
	persist := time.Duration(largest) * time.Second / minLogBytesPerSec
	tick := time.Duration(cc.RTTMillis) * time.Millisecond
	need := uint64((persist + tick - 1) / tick)
	return max(uint64(cc.ElectionRTT), need)
}
