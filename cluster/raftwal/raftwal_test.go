package raftwal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

func testLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustOpen(t *testing.T, dir string, segmentBytes int64) *DB {
	t.Helper()
	db, err := open(dir, testLog(), segmentBytes)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return db
}

// model is what a replica's log should hold, kept the simple way.
type model struct {
	bootstrap   *pb.Bootstrap
	state       pb.State
	snapshot    pb.Snapshot
	compactedTo uint64
	entries     map[uint64]pb.Entry
	last        uint64 // 0: none
}

func (m *model) appendEntries(ents []pb.Entry) {
	for idx := range m.entries {
		if idx >= ents[0].Index {
			delete(m.entries, idx)
		}
	}
	for _, e := range ents {
		m.entries[e.Index] = e
	}
	m.last = ents[len(ents)-1].Index
}

func (m *model) install(ss pb.Snapshot) {
	m.snapshot = ss
	clear(m.entries)
	m.last = ss.Index
}

func (m *model) compact(index uint64) {
	m.compactedTo = max(m.compactedTo, index)
	for idx := range m.entries {
		if idx <= index {
			delete(m.entries, idx)
		}
	}
}

func entry(idx, term uint64, r *rand.Rand) pb.Entry {
	cmd := make([]byte, r.IntN(300))
	for i := range cmd {
		cmd[i] = byte(r.Uint32())
	}
	return pb.Entry{Index: idx, Term: term, Cmd: cmd, Key: r.Uint64()}
}

