package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

func testSM(t testing.TB, dir string) *stateMachine {
	t.Helper()
	opts := lsm.Options{DisableWAL: true, MemtableBytes: 1 << 20, BlockCacheBytes: 1 << 20}
	return newStateMachine(1, 1, dir, vfs.Default, opts, slog.New(slog.DiscardHandler))
}

func openSM(t testing.TB, dir string) (*stateMachine, uint64) {
	t.Helper()
	s := testSM(t, dir)
	applied, err := s.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, applied
}

// writeCmd builds a cmdWrite command the way the proposer does (without a
// proposer id), from batches of "key=value" puts and "-key" deletes.
func writeCmd(batches ...[]string) []byte {
	return seqWriteCmd(cmdHeader{}, batches...)
}

func seqWriteCmd(h cmdHeader, batches ...[]string) []byte {
	var m batchMerger
	h.kind = cmdWrite
	m.reset(h, 0)
	for _, ops := range batches {
		b := lsm.NewBatch()
		for _, op := range ops {
			if k, ok := bytes.CutPrefix([]byte(op), []byte("-")); ok {
				b.Delete(k)
				continue
			}
			k, v, _ := bytes.Cut([]byte(op), []byte("="))
			b.Put(k, v)
		}
		m.add(b.Repr(), b.Len())
	}
	return m.command()
}

// command builds a command of another kind without a proposer id.
func command(kind byte, body []byte) []byte {
	return append(appendHeader(nil, cmdHeader{kind: kind}), body...)
}

func smGet(t testing.TB, s *stateMachine, key string) (string, error) {
	t.Helper()
	op := &readOp{key: []byte(key)}
	if _, err := s.Lookup(&readBatch{ops: []*readOp{op}}); err != nil {
		t.Fatal(err)
	}
	return string(op.val), op.err
}

func smRange(t testing.TB, s *stateMachine, start, end string, limit int) []store.KV {
	t.Helper()
	op := &readOp{isRange: true, start: []byte(start), end: []byte(end), limit: limit}
	if _, err := s.Lookup(&readBatch{ops: []*readOp{op}}); err != nil {
		t.Fatal(err)
	}
	if op.err != nil {
		t.Fatal(op.err)
	}
	return op.kvs
}

func kvString(kvs []store.KV) string {
	var b []byte
	for _, kv := range kvs {
		b = append(b, kv.Key...)
		b = append(b, '=')
		b = append(b, kv.Value...)
		b = append(b, ' ')
	}
	return string(bytes.TrimSpace(b))
}

func update(t testing.TB, s *stateMachine, ents ...sm.Entry) []sm.Entry {
	t.Helper()
	out, err := s.Update(ents)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(ents) {
		t.Fatalf("Update returned %d entries for %d", len(out), len(ents))
	}
	for i := range out {
		if out[i].Index != ents[i].Index {
			t.Fatalf("entry %d: index %d, want %d", i, out[i].Index, ents[i].Index)
		}
	}
	return out
}

