package raftwal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// FuzzOpen opens a store whose log is the fuzz input, as one segment or
// cut in two, with its checksums optionally made right so the input gets
// past them to the decoding behind. Whatever it holds, open must not
// panic; a store that opens must answer every read without panicking,
// point only inside its files, take a write, and reopen to the same
// answers. A bad record in the older of two segments must refuse the open.
func FuzzOpen(f *testing.F) {
	for i := range fuzzSequences {
		segs := fuzzStoreSegments(f, i)
		all := slices.Concat(segs...)
		f.Add(all, uint32(0), false)
		if len(segs) > 1 {
			f.Add(all, uint32(len(segs[0])), false)
		}
		// A torn end, and damage inside the first record.
		f.Add(all[:len(all)-3], uint32(0), false)
		damaged := slices.Clone(all)
		damaged[headerSize+2] ^= 0x40
		f.Add(damaged, uint32(len(segs[0])), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint32, fix bool) {
		segs := [][]byte{data}
		if cut != 0 {
			c := int(cut % uint32(len(data)+1))
			segs = [][]byte{data[:c], data[c:]}
		}
		dir := t.TempDir()
		for i, seg := range segs {
			if fix {
				seg = fixChecksums(slices.Clone(seg))
				segs[i] = seg
			}
			if err := os.WriteFile(filepath.Join(dir, segmentName(uint64(i+1))), seg, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		db, err := open(dir, slog.New(slog.DiscardHandler), 4<<10)
		if err != nil {
			return
		}
		defer db.Close()
		if len(segs) == 2 && !wholeRecords(segs[0]) {
			t.Fatal("open succeeded over a bad record in the older segment")
		}
		checkLocs(t, db)
		before := fuzzReads(db)
		// The next entry of every replica holding entries, and of a new
		// one, is accepted.
		var uds []pb.Update
		for _, ni := range fuzzNodes(db) {
			n := db.nodes[ni]
			if len(n.locs) > 0 && n.last() < math.MaxUint64 {
				uds = append(uds, pb.Update{ShardID: ni.ShardID, ReplicaID: ni.ReplicaID, EntriesToSave: []pb.Entry{{Index: n.last() + 1, Term: 1, Cmd: []byte("next")}}})
			}
		}
		fresh := raftio.NodeInfo{ShardID: math.MaxUint64, ReplicaID: math.MaxUint64}
		if db.nodes[fresh] == nil {
			uds = append(uds, pb.Update{ShardID: fresh.ShardID, ReplicaID: fresh.ReplicaID, State: pb.State{Term: 1}, EntriesToSave: []pb.Entry{{Index: 1, Term: 1}}})
		}
		if err := db.SaveRaftState(uds, 1); err != nil {
			t.Fatalf("SaveRaftState of the next entries: %v", err)
		}
		after := fuzzReads(db)
		if err := db.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		db2, err := open(dir, slog.New(slog.DiscardHandler), 4<<10)
		if err != nil {
			t.Fatalf("a store that opened and was written does not reopen: %v", err)
		}
		defer db2.Close()
		checkLocs(t, db2)
		if again := fuzzReads(db2); again != after {
			t.Fatalf("reads differ after reopening:\nbefore: %s\nafter:  %s\n(at first open: %s)", after, again, before)
		}
	})
}

// wholeRecords reports whether seg is a sequence of whole records with
// good checksums, then maybe zeros (a segment is zero-filled ahead of
// use).
func wholeRecords(seg []byte) bool {
	for off := 0; off < len(seg); {
		if len(seg)-off >= headerSize && !slices.ContainsFunc(seg[off:], func(b byte) bool { return b != 0 }) {
			return true
		}
		body, err := readRecord(seg[off:])
		if err != nil {
			return false
		}
		off += headerSize + len(body)
	}
	return true
}

// checkLocs checks that every entry's place lies inside its segment file
// as it is now: replay must not keep what it cut off.
func checkLocs(t *testing.T, db *DB) {
	t.Helper()
	sizes := map[uint32]int64{}
	for _, s := range db.segs {
		fi, err := s.f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		sizes[uint32(s.num)] = fi.Size()
	}
	for ni, n := range db.nodes {
		for i, l := range n.locs {
			size, ok := sizes[l.seg]
			if !ok || int64(l.off)+int64(l.size) > size {
				t.Fatalf("%v: entry %d at segment %d offset %d size %d, beyond the segment's %d bytes (present: %v)", ni, n.first+uint64(i), l.seg, l.off, l.size, size, ok)
			}
		}
	}
}

func fuzzNodes(db *DB) []raftio.NodeInfo {
	var nis []raftio.NodeInfo
	for ni := range db.nodes {
		nis = append(nis, ni)
	}
	slices.SortFunc(nis, func(a, b raftio.NodeInfo) int {
		if a.ShardID != b.ShardID {
			if a.ShardID < b.ShardID {
				return -1
			}
			return 1
		}
		if a.ReplicaID < b.ReplicaID {
			return -1
		}
		if a.ReplicaID > b.ReplicaID {
			return 1
		}
		return 0
	})
	return nis
}

// fuzzReads calls every read for every replica and describes the answers
// (errors only by whether there was one: their text names files).
func fuzzReads(db *DB) string {
	out := ""
	say := func(format string, args ...any) { out += fmt.Sprintf(format, args...) + "; " }
	nis, err := db.ListNodeInfo()
	say("list %v %v", nis, err != nil)
	for _, ni := range fuzzNodes(db) {
		s, r := ni.ShardID, ni.ReplicaID
		bs, err := db.GetBootstrapInfo(s, r)
		say("%v bootstrap %v %v %v %v", ni, bs.Join, bs.Type, len(bs.Addresses), err != nil)
		ss, err := db.GetSnapshot(s, r)
		say("snapshot %d %d %v", ss.Index, ss.Term, err != nil)
		for _, last := range []uint64{0, ss.Index, math.MaxUint64} {
			rs, err := db.ReadRaftState(s, r, last)
			say("state(%d) %+v %v", last, rs, err != nil)
		}
		n := db.nodes[ni]
		// By position, not value: where a replica holds no entries, its
		// first index is not part of what it answers.
		for i, low := range []uint64{0, 1, n.first, n.compactedTo + 1} {
			ents, size, err := db.IterateEntries(nil, 0, s, r, low, math.MaxUint64, 0)
			say("entries#%d %d %d %v", i, len(ents), size, err != nil)
			for _, e := range ents {
				say("%d/%d/%d", e.Index, e.Term, len(e.Cmd))
			}
			ents, size, err = db.IterateEntries(nil, 0, s, r, low, low+10, 100)
			say("entries#%d, max 100: %d %d %v", i, len(ents), size, err != nil)
		}
	}
	return out
}

// fixChecksums sets the checksum of every record in seg, and of every
// entry in them, to match what they hold.
func fixChecksums(seg []byte) []byte {
	for off := 0; off+headerSize <= len(seg); {
		n := binary.LittleEndian.Uint32(seg[off+4:])
		if uint64(n) > uint64(len(seg)-off-headerSize) {
			break
		}
		body := seg[off+headerSize : off+headerSize+int(n)]
		fixEntryChecksums(body)
		binary.LittleEndian.PutUint32(seg[off:], checksum(body))
		off += headerSize + int(n)
	}
	return seg
}

// fixEntryChecksums walks a record body as apply does.
func fixEntryChecksums(body []byte) {
	d := decoder{b: body}
	skip := func() { d.bytes(d.uvarint()) }
	for d.more() {
		kind := d.byte()
		d.uvarint()
		d.uvarint()
		switch kind {
		case opUpdate:
			flags := d.byte()
			if flags&hasState != 0 {
				skip()
			}
			if flags&hasSnapshot != 0 {
				skip()
			}
			if flags&hasEntries != 0 {
				count, _ := d.uvarint(), d.uvarint()
				for i := uint64(0); i < count && d.err == nil; i++ {
					size := d.uvarint()
					if size > uint64(len(body)) {
						return
					}
					if e := d.bytes(4 + size); d.err == nil {
						binary.LittleEndian.PutUint32(e, checksum(e[4:]))
					}
				}
			}
		case opSnapshot, opBootstrap:
			skip()
		case opCompact:
			d.uvarint()
		case opRemove:
		case opNode:
			flags := d.byte()
			d.uvarint()
			for _, f := range []byte{hasBootstrap, hasState, hasSnapshot} {
				if flags&f != 0 {
					skip()
				}
			}
		default:
			return
		}
	}
}

// fuzzSequences are short runs of calls whose segments seed the corpus.
var fuzzSequences = []func(db *DB) error{
	// Entries, state, a snapshot, compaction and rotation.
	func(db *DB) error {
		if err := db.SaveBootstrapInfo(1, 1, pb.Bootstrap{Addresses: map[uint64]string{1: "a:1", 2: "b:2"}, Type: pb.OnDiskStateMachine}); err != nil {
			return err
		}
		for i := uint64(0); i < 6; i++ {
			ents := []pb.Entry{{Index: 3*i + 1, Term: 1, Cmd: []byte("one")}, {Index: 3*i + 2, Term: 1, Key: 7, Cmd: make([]byte, 300)}, {Index: 3*i + 3, Term: 1, Type: pb.EncodedEntry, ClientID: 3, SeriesID: 4}}
			if err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 1, Vote: 1, Commit: 3 * i}, EntriesToSave: ents}}, 1); err != nil {
				return err
			}
		}
		ss := pb.Snapshot{ShardID: 1, Index: 10, Term: 1, Filepath: "ss", Type: pb.OnDiskStateMachine, Membership: pb.Membership{Addresses: map[uint64]string{1: "a:1"}}}
		if err := db.SaveSnapshots([]pb.Update{{ShardID: 1, ReplicaID: 1, Snapshot: ss}}); err != nil {
			return err
		}
		return db.RemoveEntriesTo(1, 1, 8)
	},
	// Two replicas in one record, an overwrite, an installed snapshot.
	func(db *DB) error {
		for shard := uint64(1); shard <= 2; shard++ {
			if err := db.SaveBootstrapInfo(shard, shard+1, pb.Bootstrap{Join: true, Type: pb.RegularStateMachine}); err != nil {
				return err
			}
		}
		uds := []pb.Update{
			{ShardID: 1, ReplicaID: 2, State: pb.State{Term: 2}, EntriesToSave: []pb.Entry{{Index: 1, Term: 2}, {Index: 2, Term: 2}, {Index: 3, Term: 2}}},
			{ShardID: 2, ReplicaID: 3, State: pb.State{Term: 5, Vote: 3}, EntriesToSave: []pb.Entry{{Index: 1, Term: 5, Cmd: []byte("x")}}},
		}
		if err := db.SaveRaftState(uds, 1); err != nil {
			return err
		}
		uds = []pb.Update{
			{ShardID: 1, ReplicaID: 2, State: pb.State{Term: 3, Vote: 2, Commit: 1}, EntriesToSave: []pb.Entry{{Index: 2, Term: 3, Cmd: []byte("over")}}},
			{ShardID: 2, ReplicaID: 3, State: pb.State{Term: 6, Commit: 40}, Snapshot: pb.Snapshot{ShardID: 2, Index: 40, Term: 6}, EntriesToSave: []pb.Entry{{Index: 41, Term: 6}}},
		}
		if err := db.SaveRaftState(uds, 1); err != nil {
			return err
		}
		// Commit only: written, not synced.
		return db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 2, State: pb.State{Term: 3, Vote: 2, Commit: 2}}}, 1)
	},
	// A removed replica and an imported snapshot.
	func(db *DB) error {
		if err := db.SaveRaftState([]pb.Update{{ShardID: 4, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: []pb.Entry{{Index: 1, Term: 1, Cmd: make([]byte, 5000)}}}}, 1); err != nil {
			return err
		}
		if err := db.RemoveNodeData(4, 1); err != nil {
			return err
		}
		return db.ImportSnapshot(pb.Snapshot{ShardID: 4, Index: 90, Term: 9, Type: pb.OnDiskStateMachine, Membership: pb.Membership{Addresses: map[uint64]string{2: "c:3"}}}, 2)
	},
}