// TestModel runs random calls against the store and a model, with segments
// small enough to rotate and be deleted often, and reopens the store from
// time to time: every read must match the model, before and after.
func TestModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			dir := t.TempDir()
			db := mustOpen(t, dir, 8<<10)
			defer func() { db.Close() }()
			models := map[raftio.NodeInfo]*model{}
			nodes := []raftio.NodeInfo{{ShardID: 1, ReplicaID: 1}, {ShardID: 2, ReplicaID: 1}, {ShardID: 3, ReplicaID: 4}}
			for _, ni := range nodes {
				m := &model{entries: map[uint64]pb.Entry{}, bootstrap: &pb.Bootstrap{Addresses: map[uint64]string{1: "a:1", 2: "b:2"}, Type: pb.OnDiskStateMachine}}
				models[ni] = m
				if err := db.SaveBootstrapInfo(ni.ShardID, ni.ReplicaID, *m.bootstrap); err != nil {
					t.Fatal(err)
				}
			}
			for step := range 3000 {
				ni := nodes[r.IntN(len(nodes))]
				m := models[ni]
				switch op := r.IntN(100); {
				case op < 60: // a raft round: state and entries, sometimes overwriting
					ud := pb.Update{ShardID: ni.ShardID, ReplicaID: ni.ReplicaID}
					if r.IntN(3) > 0 {
						st := m.state
						st.Commit += uint64(r.IntN(3))
						if r.IntN(10) == 0 {
							st.Term++
							st.Vote = uint64(r.IntN(3))
						}
						ud.State = st
					}
					if r.IntN(4) > 0 {
						first := m.last + 1
						if m.last > m.compactedTo && m.last > m.snapshot.Index && r.IntN(8) == 0 {
							lo := max(m.compactedTo, m.snapshot.Index) + 1
							first = lo + uint64(r.IntN(int(m.last-lo+1)))
						}
						for range 1 + r.IntN(6) {
							ud.EntriesToSave = append(ud.EntriesToSave, entry(first+uint64(len(ud.EntriesToSave)), m.state.Term+1, r))
						}
					}
					// A round of every replica at once, as the step worker sends it.
					other := pb.Update{ShardID: nodes[0].ShardID, ReplicaID: nodes[0].ReplicaID}
					updates := []pb.Update{ud}
					if ni != nodes[0] && r.IntN(2) == 0 {
						om := models[nodes[0]]
						other.EntriesToSave = []pb.Entry{entry(om.last+1, om.state.Term+1, r)}
						updates = append(updates, other)
					}
					if err := db.SaveRaftState(updates, 1); err != nil {
						t.Fatalf("step %d: %v", step, err)
					}
					for _, u := range updates {
						um := models[raftio.NodeInfo{ShardID: u.ShardID, ReplicaID: u.ReplicaID}]
						if !pb.IsEmptyState(u.State) {
							um.state = u.State
						}
						if len(u.EntriesToSave) > 0 {
							um.appendEntries(u.EntriesToSave)
						}
					}
				case op < 70: // a snapshot of the replica's own state machine
					if m.last == 0 || m.last <= m.snapshot.Index {
						continue
					}
					ss := pb.Snapshot{Index: m.snapshot.Index + 1 + uint64(r.IntN(int(m.last-m.snapshot.Index))), Term: m.state.Term, Filepath: "snap", Type: pb.OnDiskStateMachine,
						Membership: pb.Membership{Addresses: map[uint64]string{1: "a:1"}}}
					if err := db.SaveSnapshots([]pb.Update{{ShardID: ni.ShardID, ReplicaID: ni.ReplicaID, Snapshot: ss}}); err != nil {
						t.Fatal(err)
					}
					m.snapshot = ss
				case op < 80: // log compaction behind the snapshot
					if m.snapshot.Index == 0 {
						continue
					}
					to := uint64(r.IntN(int(m.snapshot.Index) + 1))
					if err := db.RemoveEntriesTo(ni.ShardID, ni.ReplicaID, to); err != nil {
						t.Fatal(err)
					}
					m.compact(to)
				case op < 83: // a snapshot installed from the leader
					ss := pb.Snapshot{Index: max(m.last, m.snapshot.Index) + uint64(1+r.IntN(20)), Term: m.state.Term + 1, Type: pb.OnDiskStateMachine}
					ud := pb.Update{ShardID: ni.ShardID, ReplicaID: ni.ReplicaID, Snapshot: ss, State: pb.State{Term: ss.Term, Commit: ss.Index}}
					if r.IntN(2) == 0 {
						ud.EntriesToSave = []pb.Entry{entry(ss.Index+1, ss.Term, r)}
					}
					if err := db.SaveRaftState([]pb.Update{ud}, 1); err != nil {
						t.Fatal(err)
					}
					m.install(ss)
					m.state = ud.State
					if len(ud.EntriesToSave) > 0 {
						m.appendEntries(ud.EntriesToSave)
					}
				case op < 84: // the replica is removed, and a new one starts on its shard
					if err := db.RemoveNodeData(ni.ShardID, ni.ReplicaID); err != nil {
						t.Fatal(err)
					}
					delete(models, ni)
					check(t, db, models)
					ni.ReplicaID += 10
					nodes = slices.DeleteFunc(nodes, func(n raftio.NodeInfo) bool { return n.ShardID == ni.ShardID })
					nodes = append(nodes, ni)
					slices.SortFunc(nodes, func(a, b raftio.NodeInfo) int { return int(a.ShardID) - int(b.ShardID) })
					m := &model{entries: map[uint64]pb.Entry{}, bootstrap: &pb.Bootstrap{Join: true, Type: pb.OnDiskStateMachine}}
					models[ni] = m
					if err := db.SaveBootstrapInfo(ni.ShardID, ni.ReplicaID, *m.bootstrap); err != nil {
						t.Fatal(err)
					}
				case op < 90:
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
					db = mustOpen(t, dir, 8<<10)
				}
				if step%50 == 0 {
					check(t, db, models)
				}
			}
			check(t, db, models)
			db.Close()
			db = mustOpen(t, dir, 8<<10)
			check(t, db, models)
			// Old segments go once nothing needs them: with every log
			// compacted, only the newest few remain.
			for ni, m := range models {
				if m.last > m.snapshot.Index {
					ss := pb.Snapshot{Index: m.last, Term: m.state.Term, Type: pb.OnDiskStateMachine}
					if err := db.SaveSnapshots([]pb.Update{{ShardID: ni.ShardID, ReplicaID: ni.ReplicaID, Snapshot: ss}}); err != nil {
						t.Fatal(err)
					}
					m.snapshot = ss
				}
				if err := db.RemoveEntriesTo(ni.ShardID, ni.ReplicaID, m.snapshot.Index); err != nil {
					t.Fatal(err)
				}
				m.compact(m.snapshot.Index)
			}
			check(t, db, models)
			if n := len(segmentFiles(t, dir)); n > 2 {
				t.Errorf("%d segments left after compacting every log, want at most 2", n)
			}
		})
	}
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// check compares every read of the store with the models.
func check(t *testing.T, db *DB, models map[raftio.NodeInfo]*model) {
	t.Helper()
	var want []raftio.NodeInfo
	for ni := range models {
		want = append(want, ni)
	}
	slices.SortFunc(want, func(a, b raftio.NodeInfo) int {
		if a.ShardID != b.ShardID {
			return int(a.ShardID) - int(b.ShardID)
		}
		return int(a.ReplicaID) - int(b.ReplicaID)
	})
	got, err := db.ListNodeInfo()
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ListNodeInfo = %v, %v; want %v", got, err, want)
	}
	for ni, m := range models {
		bs, err := db.GetBootstrapInfo(ni.ShardID, ni.ReplicaID)
		if err != nil || bs.Join != m.bootstrap.Join || len(bs.Addresses) != len(m.bootstrap.Addresses) {
			t.Fatalf("%v: bootstrap %+v, %v; want %+v", ni, bs, err, m.bootstrap)
		}
		ss, err := db.GetSnapshot(ni.ShardID, ni.ReplicaID)
		if err != nil || ss.Index != m.snapshot.Index || ss.Term != m.snapshot.Term || ss.Filepath != m.snapshot.Filepath {
			t.Fatalf("%v: snapshot %d/%d, %v; want %d/%d", ni, ss.Index, ss.Term, err, m.snapshot.Index, m.snapshot.Term)
		}
		rs, err := db.ReadRaftState(ni.ShardID, ni.ReplicaID, m.snapshot.Index)
		if pb.IsEmptyState(m.state) {
			if !errors.Is(err, raftio.ErrNoSavedLog) {
				t.Fatalf("%v: ReadRaftState without state: %v, want ErrNoSavedLog", ni, err)
			}
		} else {
			if err != nil || rs.State != m.state {
				t.Fatalf("%v: state %+v, %v; want %+v", ni, rs.State, err, m.state)
			}
			var wantCount uint64
			if m.last > m.snapshot.Index {
				wantCount = m.last - m.snapshot.Index
			}
			if rs.EntryCount != wantCount || wantCount > 0 && rs.FirstIndex != m.snapshot.Index+1 {
				n := db.nodes[ni]
				t.Fatalf("%v: range %d+%d, want %d+%d (store: first %d, %d locs, compacted to %d, snapshot %d; model compacted to %d)", ni, rs.FirstIndex, rs.EntryCount, m.snapshot.Index+1, wantCount,
					n.first, len(n.locs), n.compactedTo, n.snapshot.Index, m.compactedTo)
			}
		}
		// Every held entry, read in one call and one by one.
		lo := max(m.compactedTo, m.snapshot.Index) + 1
		if m.last >= lo {
			ents, _, err := db.IterateEntries(nil, 0, ni.ShardID, ni.ReplicaID, lo, m.last+1, 0)
			if err != nil || uint64(len(ents)) != m.last-lo+1 {
				t.Fatalf("%v: IterateEntries [%d, %d]: %d entries, %v", ni, lo, m.last, len(ents), err)
			}
			for _, e := range ents {
				w := m.entries[e.Index]
				if e.Term != w.Term || e.Key != w.Key || !bytes.Equal(e.Cmd, w.Cmd) {
					t.Fatalf("%v: entry %d differs", ni, e.Index)
				}
			}
		}
		// Compacted entries are not returned.
		if m.compactedTo > 0 {
			ents, _, err := db.IterateEntries(nil, 0, ni.ShardID, ni.ReplicaID, m.compactedTo, m.last+1, 0)
			if err != nil || len(ents) != 0 {
				t.Fatalf("%v: IterateEntries from compacted %d: %d entries, %v", ni, m.compactedTo, len(ents), err)
			}
		}
	}
}

