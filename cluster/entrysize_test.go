package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// TestLargeWritesKeepLeaders writes values just under the default
// max_frame_bytes through a follower and through the leader of their shard,
// with the default request timeout. Each must succeed, and the shard must
// keep its leader and term: persisting a 30 MiB entry stalls every node's
// raft for a while, and with an election timeout shorter than that stall
// the leader lost its quorum, the proposer re-sent the entry after each
// election, and writes that were applied reported "outcome unknown".
func TestLargeWritesKeepLeaders(t *testing.T) {
	def := conf.Default()
	tc := newTestCluster(t, clusterOpts{requestTimeout: def.Cluster.RequestTimeout.D(), maxFrameBytes: def.Server.MaxFrameBytes})
	const key = "large"
	shard := shardOf([]byte(key), 4)
	li := tc.leaderOf(tc.nodes[0], shard)
	fi := (li + 1) % 3
	_, term, _, err := tc.nodes[li].nh.GetLeaderID(shard)
	if err != nil {
		t.Fatal(err)
	}
	size := 30 << 20
	if raceEnabled {
		// The race detector makes every node several times slower; a
		// value an eighth the size stalls them about as long.
		size /= 8
	}
	for i, via := range []int{fi, li, fi} {
		v := strings.Repeat(fmt.Sprint(i), size)
		start := time.Now()
		if err := put(tc.nodes[via], key, v); err != nil {
			t.Fatalf("write %d of %d bytes through node %d (leader %d): %v after %v", i, size, via+1, li+1, err, time.Since(start))
		}
		t.Logf("write %d through node %d: %v", i, via+1, time.Since(start))
	}
	for _, n := range tc.nodes {
		leader, now, ok, err := n.nh.GetLeaderID(shard)
		if err != nil || !ok || int(leader-1) != li || now != term {
			t.Errorf("node %d: shard %d leader %d term %d (ok %v, %v), want leader %d term %d throughout", n.nodeID, shard, leader, now, ok, err, li+1, term)
		}
	}
	if v, err := get(tc.nodes[(li+2)%3], key); err != nil || len(v) != size || v[0] != '2' {
		t.Fatalf("read back: %d bytes, %v", len(v), err)
	}
}

// TestElectionTimeoutCoversLargestEntry: the election timeout is raised to
// what persisting one max_frame_bytes entry may take, and left alone when
// the configured one is longer.
func TestElectionTimeoutCoversLargestEntry(t *testing.T) {
	cfg := conf.Default()
	cfg.Cluster.RTTMillis, cfg.Cluster.ElectionRTT = 10, 10
	for _, tt := range []struct {
		frame    conf.ByteSize
		election int
		want     uint64
	}{
		{32 << 20, 10, 50},   // the defaults: 500 ms, not 100
		{1 << 20, 10, 10},    // 16 ms to persist: as configured
		{32 << 20, 80, 80},   // configured longer
		{1 << 30, 10, 100},   // entries are at most maxCommandBytes
		{32<<20 + 1, 10, 51}, // rounded up
	} {
		cfg.Server.MaxFrameBytes = tt.frame
		cfg.Cluster.ElectionRTT = tt.election
		if got := electionTicks(cfg); got != tt.want {
			t.Errorf("max_frame_bytes %d, election_rtt %d: %d ticks, want %d", tt.frame, tt.election, got, tt.want)
		}
	}
}

// TestLogDBRoomForLargestEntries: the LogDB's busy mark (19/20 of its
// memtable budget) lies above two of the largest entries at twice their
// size plus three memtables.
func TestLogDBRoomForLargestEntries(t *testing.T) {
	cfg := conf.Default()
	for _, tt := range []struct {
		frame conf.ByteSize
		want  uint64
	}{
		{32 << 20, 38}, // the default: 152 MiB of memtables
		{8 << 20, 13},
		{64 << 10, 5},
		{1 << 30, 72}, // entries are at most maxCommandBytes
	} {
		cfg.Server.MaxFrameBytes = tt.frame
		c := logDBConfig(cfg)
		if c.KVMaxWriteBufferNumber != tt.want || c.Shards != 1 {
			t.Errorf("max_frame_bytes %d: %d memtables, %d shards; want %d, 1", tt.frame, c.KVMaxWriteBufferNumber, c.Shards, tt.want)
		}
		largest := uint64(min(int64(tt.frame), maxCommandBytes))
		mark := c.KVWriteBufferSize * c.KVMaxWriteBufferNumber * 19 / 20
		if queue := 3*c.KVWriteBufferSize + 2*2*(largest+1<<20); queue >= mark {
			t.Errorf("max_frame_bytes %d: busy at %d bytes, two entries queue %d", tt.frame, mark, queue)
		}
	}
}