func TestStateMachineApply(t *testing.T) {
	dir := t.TempDir()
	s, applied := openSM(t, dir)
	if applied != 0 {
		t.Fatalf("new state machine at index %d", applied)
	}
	out := update(t, s,
		sm.Entry{Index: 3, Cmd: writeCmd([]string{"a=1", "b=2"}, []string{"c=3", "a=10"})},
		sm.Entry{Index: 5, Cmd: command(0, []byte{1, 2})},           // no such kind
		sm.Entry{Index: 6, Cmd: command(cmdWrite, []byte{1, 2, 3})}, // truncated batch
		sm.Entry{Index: 7, Cmd: writeCmd([]string{"-b", "d="})},     // delete, empty value
		sm.Entry{Index: 8, Cmd: []byte{cmdWrite, 1}},                // short header
		sm.Entry{Index: 9, Cmd: command(cmdMember, encodeMemberValue(member{ID: 4, Raft: "r4", Client: "c4"}))},
	)
	wantResults := []uint64{resultApplied, resultRejected, resultRejected, resultApplied, resultRejected, resultApplied}
	for i, e := range out {
		if e.Result.Value != wantResults[i] {
			t.Errorf("entry %d result %d, want %d", e.Index, e.Result.Value, wantResults[i])
		}
	}
	for k, want := range map[string]string{"a": "10", "c": "3", "d": ""} {
		if v, err := smGet(t, s, k); err != nil || v != want {
			t.Errorf("get %s = %q, %v; want %q", k, v, err, want)
		}
	}
	if _, err := smGet(t, s, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted key: err %v, want ErrNotFound", err)
	}
	// Metadata never shows through user reads.
	if got := kvString(smRange(t, s, "", "", 100)); got != "a=10 c=3 d=" {
		t.Errorf("range = %q", got)
	}
	if got := kvString(smRange(t, s, "b", "d", 100)); got != "c=3" {
		t.Errorf("range [b,d) = %q", got)
	}
	// A byte budget stops the range after the pair that passes it.
	op := &readOp{isRange: true, limit: 100, maxBytes: 3}
	if _, err := s.Lookup(&readBatch{ops: []*readOp{op}}); err != nil || !errors.Is(op.err, store.ErrRangeTruncated) || kvString(op.kvs) != "a=10 c=3" {
		t.Errorf("range over 3 bytes = %q, %v, %v", kvString(op.kvs), op.err, err)
	}
	if got := kvString(smRange(t, s, "", "", 2)); got != "a=10 c=3" {
		t.Errorf("range limit 2 = %q", got)
	}
	ms, err := s.Lookup(membersQuery{})
	if err != nil || !slices.Equal(ms.([]member), []member{{ID: 4, Raft: "r4", Client: "c4"}}) {
		t.Errorf("members = %v, %v", ms, err)
	}

	// Clear in the middle of an Update sees the entries before it and not
	// the ones after.
	update(t, s,
		sm.Entry{Index: 10, Cmd: writeCmd([]string{"e=5"})},
		sm.Entry{Index: 11, Cmd: command(cmdClear, nil)},
		sm.Entry{Index: 12, Cmd: writeCmd([]string{"f=6"})},
		sm.Entry{Index: 13, Cmd: command(cmdForget, encodeForget(4))},
	)
	if got := kvString(smRange(t, s, "", "", 100)); got != "f=6" {
		t.Errorf("after clear: range = %q", got)
	}
	if ms, _ := s.Lookup(membersQuery{}); len(ms.([]member)) != 0 {
		t.Errorf("members after forget = %v", ms)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(&readBatch{}); !errors.Is(err, errSMClosed) {
		t.Errorf("lookup after close: %v", err)
	}

	s, applied = openSM(t, dir)
	defer s.Close()
	if applied != 13 {
		t.Errorf("reopened at index %d, want 13", applied)
	}
	if got := kvString(smRange(t, s, "", "", 100)); got != "f=6" {
		t.Errorf("after reopen: range = %q", got)
	}
}

// TestStateMachineAppliedMatchesData checks the atomicity contract: the
// index Open reports is exactly that of the data it holds, whatever was
// lost after the last Sync.
func TestStateMachineAppliedMatchesData(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSM(t, dir)
	update(t, s, sm.Entry{Index: 1, Cmd: writeCmd([]string{"k=1"})})
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	update(t, s, sm.Entry{Index: 2, Cmd: writeCmd([]string{"k=2"})})
	// Close without Sync: with the WAL off, entry 2 may or may not have
	// reached disk, but index and data must agree.
	s.Close()
	s, applied := openSM(t, dir)
	defer s.Close()
	v, err := smGet(t, s, "k")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case applied == 1 && v == "1", applied == 2 && v == "2":
	default:
		t.Fatalf("applied %d with k=%s", applied, v)
	}
	// Replaying from the reported index reaches the same state.
	if applied == 1 {
		update(t, s, sm.Entry{Index: 2, Cmd: writeCmd([]string{"k=2"})})
	}
	if v, _ := smGet(t, s, "k"); v != "2" {
		t.Fatalf("after replay k=%s", v)
	}
}