func TestIterateEntriesMaxSize(t *testing.T) {
	db := mustOpen(t, t.TempDir(), SegmentBytes)
	defer db.Close()
	var ents []pb.Entry
	for i := range 10 {
		ents = append(ents, pb.Entry{Index: uint64(i + 1), Term: 1, Cmd: make([]byte, 100)})
	}
	if err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: ents}}, 1); err != nil {
		t.Fatal(err)
	}
	one := uint64(ents[0].SizeUpperLimit())
	for _, c := range []struct {
		low, high, maxSize uint64
		want               int
	}{
		{1, 11, 0, 10},
		// The entry that takes the size past maxSize is included (as in
		// dragonboat's own stores; its LogReader drops it).
		{1, 11, one, 2},
		{1, 11, one + 1, 2},
		{1, 11, 3 * one, 4},
		{4, 6, 0, 2},   // [low, high)
		{9, 20, 0, 2},  // high beyond the last entry
		{11, 20, 0, 0}, // low beyond it
		{1, 2, 1, 1},   // one entry always comes back
	} {
		got, size, err := db.IterateEntries(nil, 0, 1, 1, c.low, c.high, c.maxSize)
		if err != nil || len(got) != c.want {
			t.Errorf("IterateEntries(%d, %d, %d) = %d entries, %v; want %d", c.low, c.high, c.maxSize, len(got), err, c.want)
			continue
		}
		if size != uint64(len(got))*one {
			t.Errorf("size %d for %d entries", size, len(got))
		}
		for i, e := range got {
			if e.Index != c.low+uint64(i) {
				t.Errorf("entry %d has index %d", i, e.Index)
			}
		}
	}
}