// fuzzStoreSegments runs fuzzSequences[i] on a new store with small
// segments and returns its segment files, oldest first.
func fuzzStoreSegments(tb testing.TB, i int) [][]byte {
	tb.Helper()
	dir := tb.TempDir()
	db, err := open(dir, slog.New(slog.DiscardHandler), 1<<10)
	if err != nil {
		tb.Fatal(err)
	}
	if err := fuzzSequences[i](db); err != nil {
		tb.Fatal(err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		tb.Fatal(err)
	}
	slices.Sort(names)
	var segs [][]byte
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		if len(data) > 0 {
			segs = append(segs, data)
		}
	}
	return segs
}

// A record with a good checksum that does not apply was not torn by a
// crash: cutting the log there would drop the acknowledged records after
// it and keep what apply had done of it (here, entries pointing past the
// cut). The open is refused instead, in the newest segment too.
func TestReplayRefusesRecordThatDoesNotApply(t *testing.T) {
	var e encoder
	var seg []byte
	e.begin()
	e.op(opBootstrap, 1, 1)
	e.message(&pb.Bootstrap{Join: true})
	seg = append(seg, e.finish()...)
	e.begin()
	e.op(opUpdate, 1, 1)
	e.byte(hasEntries)
	e.uvarint(1)
	e.uvarint(1)
	e.entry(&pb.Entry{Index: 1, Term: 1, Cmd: []byte("applied before the failure")})
	e.op(99, 1, 1) // an operation of a later version
	seg = append(seg, e.finish()...)
	e.begin()
	e.op(opBootstrap, 2, 1)
	e.message(&pb.Bootstrap{Join: true})
	seg = append(seg, e.finish()...)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segmentName(1)), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := open(dir, slog.New(slog.DiscardHandler), SegmentBytes)
	if err == nil {
		nis, _ := db.ListNodeInfo()
		_, _, ierr := db.IterateEntries(nil, 0, 1, 1, 1, 2, 0)
		db.Close()
		t.Fatalf("open succeeded: replicas %v, reading entry 1: %v", nis, ierr)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open: %v, want a corruption error", err)
	}
}

// A checkpoint records the end of the segment before its own, and only
// that one. A record claiming the end of any other was not written by
// this store: accepted, a claim about a segment not yet written would
// refuse the store's next open, once the log had written that segment
// past the claimed end (found by FuzzOpen: a log made of two segments'
// bytes).
func TestReplayRefusesEndOfAnotherSegment(t *testing.T) {
	for _, num := range []uint64{1, 2, 5} {
		var e encoder
		e.begin()
		e.byte(opSegmentEnd)
		e.uvarint(num)
		e.uvarint(35)
		seg := e.finish()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(2)), seg, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := open(dir, slog.New(slog.DiscardHandler), SegmentBytes)
		if num == 1 {
			// The segment before: segment 1 is gone (deleted as obsolete),
			// so there is nothing to check it against.
			if err != nil {
				t.Fatalf("segment 2 recording the end of segment 1: open: %v", err)
			}
			db.Close()
			continue
		}
		if err == nil {
			db.Close()
			t.Fatalf("segment 2 recording the end of segment %d: open succeeded", num)
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("segment 2 recording the end of segment %d: open: %v, want a corruption error", num, err)
		}
	}
}