// TestNewerCommandStops checks that an entry of a kind this version does
// not know stops the state machine before anything of its Update is
// applied, so that an upgraded node replays it, instead of being skipped,
// which would leave this replica without its effects.
func TestNewerCommandStops(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSM(t, dir)
	update(t, s, sm.Entry{Index: 1, Cmd: writeCmd([]string{"a=1"})})
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Update([]sm.Entry{
		{Index: 2, Cmd: writeCmd([]string{"b=2"})},
		{Index: 3, Cmd: command(cmdMaxKind+1, []byte{1})},
		{Index: 4, Cmd: writeCmd([]string{"c=3"})},
	})
	if !errors.Is(err, errNewerCommand) {
		t.Fatalf("Update with a newer kind: err %v, want errNewerCommand", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, applied := openSM(t, dir)
	defer s.Close()
	if applied != 1 {
		t.Errorf("reopened at index %d, want 1 (the entries after it are replayed)", applied)
	}
	if got := kvString(smRange(t, s, "", "", 100)); got != "a=1" {
		t.Errorf("range = %q, want a=1", got)
	}
}

func TestStateMachineLargeUpdateChunks(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSM(t, dir)
	value := string(bytes.Repeat([]byte("v"), 64<<10))
	var ents []sm.Entry
	for i := range 100 { // 6.4 MB: more than one chunk
		ents = append(ents, sm.Entry{Index: uint64(i + 1), Cmd: writeCmd([]string{string(rune('A'+i%26)) + string(rune('a'+i/26)) + "=" + value})})
	}
	update(t, s, ents...)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, applied := openSM(t, dir)
	defer s.Close()
	if applied != 100 {
		t.Fatalf("applied %d, want 100", applied)
	}
	if n := len(smRange(t, s, "", "", 1000)); n != 100 {
		t.Fatalf("%d keys, want 100", n)
	}
}

func snapshotBytes(t testing.TB, s *stateMachine) []byte {
	t.Helper()
	ctx, err := s.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	src, _ := openSM(t, t.TempDir())
	defer src.Close()
	update(t, src,
		sm.Entry{Index: 4, Cmd: writeCmd([]string{"a=1", "b=2", "c=3"})},
		sm.Entry{Index: 8, Cmd: command(cmdMember, encodeMemberValue(member{ID: 5, Raft: "r5", Client: "c5"}))},
	)
	ctx, err := src.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after PrepareSnapshot are not in the snapshot.
	update(t, src, sm.Entry{Index: 9, Cmd: writeCmd([]string{"z=26", "-a"})})
	var buf bytes.Buffer
	if err := src.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	dst, _ := openSM(t, dir)
	update(t, dst, sm.Entry{Index: 2, Cmd: writeCmd([]string{"old=1"})})
	if err := dst.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()), nil); err != nil {
		t.Fatal(err)
	}
	check := func(s *stateMachine) {
		t.Helper()
		if got := kvString(smRange(t, s, "", "", 100)); got != "a=1 b=2 c=3" {
			t.Errorf("range = %q", got)
		}
		if ms, _ := s.Lookup(membersQuery{}); len(ms.([]member)) != 1 {
			t.Errorf("members = %v", ms)
		}
	}
	check(dst)
	if dst.applied != 8 {
		t.Errorf("applied after recover = %d, want 8", dst.applied)
	}
	if err := dst.Sync(); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	names, _ := vfs.Default.List(dir)
	slices.Sort(names)
	if !slices.Equal(names, []string{"CURRENT", "db-000002"}) {
		t.Errorf("directory holds %v", names)
	}
	dst, applied := openSM(t, dir)
	defer dst.Close()
	if applied != 8 {
		t.Errorf("reopened at %d, want 8", applied)
	}
	check(dst)
}

func TestSnapshotCorruptStreamKeepsState(t *testing.T) {
	src, _ := openSM(t, t.TempDir())
	defer src.Close()
	update(t, src, sm.Entry{Index: 4, Cmd: writeCmd([]string{"a=1", "b=2"})})
	good := snapshotBytes(t, src)

	cases := map[string][]byte{
		"empty":     nil,
		"bad magic": append([]byte("XXXXXXXX"), good[8:]...),
		"newer":     append([]byte("KVSNAP02"), good[8:]...),
		"truncated": good[:len(good)-3],
		"bit flip": func() []byte {
			b := bytes.Clone(good)
			b[10] ^= 0x40
			return b
		}(),
		"huge length": append([]byte(snapshotMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			dst, _ := openSM(t, dir)
			defer dst.Close()
			update(t, dst, sm.Entry{Index: 2, Cmd: writeCmd([]string{"old=1"})})
			err := dst.RecoverFromSnapshot(bytes.NewReader(data), nil)
			if err == nil {
				t.Fatal("recovered from a bad stream")
			}
			if newer := errors.Is(err, errNewerCommand); newer != (name == "newer") {
				t.Errorf("errNewerCommand %v for %v", newer, err)
			}
			if got := kvString(smRange(t, dst, "", "", 100)); got != "old=1" {
				t.Errorf("state changed to %q", got)
			}
			if names, _ := vfs.Default.List(dir); len(names) != 2 {
				t.Errorf("leftovers: %v", names)
			}
		})
	}
}