// writeSome leaves a store with two segments: entries 1-20 of shard 1 in
// the first, 21-40 in the second.
func writeSome(t *testing.T, dir string) {
	t.Helper()
	db := mustOpen(t, dir, SegmentBytes)
	save := func(from uint64) {
		var ents []pb.Entry
		for i := from; i < from+20; i++ {
			ents = append(ents, pb.Entry{Index: i, Term: 2, Cmd: bytes.Repeat([]byte{byte(i)}, 50)})
		}
		if err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 2, Vote: 1, Commit: from}, EntriesToSave: ents}}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.SaveBootstrapInfo(1, 1, pb.Bootstrap{Join: true}); err != nil {
		t.Fatal(err)
	}
	save(1)
	db.wmu.Lock()
	err := db.rotate()
	db.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	save(21)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// someWithFirstSegment makes a store with writeSome and returns its
// directory, its first segment's path and that segment's bytes.
func someWithFirstSegment(t *testing.T) (dir, first string, data []byte) {
	t.Helper()
	dir = t.TempDir()
	writeSome(t, dir)
	first = segmentFiles(t, dir)[0]
	data, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	return dir, first, data
}

func lastEntry(t *testing.T, db *DB) uint64 {
	t.Helper()
	rs, err := db.ReadRaftState(1, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return rs.FirstIndex + rs.EntryCount - 1
}

// A crash can cut the newest segment's last record anywhere, or leave
// garbage where it would be: the log ends before it, and the store opens.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	writeSome(t, dir)
	segs := segmentFiles(t, dir)
	last := segs[len(segs)-1] // entries 21-40
	data, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{len(data) - 1, len(data) - 30, len(data) - 1000} {
		if err := os.WriteFile(last, data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		db := mustOpen(t, dir, SegmentBytes)
		if got := lastEntry(t, db); got != 20 {
			t.Errorf("cut at %d: log ends at %d, want 20", cut, got)
		}
		db.Close()
		// Replay cut the file back and started a new segment.
		for _, s := range segmentFiles(t, dir) {
			if s > last {
				os.Remove(s)
			}
		}
	}
	garbage := append(append([]byte(nil), data...), bytes.Repeat([]byte{0xab}, 100)...)
	if err := os.WriteFile(last, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	db := mustOpen(t, dir, SegmentBytes)
	if got := lastEntry(t, db); got != 40 {
		t.Errorf("garbage after the last record: log ends at %d, want 40", got)
	}
	db.Close()
}

// A bad record in a segment that is not the newest is damage, not a torn
// write: the store refuses to open rather than lose entries it
// acknowledged.
func TestCorruptOlderSegmentRefused(t *testing.T) {
	dir, first, data := someWithFirstSegment(t)
	for _, damage := range []struct {
		name string
		do   func([]byte)
	}{
		{"flipped byte", func(b []byte) { b[len(b)-10] ^= 0xff }},
		// Zeros end a segment only when nothing follows them.
		{"zeroed header", func(b []byte) { clear(b[:headerSize]) }},
	} {
		bad := bytes.Clone(data)
		damage.do(bad)
		if err := os.WriteFile(first, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if db, err := open(dir, testLog(), SegmentBytes); err == nil {
			db.Close()
			t.Fatalf("%s: open succeeded over a damaged older segment", damage.name)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: open: %v, want a corruption error", damage.name, err)
		}
	}
}

// Segments after the first are zero-filled ahead of use; the zeros after
// the last record end a segment, in replay and in Verify.
func TestSpareSegments(t *testing.T) {
	dir := t.TempDir()
	const segBytes = 64 << 10
	db := mustOpen(t, dir, segBytes)
	idx := uint64(1)
	save := func() {
		t.Helper()
		ents := []pb.Entry{{Index: idx, Term: 1, Cmd: make([]byte, 4000)}}
		idx++
		if err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: ents}}, 1); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 * segBytes / 4000 {
		save()
		db.spare.wg.Wait() // let each fill finish, so every rotation finds its spare
	}
	segs := segmentFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	for _, s := range segs[1:] {
		if size := segSize(t, s); size < segBytes {
			t.Errorf("segment %s: %d bytes, want a preallocated %d", filepath.Base(s), size, segBytes)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil || rep.TornBytes != 0 || rep.Entries != int(idx-1) {
		t.Fatalf("Verify: %+v, %v; want %d entries, nothing torn", rep, err, idx-1)
	}
	db = mustOpen(t, dir, segBytes)
	defer db.Close()
	if got := lastEntry(t, db); got != idx-1 {
		t.Fatalf("log ends at %d after reopen, want %d", got, idx-1)
	}
	save()
}

// The segment an open starts grows as it is written (no spare is ready
// then), and every fdatasync of it also writes its new size: once it
// holds a sixteenth of a segment a spare is filled, and the first record
// after the spare is ready starts a new segment in it, long before the
// growing one is full. Each reopen does the same again.
func TestGrowingSegmentLeftForSpare(t *testing.T) {
	dir := t.TempDir()
	const segBytes = 256 << 10
	idx := uint64(1)
	for round := range 2 {
		db := mustOpen(t, dir, segBytes)
		first := db.cur.num
		if !db.curGrows {
			t.Fatalf("round %d: the segment an open starts is marked zero-filled", round)
		}
		save := func() {
			t.Helper()
			ents := []pb.Entry{{Index: idx, Term: 1, Cmd: bytes.Repeat([]byte{byte(idx)}, 1000)}}
			idx++
			if err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: ents}}, 1); err != nil {
				t.Fatal(err)
			}
		}
		for db.curSize < segBytes/16 {
			save()
		}
		save() // asks for the spare, if the one before did not
		db.spare.wg.Wait()
		save() // the first record after the spare is ready
		if db.cur.num != first+1 || db.curGrows {
			t.Fatalf("round %d: writing to segment %d (growing: %v), want the zero-filled %d", round, db.cur.num, db.curGrows, first+1)
		}
		if size := segSize(t, db.segmentPath(first)); size >= segBytes/4 {
			t.Errorf("round %d: the growing segment reached %d bytes before it was left", round, size)
		}
		if size := segSize(t, db.segmentPath(first+1)); size != segBytes {
			t.Errorf("round %d: its successor has %d bytes, want a zero-filled %d", round, size, segBytes)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Verify(dir)
	if err != nil || rep.TornBytes != 0 || rep.Entries != int(idx-1) {
		t.Fatalf("Verify: %+v, %v; want %d entries, nothing torn", rep, err, idx-1)
	}
	db := mustOpen(t, dir, segBytes)
	defer db.Close()
	if got := lastEntry(t, db); got != idx-1 {
		t.Fatalf("log ends at %d after reopen, want %d", got, idx-1)
	}
}

// An entry damaged after it was written fails its read with an error
// instead of handing raft wrong bytes.
func TestEntryChecksumOnRead(t *testing.T) {
	dir := t.TempDir()
	db := mustOpen(t, dir, SegmentBytes)
	defer db.Close()
	ents := []pb.Entry{{Index: 1, Term: 1, Cmd: []byte("hello world")}}
	if err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: ents}}, 1); err != nil {
		t.Fatal(err)
	}
	l := db.nodes[raftio.NodeInfo{ShardID: 1, ReplicaID: 1}].locs[0]
	if _, err := db.cur.f.WriteAt([]byte{'X'}, int64(l.off+l.size-1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.IterateEntries(nil, 0, 1, 1, 1, 2, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("IterateEntries over a damaged entry: %v, want a corruption error", err)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	db := mustOpen(t, dir, SegmentBytes)
	defer db.Close()
	if db2, err := open(dir, testLog(), SegmentBytes); err == nil {
		db2.Close()
		t.Fatal("a second open of the same directory succeeded")
	}
}

// Entries that leave a gap are refused before anything is written.
func TestGapRefused(t *testing.T) {
	db := mustOpen(t, t.TempDir(), SegmentBytes)
	defer db.Close()
	save := func(idx ...uint64) error {
		var ents []pb.Entry
		for _, i := range idx {
			ents = append(ents, pb.Entry{Index: i, Term: 1})
		}
		return db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: ents}}, 1)
	}
	if err := save(1, 2, 3); err != nil {
		t.Fatal(err)
	}
	if err := save(5); err == nil {
		t.Error("entries after a gap accepted")
	}
	if err := save(4, 6); err == nil {
		t.Error("entries with a hole accepted")
	}
	if got := lastEntry(t, db); got != 3 {
		t.Errorf("log ends at %d after refused writes, want 3", got)
	}
	if err := save(4); err != nil {
		t.Errorf("the next entry after refusals: %v", err)
	}
}

