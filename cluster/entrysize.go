package cluster

import (
	"fmt"
	"time"

	"github.com/lni/dragonboat/v4/config"

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

// logDBConfig is the NodeHost's LogDB setup: dragonboat's tiny preset (4
// MiB memtables) in one LogDB instance (see expertConfig), with room in
// its memtable queue for the largest entries a client can send.
//
// Dragonboat's pebble LogDB reports itself busy when its unflushed data
// (memtables, and large batches waiting for their flush) reaches 19/20 of
// KVWriteBufferSize × KVMaxWriteBufferNumber, and while it is busy every
// shard of the node refuses proposals (ErrSystemBusy, which the proposer
// retries until the request timeout). Pebble queues a batch over half a
// memtable as it is, at its capacity (a power of two), so with the
// preset's 4 memtables one entry over 8 MiB made the node busy until its
// flush ended. That alone would cost a pause; but dragonboat recomputes
// the flag after every flush, compaction and WAL switch, each in a
// goroutine of its own, and stores the results in whatever order those
// finish: a compaction that read the queue before a flush removed the
// entry can store "busy" after the flush stored "not busy". The node then
// refuses every proposal until its LogDB next flushes, compacts or
// switches its WAL, which on an idle cluster happens only when another
// node replicates a write to it (3 of 150 sequential writes of 20-31 MiB
// failed as "overloaded" after the 5 s request timeout that way).
//
// So the queue holds two of the largest entries, each at twice its size
// (two entries may also share one batch), besides three memtables, below
// the busy mark: one write never makes a node busy, only a backlog of
// large ones does. The count limits unflushed data and allocates nothing:
// the memory is used only while flushes are behind, at most 152 MiB with
// the default 32 MiB max_frame_bytes (the preset's 16 MiB before), and
// pebble stalls the node's raft writes beyond it, as it did at 16 MiB.
func logDBConfig(cfg conf.Config) config.LogDBConfig {
	c := config.GetTinyMemLogDBConfig()
	c.Shards = 1
	largest := uint64(min(int64(cfg.Server.MaxFrameBytes), maxCommandBytes))
	// An entry's LogDB batch holds the command and some framing, at up to
	// twice that capacity: pebble doubles a batch as it grows.
	batch := 2 * (largest + 1<<20)
	queue := 3*c.KVWriteBufferSize + 2*batch
	// Busy at 19/20 of the memtable budget (dragonboat's kv_pebble.go).
	need := (queue*20/19)/c.KVWriteBufferSize + 1
	c.KVMaxWriteBufferNumber = max(c.KVMaxWriteBufferNumber, need)
	return c
}