func TestSnapshotStopped(t *testing.T) {
	src, _ := openSM(t, t.TempDir())
	defer src.Close()
	update(t, src, sm.Entry{Index: 4, Cmd: writeCmd([]string{"a=1"})})
	ctx, _ := src.PrepareSnapshot()
	stop := make(chan struct{})
	close(stop)
	if err := src.SaveSnapshot(ctx, &bytes.Buffer{}, stop); !errors.Is(err, sm.ErrSnapshotStopped) {
		t.Errorf("save: %v", err)
	}
	data := snapshotBytes(t, src)
	dst, _ := openSM(t, t.TempDir())
	defer dst.Close()
	if err := dst.RecoverFromSnapshot(bytes.NewReader(data), stop); err != sm.ErrSnapshotStopped {
		t.Errorf("recover: %v", err)
	}
}

func FuzzApply(f *testing.F) {
	f.Add(writeCmd([]string{"a=1", "-b"}))
	f.Add(command(cmdClear, nil))
	f.Add(command(cmdMember, encodeMemberValue(member{ID: 1, Raft: "r", Client: "c"})))
	f.Add(command(cmdForget, encodeForget(3)))
	f.Add(command(cmdWrite, []byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 5, 'k'}))
	f.Add(seqWriteCmd(cmdHeader{proposer: 5, seq: 0, floor: 0}, []string{"p=1"}))
	f.Add(command(cmdHash, []byte{1, 2, 3, 4, 5, 6, 7, 8}))
	s, _ := openSM(f, f.TempDir())
	f.Cleanup(func() { s.Close() })
	index := uint64(0)
	f.Fuzz(func(t *testing.T, cmd []byte) {
		index++
		out, err := s.Update([]sm.Entry{{Index: index, Cmd: cmd}})
		if errors.Is(err, errNewerCommand) && len(cmd) >= cmdHeaderLen && cmd[0] > cmdMaxKind {
			index-- // not applied: the node stops
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if r := out[0].Result.Value; r < resultApplied || r > resultOutOfOrder {
			t.Fatalf("result %d", r)
		}
		if s.applied != index {
			t.Fatalf("applied %d, want %d", s.applied, index)
		}
	})
}