func TestImportSnapshot(t *testing.T) {
	dir := t.TempDir()
	db := mustOpen(t, dir, SegmentBytes)
	if err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 1, Commit: 2},
		EntriesToSave: []pb.Entry{{Index: 1, Term: 3}, {Index: 2, Term: 3}}}}, 1); err != nil {
		t.Fatal(err)
	}
	ss := pb.Snapshot{ShardID: 1, Index: 100, Term: 7, Type: pb.OnDiskStateMachine}
	if err := db.ImportSnapshot(ss, 5); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = mustOpen(t, dir, SegmentBytes)
	defer db.Close()
	bs, err := db.GetBootstrapInfo(1, 5)
	if err != nil || !bs.Join || bs.Type != pb.OnDiskStateMachine {
		t.Fatalf("bootstrap %+v, %v", bs, err)
	}
	rs, err := db.ReadRaftState(1, 5, 100)
	if err != nil || rs.State.Term != 7 || rs.State.Commit != 100 || rs.EntryCount != 0 {
		t.Fatalf("state %+v, %v", rs, err)
	}
	if got, _ := db.GetSnapshot(1, 5); got.Index != 100 {
		t.Fatalf("snapshot %d, want 100", got.Index)
	}
}

// Verify reports what Open would find, and changes nothing.
func TestVerify(t *testing.T) {
	dir := t.TempDir()
	writeSome(t, dir)
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Segments != 2 || rep.Replicas != 1 || rep.Entries != 40 || rep.TornBytes != 0 || rep.Bytes == 0 {
		t.Fatalf("report %+v", rep)
	}
	segs := segmentFiles(t, dir)
	newest := segs[len(segs)-1]
	f, err := os.OpenFile(newest, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{1}, 100))
	f.Close()
	if rep, err = Verify(dir); err != nil || rep.TornBytes != 100 || rep.Entries != 40 {
		t.Fatalf("with a torn end: %+v, %v", rep, err)
	}
	if fi, err := os.Stat(newest); err != nil || fi.Size() != rep.Bytes-segSize(t, segs[0]) {
		t.Errorf("Verify changed the newest segment: %v", err)
	}
	if n := len(segmentFiles(t, dir)); n != 2 {
		t.Errorf("%d segments after Verify, want 2", n)
	}
	db := mustOpen(t, dir, SegmentBytes)
	defer db.Close()
	if _, err := Verify(dir); err == nil {
		t.Error("Verify of an open store succeeded")
	}
}

func segSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// recordEnds lists where each record of a segment ends.
func recordEnds(t *testing.T, data []byte) []int {
	t.Helper()
	var ends []int
	for off := 0; off+headerSize <= len(data) && !allZero(data[off:off+headerSize]); {
		body, err := readRecord(data[off:])
		if err != nil {
			t.Fatal(err)
		}
		off += headerSize + len(body)
		ends = append(ends, off)
	}
	return ends
}

// An older segment that lost whole records at its end (cut, or zeroed as
// if never written) would read as a clean shorter segment; the next
// segment's checkpoint recorded where it ended, so the open is refused.
func TestLostTailOfOlderSegmentRefused(t *testing.T) {
	for _, zero := range []bool{false, true} {
		dir, first, data := someWithFirstSegment(t)
		ends := recordEnds(t, data)
		if len(ends) < 2 {
			t.Fatalf("%d records in the first segment", len(ends))
		}
		bad := data[:ends[len(ends)-2]]
		if zero {
			bad = append(bytes.Clone(bad), make([]byte, len(data)-len(bad))...)
		}
		if err := os.WriteFile(first, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if db, err := open(dir, testLog(), SegmentBytes); err == nil {
			db.Close()
			t.Fatalf("zeroed %v: open succeeded over a segment that lost its last record", zero)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Errorf("zeroed %v: open: %v, want a corruption error", zero, err)
		}
		if _, err := Verify(dir); !errors.Is(err, ErrCorrupt) {
			t.Errorf("zeroed %v: Verify: %v, want a corruption error", zero, err)
		}
	}
	// The segment a crash left newest is checked too, once the next open
	// has started another: replay cut its torn end, and the checkpoint
	// records the cut length.
	dir := t.TempDir()
	writeSome(t, dir)
	segs := segmentFiles(t, dir)
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("torn"))
	f.Close()
	for range 2 {
		db := mustOpen(t, dir, SegmentBytes)
		if got := lastEntry(t, db); got != 40 {
			t.Fatalf("log ends at %d, want 40", got)
		}
		db.Close()
	}
}

