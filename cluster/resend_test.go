package cluster

import (
	"strings"
	"testing"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// TestStateMachineAppliesEachSeqOnce: copies of one proposal (a re-send
// after a leader change or a timed-out attempt, under the same proposer
// and seq) apply once, wherever they land in the log. Here the late copy
// follows another proposer's write to the same key, which it must not
// undo, and a proposal given up (its successor re-sent with a floor past
// it) must not apply after its successor when a copy commits late.
func TestStateMachineAppliesEachSeqOnce(t *testing.T) {
	s, _ := openSM(t, t.TempDir())
	defer s.Close()
	out := update(t, s,
		sm.Entry{Index: 1, Cmd: seqWriteCmd(cmdHeader{proposer: 7, seq: 0}, []string{"k=a"})},
		sm.Entry{Index: 2, Cmd: seqWriteCmd(cmdHeader{proposer: 9, seq: 0}, []string{"k=b"})},
		sm.Entry{Index: 3, Cmd: seqWriteCmd(cmdHeader{proposer: 7, seq: 0}, []string{"k=a"})},
		// Proposer 7's seq 1 arrives before its seq 2 ...
		sm.Entry{Index: 4, Cmd: seqWriteCmd(cmdHeader{proposer: 7, seq: 2, floor: 1}, []string{"j=2"})},
		// ... which it gave up, re-sending seq 2 with the floor past it;
		sm.Entry{Index: 5, Cmd: seqWriteCmd(cmdHeader{proposer: 7, seq: 2, floor: 2}, []string{"j=2"})},
		// a copy of the given-up seq 1 that commits late is not applied.
		sm.Entry{Index: 6, Cmd: seqWriteCmd(cmdHeader{proposer: 7, seq: 1, floor: 1}, []string{"j=1"})},
	)
	want := []uint64{resultApplied, resultApplied, resultDuplicate, resultOutOfOrder, resultApplied, resultDuplicate}
	for i, e := range out {
		if e.Result.Value != want[i] {
			t.Errorf("entry %d: result %d, want %d", e.Index, e.Result.Value, want[i])
		}
	}
	for k, v := range map[string]string{"k": "b", "j": "2"} {
		if got, err := smGet(t, s, k); err != nil || got != v {
			t.Errorf("%s = %q, %v; want %q", k, got, err, v)
		}
	}
}

// TestResentLargeProposalAppliesOnce: when the shard's leader changes
// while a large proposal is out, the proposer proposes a full copy of it
// again (the first attempt's answer may never come). Both copies can
// commit; the write must be answered as done, not "outcome unknown", and
// the second copy must be the same proposal (proposer and seq), which the
// state machine applies once (TestStateMachineAppliesEachSeqOnce). The
// leader change is the proposer's view of one: its leader watch fires,
// as dragonboat's leader event makes it, without an election. Real
// elections are kept out with a 300 ms election timeout: under the race
// detector on two loaded cores, persisting a 6 MiB entry can outlast the
// default (125 ms for the tests' 8 MiB frames), and leaders losing quorum
// dropped every re-sent copy until the write timed out (2 of 10 runs
// beside the server and lsm tests; 0 of 24 with 300 ms).
func TestResentLargeProposalAppliesOnce(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{electionRTT: 30})
	const key = "resent"
	shard := shardOf([]byte(key), 4)
	li := tc.leaderOf(tc.nodes[0], shard)
	n := tc.nodes[(li+1)%3] // a follower: the attempt is forwarded
	leader := &n.leaders[shard-1]
	value := strings.Repeat("v", 6<<20)

	// The watch must fire while the first attempt is out, which a write
	// of this size keeps for tens of milliseconds: it fires three times,
	// 5 ms apart, from the start (each time re-sending what is out, so
	// never letting an attempt finish would time the write out).
	done := make(chan error, 1)
	go func() { done <- put(n, key, value) }()
	var err error
	for fake, fired := uint64(1<<40), 0; ; fake++ {
		select {
		case err = <-done:
		case <-time.After(5 * time.Millisecond):
			if fired < 3 {
				leader.set(leader.get(), fake)
				fired++
			}
			continue
		}
		break
	}
	// Put back the real term, so later events compare against it.
	id, term, _, _ := n.nh.GetLeaderID(shard)
	leader.set(id, term)
	if err != nil {
		t.Fatalf("write with re-sent attempts: %v", err)
	}

	// Copies of the write's proposal in the committed log, by (proposer, seq).
	r, err := n.nh.GetLogReader(shard)
	if err != nil {
		t.Fatal(err)
	}
	first, last := r.GetRange()
	copies := make(map[cmdHeader]int)
	for lo := first; lo <= last; {
		ents, err := r.Entries(lo, last+1, 64<<20)
		if err != nil || len(ents) == 0 {
			t.Fatalf("log entries from %d: %d, %v", lo, len(ents), err)
		}
		for _, e := range ents {
			// An encoded entry without compression: a header byte, then the command.
			if e.Type != pb.EncodedEntry || len(e.Cmd) < 1+cmdHeaderLen {
				continue
			}
			h, body, err := decodeHeader(e.Cmd[1:])
			if err == nil && h.proposer == n.proposers[shard-1].id && len(body) > len(value) {
				h.floor = 0 // may differ between attempts
				copies[h]++
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	if len(copies) != 1 {
		t.Fatalf("the write's proposals in the log: %v, want one (proposer, seq)", copies)
	}
	for h, c := range copies {
		t.Logf("seq %d: %d copies in the log", h.seq, c)
		if c < 2 {
			t.Skipf("no re-sent copy committed (%d): the write finished before a re-send", c)
		}
	}
	for i, m := range tc.nodes {
		if got, err := get(m, key); err != nil || got != value {
			t.Errorf("node %d: %d bytes, %v", i+1, len(got), err)
		}
	}
}

// TestLostForwardedProposalIsRechecked: a proposal a follower forwards to
// its leader can vanish without an answer (a leader drops what is
// forwarded to it while it hands its leadership over, and tells only its
// own node; here the follower's link to the leader fails under it). The
// proposer sends it again after the recheck delay instead of waiting out
// the attempt timeout, and the write completes once.
func TestLostForwardedProposalIsRechecked(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	const key = "forwarded"
	shard := shardOf([]byte(key), 4)
	li := tc.leaderOf(tc.nodes[0], shard)
	fi := (li + 1) % 3
	f := tc.nodes[fi]

	tc.cutOneWay(fi, li)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- put(f, key, "v") }()
	time.Sleep(100 * time.Millisecond)
	tc.heal()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write through the follower: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("write through the follower did not complete")
	}
	t.Logf("write took %v", time.Since(start).Round(time.Millisecond))
	if n := f.Status().ProposalRechecks; n == 0 {
		t.Fatal("the lost forwarded proposal was not rechecked (re-sent only at the attempt timeout)")
	}
	for i, n := range tc.nodes {
		if v, err := get(n, key); err != nil || v != "v" {
			t.Fatalf("node %d: get = %q, %v", i+1, v, err)
		}
	}
}
