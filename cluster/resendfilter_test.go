package cluster

import (
	"testing"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// TestResendFilterLimitsHeartbeatAnswers checks that a follower's plain
// heartbeat answers reach raft at most once a window per shard, while
// answers carrying a ReadIndex context (unless the follower is being sent
// its backlog again), other messages and other shards or followers pass.
// Each answer that reaches a leader catching the follower up from the log
// makes it read and send the follower's whole backlog again (up to 64 MiB):
// with every answer let through (one per 10 ms tick), a node restarted 10 s
// after a kill -9 under writes grew a leader to 10 GB and left every shard
// without a leader.
func TestResendFilterLimitsHeartbeatAnswers(t *testing.T) {
	const window = 250 * time.Millisecond
	f := newResendFilter(window)
	hb := func(shard, from uint64) pb.Message {
		return pb.Message{Type: pb.HeartbeatResp, ShardID: shard, From: from, To: 1}
	}
	count := func(mb pb.MessageBatch, typ pb.MessageType) (n int) {
		for _, m := range mb.Requests {
			if m.Type == typ {
				n++
			}
		}
		return n
	}
	start := time.Now()
	passed := 0
	// A follower answering every 10 ms tick for a second.
	for i := range 100 {
		mb := pb.MessageBatch{Requests: []pb.Message{hb(1, 2)}}
		f.received(&mb, start.Add(time.Duration(i)*10*time.Millisecond))
		passed += count(mb, pb.HeartbeatResp)
	}
	if want := 4; passed != want {
		t.Errorf("%d of 100 heartbeat answers in 1 s passed, want %d (one per %v)", passed, want, window)
	}

	// Within the window of the last one let through: only what must pass.
	now := start.Add(995 * time.Millisecond)
	read := hb(1, 2)
	read.Hint = 7 // ReadIndex context: confirms leadership
	mb := pb.MessageBatch{Requests: []pb.Message{
		hb(1, 2),
		read,
		{Type: pb.ReplicateResp, ShardID: 1, From: 2, To: 1, LogIndex: 9},
		hb(2, 2), // another shard
		hb(1, 3), // another follower
		hb(1, 2),
	}}
	f.received(&mb, now)
	if got := count(mb, pb.HeartbeatResp); got != 3 {
		t.Errorf("%d heartbeat answers passed, want 3 (the ReadIndex one, shard 2's, follower 3's)", got)
	}
	if got := count(mb, pb.ReplicateResp); got != 1 {
		t.Errorf("%d replicate answers passed, want 1", got)
	}

	// A follower sent entries again from an index it has not acknowledged
	// is being caught up: its read confirmations are held back too (each
	// made the leader send the backlog once more), until it acknowledges.
	rep := func(from uint64) pb.MessageBatch {
		return pb.MessageBatch{Requests: []pb.Message{{Type: pb.Replicate, ShardID: 1, To: 3, Entries: []pb.Entry{{Index: from}, {Index: from + 1}}}}}
	}
	for _, first := range []uint64{10, 10} {
		mb := rep(first)
		f.sent(&mb)
	}
	now = start.Add(2 * time.Second)
	reads := func(at time.Time) int {
		m := hb(1, 3)
		m.Hint = 8
		mb := pb.MessageBatch{Requests: []pb.Message{m, m, m}}
		f.received(&mb, at)
		return len(mb.Requests)
	}
	if got := reads(now); got != 1 {
		t.Errorf("follower being sent its backlog again: %d of 3 read confirmations passed, want 1", got)
	}
	ack := pb.MessageBatch{Requests: []pb.Message{{Type: pb.ReplicateResp, ShardID: 1, From: 3, To: 1, LogIndex: 11}}}
	f.received(&ack, now)
	if got := reads(now); got != 3 {
		t.Errorf("after its acknowledgement: %d of 3 read confirmations passed, want 3", got)
	}
	// Entries sent in order are no resend.
	for _, first := range []uint64{12, 14} {
		mb := rep(first)
		f.sent(&mb)
	}
	if got := reads(now); got != 3 {
		t.Errorf("entries sent in order: %d of 3 read confirmations passed, want 3", got)
	}

	// A zero window (as in tests that want raft untouched) filters nothing.
	var off *resendFilter
	mb = pb.MessageBatch{Requests: []pb.Message{hb(1, 2), hb(1, 2)}}
	off.received(&mb, now)
	newResendFilter(0).received(&mb, now)
	if len(mb.Requests) != 2 {
		t.Errorf("filter off: %d of 2 answers passed", len(mb.Requests))
	}
}