// TestWriteTooLargeForRaftIsRefused: a shard's part of a write that no
// message batch could carry to a follower is refused before anything is
// proposed, and so are the write's parts for other shards. Before, with
// max_frame_bytes over 32 MiB, such a part was proposed (dragonboat's own
// limit is twice max_frame_bytes), and the entry could never reach a
// follower: the shard stalled behind it.
func TestWriteTooLargeForRaftIsRefused(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{nodes: 1, shards: 2, maxFrameBytes: 128 << 20})
	n := tc.nodes[0]
	huge := bytes.Repeat([]byte{'x'}, maxCommandBytes)
	var small string // a key of the other shard than "huge"
	for i := 0; small == ""; i++ {
		if k := fmt.Sprint("small", i); shardOf([]byte(k), 2) != shardOf([]byte("huge"), 2) {
			small = k
		}
	}
	b := lsm.NewBatch()
	b.Put([]byte(small), []byte("v"))
	b.Put([]byte("huge"), huge)
	err := write(n, b)
	if err == nil || !strings.Contains(err.Error(), "request too large") {
		t.Fatalf("write of a %d-byte value: %v, want request too large", len(huge), err)
	}
	for _, k := range []string{small, "huge"} {
		if _, err := get(n, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s after the refused write: %v, want not found", k, err)
		}
	}
	if err := put(n, "huge", string(huge[:1<<20])); err != nil {
		t.Fatalf("a write within the limit: %v", err)
	}
}

// TestLargeWriteLeavesLogDBIdle: while writes of the largest size
// max_frame_bytes allows go through a node, its LogDB never turns busy,
// which would make dragonboat refuse every proposal of every shard of the
// node (ErrSystemBusy). With dragonboat's tiny LogDB preset one entry over
// 8 MiB made it busy until the entry's flush ended, and a flag that
// dragonboat stores out of order could then stay set until the LogDB's
// next flush: writes through that node failed as "overloaded" after the
// request timeout (3 of 150 writes of 20-31 MiB). A probe proposes small
// commands to the node's shards throughout, straight to dragonboat, and
// none may be refused.
func TestLargeWriteLeavesLogDBIdle(t *testing.T) {
	def := conf.Default()
	tc := newTestCluster(t, clusterOpts{nodes: 1, requestTimeout: def.Cluster.RequestTimeout.D(), maxFrameBytes: def.Server.MaxFrameBytes})
	n := tc.nodes[0]
	sizes := []int{31 << 20, 20 << 20, 31 << 20}
	if raceEnabled {
		// Still over the 8 MiB that made the preset busy.
		sizes = []int{12 << 20, 12 << 20}
	}

	stop := make(chan struct{})
	probed := make(chan error, 1)
	go func() {
		probed <- probeBusy(n, stop)
	}()
	for i, size := range sizes {
		start := time.Now()
		if err := put(n, "large", strings.Repeat(fmt.Sprint(i), size)); err != nil {
			t.Fatalf("write %d of %d bytes: %v after %v", i, size, err, time.Since(start))
		}
	}
	// The last entry's flush ends after the write is applied.
	time.Sleep(300 * time.Millisecond)
	close(stop)
	if err := <-probed; err != nil {
		t.Fatal(err)
	}
}

// probeBusy proposes a small command to each shard of n in turn, one at a
// time, until stop closes, and reports the first ErrSystemBusy.
func probeBusy(n *Cluster, stop <-chan struct{}) error {
	cmd := writeCmd([]string{"probe=1"})
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		shard := uint64(i%n.shards) + 1
		rs, err := n.nh.Propose(n.nh.GetNoOPSession(shard), cmd, time.Second)
		switch {
		case errors.Is(err, dragonboat.ErrSystemBusy):
			return fmt.Errorf("probe %d refused by shard %d: %w", i, shard, err)
		case err != nil:
			time.Sleep(time.Millisecond) // no leader yet, say
			continue
		}
		<-rs.ResultC()
		rs.Release()
	}
}

// TestRaftQueuesBounded checks the byte bounds on dragonboat's replication
// queues. A leader answers each heartbeat reply of a follower it is catching
// up from the log by reading the backlog again and queueing it for the
// follower (up to 64 MiB a message); with dragonboat's default, unbounded
// queues, a node restarted 2.4 GB behind made one leader of a three-node
// cluster grow to 15 GB before the follower caught up. The bound must still
// let the largest entry through.
func TestRaftQueuesBounded(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{nodes: 1, shards: 1})
	nhc := tc.nodes[0].nh.NodeHostConfig()
	for _, q := range []struct {
		name  string
		bound uint64
	}{
		{"send", nhc.MaxSendQueueSize},
		{"receive", nhc.MaxReceiveQueueSize},
	} {
		if q.bound == 0 {
			t.Errorf("%s queue: no byte bound", q.name)
			continue
		}
		// Dragonboat refuses a message once the queue holds more than the
		// bound, so one entry of maxCommandBytes must fit beside another.
		if q.bound < maxCommandBytes {
			t.Errorf("%s queue bound %d below the largest entry, %d bytes", q.name, q.bound, maxCommandBytes)
		}
	}
}