func FuzzSnapshotRead(f *testing.F) {
	src, _ := openSM(f, f.TempDir())
	update(f, src, sm.Entry{Index: 4, Cmd: writeCmd([]string{"a=1", "b=2"})})
	f.Add(snapshotBytes(f, src))
	src.Close()
	f.Add([]byte(snapshotMagic))
	f.Add(append([]byte(snapshotMagic), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	dst, _ := openSM(f, f.TempDir())
	f.Cleanup(func() { dst.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		before := dst.current
		err := dst.RecoverFromSnapshot(bytes.NewReader(data), nil)
		if err != nil && dst.current != before {
			t.Fatalf("failed recovery switched to %s", dst.current)
		}
		// Whatever the outcome, the state machine still answers.
		if _, err := dst.Lookup(&readBatch{ops: []*readOp{{key: []byte("a")}}}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStateMachineDeterministicSplits feeds the same entries to replicas
// that receive them in differently sized Updates (as dragonboat may): the
// stored state, proposer bookkeeping included, must come out identical.
func TestStateMachineDeterministicSplits(t *testing.T) {
	var ents []sm.Entry
	ents = append(ents, sm.Entry{Index: 1, Cmd: seqWriteCmd(cmdHeader{proposer: 1, seq: 0}, []string{"a=1"})})
	ents = append(ents, sm.Entry{Index: 2, Cmd: seqWriteCmd(cmdHeader{proposer: 2, seq: 0}, []string{"b=1"})})
	// Around the point where proposer 1 (last seen at 1) is forgotten.
	base := uint64(seqRetainEntries + seqGCInterval - 3)
	for i := range uint64(8) {
		var cmd []byte
		switch i % 4 {
		case 0:
			cmd = seqWriteCmd(cmdHeader{proposer: 2, seq: 1 + i/4}, []string{fmt.Sprintf("k%d=%d", i, i)})
		case 1:
			cmd = appendHeader(nil, cmdHeader{kind: cmdClear, proposer: 3, seq: i / 4})
		case 2:
			cmd = seqWriteCmd(cmdHeader{proposer: 1, seq: 1 + i/4}, []string{fmt.Sprintf("late%d=x", i)})
		case 3:
			cmd = seqWriteCmd(cmdHeader{proposer: 4, seq: i / 4}, []string{fmt.Sprintf("p4-%d=y", i)})
		}
		ents = append(ents, sm.Entry{Index: base + i, Cmd: cmd})
	}
	dump := func(s *stateMachine) string {
		it := s.db.NewIterator(nil, nil)
		defer it.Close()
		var b strings.Builder
		for ok := it.First(); ok; ok = it.Next() {
			fmt.Fprintf(&b, "%q=%x\n", it.Key(), it.Value())
		}
		return b.String()
	}
	var want string
	for _, split := range [][]int{{10}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {3, 4, 3}, {2, 8}} {
		s, _ := openSM(t, t.TempDir())
		rest := slices.Clone(ents)
		for _, n := range split {
			update(t, s, rest[:n]...)
			rest = rest[n:]
		}
		got := dump(s)
		s.Close()
		if want == "" {
			want = got
		} else if got != want {
			t.Fatalf("split %v stored\n%s\nwant\n%s", split, got, want)
		}
	}
}

// TestClearIsAtomicForReaders: a clear big enough to go out in several
// writes is never seen half done by a concurrent read: a range over the
// shard sees every key or none.
func TestClearIsAtomicForReaders(t *testing.T) {
	s, _ := openSM(t, t.TempDir())
	defer s.Close()
	s.clearChunk = 256 // many writes for the clear below
	const keys = 500
	var puts []string
	for i := range keys {
		puts = append(puts, fmt.Sprintf("k%03d=v", i))
	}
	update(t, s, sm.Entry{Index: 1, Cmd: writeCmd(puts)})

	done := make(chan struct{})
	seen := make(chan map[int]int, 1)
	var full, empty atomic.Int64 // reads that saw every key, none
	go func() {
		counts := map[int]int{}
		for {
			select {
			case <-done:
				seen <- counts
				return
			default:
			}
			op := &readOp{isRange: true, start: []byte("k"), end: []byte("l"), limit: keys + 1}
			if _, err := s.Lookup(&readBatch{ops: []*readOp{op}}); err != nil || op.err != nil {
				continue
			}
			counts[len(op.kvs)]++
			switch len(op.kvs) {
			case keys:
				full.Add(1)
			case 0:
				empty.Add(1)
			}
		}
	}()
	waitFor(t, 10*time.Second, "a read before the clear", func() bool { return full.Load() > 0 })
	update(t, s, sm.Entry{Index: 2, Cmd: command(cmdClear, nil)})
	waitFor(t, 10*time.Second, "a read after the clear", func() bool { return empty.Load() > 0 })
	close(done)
	counts := <-seen
	for n, c := range counts {
		if n != 0 && n != keys {
			t.Fatalf("a read saw %d of %d keys during a clear (%d times); counts %v", n, keys, c, counts)
		}
	}
}

// TestHealthDoesNotWaitForAClear: while a clear holds reads of user data
// back (clearMu), health and the key estimate still answer: a clear
// stalled on a full disk must not hang /healthz, INFO or DBSIZE.
func TestHealthDoesNotWaitForAClear(t *testing.T) {
	s, _ := openSM(t, t.TempDir())
	defer s.Close()
	s.clearMu.Lock() // as applyClear does
	answered := make(chan struct{})
	go func() {
		s.health()
		s.approxKeys()
		close(answered)
	}()
	select {
	case <-answered:
	case <-time.After(5 * time.Second):
		t.Fatal("health or approxKeys waited for the clear")
	}
	s.clearMu.Unlock()
}
