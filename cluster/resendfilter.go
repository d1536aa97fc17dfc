package cluster

import (
	"sync"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// resendFilter keeps a leader from re-reading and re-sending a follower's
// whole backlog at every heartbeat answer while that follower is still
// taking in the last copy.
//
// Dragonboat's leader answers each HeartbeatResp of a follower it catches up
// from the log (remote in the wait state) by reading up to 64 MiB of entries
// from the LogDB and sending them again (handleLeaderHeartbeatResp), and a
// follower answers a heartbeat every tick (10 ms with the sample config).
// The copies are built in the step worker, which all shards share, and held
// until its step ends, so a step that met many answers held many copies:
// restarting a node 2.4 GB behind grew one leader to 15 GB within 90 s, and
// a node restarted 10 s after a kill -9 under writes grew the leaders to
// 4-10 GB; meanwhile the step worker missed its ticks and every shard lost
// its leader until the follower was stopped.
//
// So the transport lets through at most one plain heartbeat answer per
// shard and follower per window, whatever the leader's state, which the
// transport cannot see: the copies are made before anything is sent, so
// answers that arrive while the first copy is being built must be limited
// too. Answers carrying a ReadIndex context confirm leadership and pass,
// except from a follower this node is sending its backlog again (entries
// sent from an index at or below that of entries it has not acknowledged):
// a read confirmed by such a follower made the leader send the backlog once
// more for each read, and the other members confirm reads meanwhile.
// Those too pass once a window, so reads wait at most a window when no
// other member can confirm them. A dropped message is something raft must
// live with anyway. The window is at most half the election timeout, so a
// follower that answers nothing else still counts as active for
// CheckQuorum, and a copy that was lost is sent again within a window; the
// price is that a follower's lost last append waits up to a window for its
// repair instead of a heartbeat interval.
//
// This bounds how often the backlog is sent again, not its size, which only
// dragonboat sets (the MaxEntrySize soft setting): after the same restart
// behind by about 1 GB a leader still peaked at 5 GB and the shards had no
// leader for some 30 s (h73 findings), where with every answer let through
// (or only plain ones held back) leaders reached 15-22 GB and the shards
// stayed without a leader until the follower was stopped.
type resendFilter struct {
	window time.Duration // 0: filter off

	mu    sync.Mutex
	peers map[shardReplica]*resendState // by shard and follower
}

type resendState struct {
	passed    time.Time // the last heartbeat answer let through
	first     uint64    // index of the first entry of the last entries sent
	unacked   bool      // entries sent and not acknowledged since
	resending bool      // entries sent again from at or below first while unacknowledged
}

func newResendFilter(window time.Duration) *resendFilter {
	return &resendFilter{window: window, peers: make(map[shardReplica]*resendState)}
}

func (f *resendFilter) state(shard, replica uint64) *resendState {
	k := shardReplica{shard, replica}
	s, ok := f.peers[k]
	if !ok {
		s = new(resendState)
		f.peers[k] = s
	}
	return s
}

// sent notes the entries a batch this node sent carries.
func (f *resendFilter) sent(mb *pb.MessageBatch) {
	if f == nil || f.window <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range mb.Requests {
		m := &mb.Requests[i]
		if m.Type != pb.Replicate || len(m.Entries) == 0 {
			continue
		}
		s := f.state(m.ShardID, m.To)
		first := m.Entries[0].Index
		if s.unacked && first <= s.first {
			s.resending = true
		}
		s.first, s.unacked = first, true
	}
}

// received drops, in place, the heartbeat answers of a batch this node
// received that it holds back (see resendFilter).
func (f *resendFilter) received(mb *pb.MessageBatch, now time.Time) {
	if f == nil || f.window <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	kept := mb.Requests[:0]
	for _, m := range mb.Requests {
		switch m.Type {
		case pb.ReplicateResp:
			s := f.state(m.ShardID, m.From)
			s.unacked, s.resending = false, false
		case pb.HeartbeatResp:
			s := f.state(m.ShardID, m.From)
			readIndex := m.Hint != 0 || m.HintHigh != 0
			if (!readIndex || s.resending) && now.Sub(s.passed) < f.window {
				continue
			}
			s.passed = now
		}
		kept = append(kept, m)
	}
	clear(mb.Requests[len(kept):])
	mb.Requests = kept
}