// Over names the replicas whose oldest entries keep the log above a
// bound: first a replica that wrote a little long ago and nothing since,
// which alone would keep every later segment.
func TestOver(t *testing.T) {
	db := mustOpen(t, t.TempDir(), 16<<10)
	defer db.Close()
	save := func(shard, idx uint64, size int) {
		t.Helper()
		ents := []pb.Entry{{Index: idx, Term: 1, Cmd: make([]byte, size)}}
		if err := db.SaveRaftState([]pb.Update{{ShardID: shard, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: ents}}, 1); err != nil {
			t.Fatal(err)
		}
		db.spare.wg.Wait()
	}
	save(1, 1, 100)
	save(1, 2, 100)
	for i := range uint64(200) {
		save(2, i+1, 1000)
	}
	one, two := raftio.NodeInfo{ShardID: 1, ReplicaID: 1}, raftio.NodeInfo{ShardID: 2, ReplicaID: 1}
	if got := db.Over(64 << 10); !slices.Equal(got, []raftio.NodeInfo{one, two}) {
		t.Fatalf("Over = %v, want both replicas", got)
	}
	if got := db.Over(1 << 30); got != nil {
		t.Fatalf("Over a bound the log fits = %v", got)
	}
	// Replica 2 compacts as its snapshots go: replica 1 alone pins the rest.
	if err := db.RemoveEntriesTo(2, 1, 195); err != nil {
		t.Fatal(err)
	}
	if got := db.Over(64 << 10); !slices.Equal(got, []raftio.NodeInfo{one}) {
		t.Fatalf("Over = %v, want replica 1 only", got)
	}
	before := len(segmentFiles(t, dir(db)))
	if err := db.RemoveEntriesTo(1, 1, 2); err != nil {
		t.Fatal(err)
	}
	if got := db.Over(64 << 10); got != nil {
		t.Fatalf("Over after both compacted = %v", got)
	}
	if after := len(segmentFiles(t, dir(db))); after >= before || after > 4 {
		t.Fatalf("%d segments before replica 1 compacted, %d after", before, after)
	}
}

func dir(db *DB) string { return db.dir }

// Segments are deleted oldest first, so one missing between two others
// was lost, and with it entries and metadata nothing else holds.
func TestMissingSegmentRefused(t *testing.T) {
	dir := t.TempDir()
	writeSome(t, dir)
	db := mustOpen(t, dir, SegmentBytes) // a third segment
	db.Close()
	segs := segmentFiles(t, dir)
	if len(segs) != 3 {
		t.Fatalf("%d segments, want 3", len(segs))
	}
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	if db, err := open(dir, testLog(), SegmentBytes); err == nil {
		db.Close()
		t.Fatal("open succeeded with a segment missing")
	} else if !errors.Is(err, ErrCorrupt) {
		t.Errorf("open: %v, want a corruption error", err)
	}
}
