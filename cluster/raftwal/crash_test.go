//go:build unix

package raftwal

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// The child of TestCrashKill9 is the test binary itself, told by these
// variables where its store is and how to draw its calls.
const (
	crashDirEnv  = "RAFTWAL_CRASH_CHILD_DIR"
	crashSeedEnv = "RAFTWAL_CRASH_CHILD_SEED"
	// crashSeedOverride replays a failed run: the parent logs its seed.
	crashSeedOverride = "RAFTWAL_CRASH_SEED"
)

const (
	crashShards       = 3
	crashRounds       = 8
	crashSegmentBytes = 64 << 10
	// crashRoundBudget bounds a round when the machine is slow: the child
	// is killed then even if it has not reached its target, so the test
	// ends by itself (it asserts nothing about speed).
	crashRoundBudget = 2500 * time.Millisecond
)

// crashOp is one call of the child, printed before the call is made: the
// parent must know a call that was cut short, since its record may have
// become durable without being acknowledged.
type crashOp struct {
	Op      string        `json:"op"` // boot, save, snap, remove
	Shard   uint64        `json:"s,omitempty"`
	Index   uint64        `json:"i,omitempty"`
	Updates []crashUpdate `json:"u,omitempty"`
}

// crashUpdate is one replica's part of a SaveRaftState or SaveSnapshots
// call; entries are First.. with the given Cmd sizes, contents derived
// from shard, index, term and size.
type crashUpdate struct {
	Shard   uint64 `json:"s"`
	Term    uint64 `json:"t,omitempty"`
	Vote    uint64 `json:"v,omitempty"`
	Commit  uint64 `json:"c,omitempty"`
	SSIndex uint64 `json:"si,omitempty"`
	SSTerm  uint64 `json:"st,omitempty"`
	First   uint64 `json:"f,omitempty"`
	ETerm   uint64 `json:"et,omitempty"`
	Sizes   []int  `json:"z,omitempty"`
}

func (u crashUpdate) state() pb.State {
	return pb.State{Term: u.Term, Vote: u.Vote, Commit: u.Commit}
}

func (u crashUpdate) snapshot() pb.Snapshot {
	if u.SSIndex == 0 {
		return pb.Snapshot{}
	}
	return pb.Snapshot{ShardID: u.Shard, Index: u.SSIndex, Term: u.SSTerm, Type: pb.OnDiskStateMachine, Filepath: fmt.Sprintf("snap-%d", u.SSIndex)}
}

func (u crashUpdate) update() pb.Update {
	ud := pb.Update{ShardID: u.Shard, ReplicaID: 1, State: u.state(), Snapshot: u.snapshot()}
	for i, size := range u.Sizes {
		ud.EntriesToSave = append(ud.EntriesToSave, crashEntry(u.Shard, u.First+uint64(i), u.ETerm, size))
	}
	return ud
}

func crashEntry(shard, index, term uint64, size int) pb.Entry {
	return pb.Entry{Index: index, Term: term, Type: pb.ApplicationEntry, Key: shard<<32 | index, Cmd: fillCmd(shard, index, term, size)}
}

// fillCmd makes a Cmd that differs for every shard, index and term, so an
// entry read from the wrong place or an older term does not pass.
func fillCmd(shard, index, term uint64, size int) []byte {
	b := make([]byte, size)
	x := shard*0x9E3779B97F4A7C15 ^ index*0xBF58476D1CE4E5B9 ^ term*0x94D049BB133111EB | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

func (op crashOp) do(db *DB) error {
	switch op.Op {
	case "boot":
		return db.SaveBootstrapInfo(op.Shard, 1, crashBootstrap(op.Shard))
	case "save", "snap":
		var uds []pb.Update
		for _, u := range op.Updates {
			uds = append(uds, u.update())
		}
		if op.Op == "snap" {
			return db.SaveSnapshots(uds)
		}
		return db.SaveRaftState(uds, 1)
	case "remove":
		return db.RemoveEntriesTo(op.Shard, 1, op.Index)
	}
	return fmt.Errorf("unknown op %q", op.Op)
}

func crashBootstrap(shard uint64) pb.Bootstrap {
	return pb.Bootstrap{Addresses: map[uint64]string{1: fmt.Sprintf("node%d:1", shard)}, Type: pb.OnDiskStateMachine}
}

// crashShard is what a replica must hold after the acknowledged calls,
// kept independently of the store's code.
type crashShard struct {
	boot        bool
	hasState    bool
	state       pb.State
	ss          pb.Snapshot
	compactedTo uint64
	first       uint64     // index of ents[0]
	ents        []crashEnt // consecutive
}

type crashEnt struct {
	term uint64
	size int
}

type crashModel [crashShards + 1]crashShard // by shard ID

func (m *crashModel) clone() *crashModel {
	c := *m
	for i := range c {
		c[i].ents = append([]crashEnt(nil), m[i].ents...)
	}
	return &c
}

func (s *crashShard) last() uint64 {
	if len(s.ents) == 0 {
		return 0
	}
	return s.first + uint64(len(s.ents)) - 1
}

func (s *crashShard) trim() {
	if len(s.ents) > 0 && s.compactedTo >= s.first {
		drop := min(s.compactedTo-s.first+1, uint64(len(s.ents)))
		s.ents = s.ents[drop:]
		s.first += drop
	}
}

func (m *crashModel) apply(op crashOp) {
	switch op.Op {
	case "boot":
		m[op.Shard].boot = true
	case "remove":
		s := &m[op.Shard]
		s.compactedTo = max(s.compactedTo, op.Index)
		s.trim()
	case "snap":
		for _, u := range op.Updates {
			if s := &m[u.Shard]; u.SSIndex > s.ss.Index {
				s.ss = u.snapshot()
			}
		}
	case "save":
		for _, u := range op.Updates {
			s := &m[u.Shard]
			if st := u.state(); !pb.IsEmptyState(st) {
				s.state, s.hasState = st, true
			}
			if u.SSIndex > s.ss.Index {
				// An installed snapshot replaces the log.
				s.ss = u.snapshot()
				s.ents, s.first = nil, u.SSIndex+1
			}
			if len(u.Sizes) == 0 {
				continue
			}
			var add []crashEnt
			for _, size := range u.Sizes {
				add = append(add, crashEnt{term: u.ETerm, size: size})
			}
			if len(s.ents) == 0 || u.First <= s.first {
				s.first, s.ents = u.First, add
			} else {
				s.ents = append(s.ents[:u.First-s.first], add...)
			}
			s.trim()
		}
	}
}

// crashCheck compares a reopened store with the model. Even commit-only
// changes, which are not synced, must be there: SIGKILL ends the process,
// not the kernel, so every record that was written survives in the page
// cache (losing them is for a power cut, which this test does not make).
func crashCheck(db *DB, m *crashModel) error {
	for shard := uint64(1); shard <= crashShards; shard++ {
		s := &m[shard]
		bs, err := db.GetBootstrapInfo(shard, 1)
		switch {
		case s.boot && (err != nil || bs.Addresses[1] != crashBootstrap(shard).Addresses[1]):
			return fmt.Errorf("shard %d: bootstrap %+v, %v; want it saved", shard, bs, err)
		case !s.boot && !errors.Is(err, raftio.ErrNoBootstrapInfo):
			return fmt.Errorf("shard %d: bootstrap %+v, %v; want none", shard, bs, err)
		}
		ss, err := db.GetSnapshot(shard, 1)
		if err != nil || ss.Index != s.ss.Index || ss.Term != s.ss.Term || ss.Filepath != s.ss.Filepath {
			return fmt.Errorf("shard %d: snapshot %d/%d %q, %v; want %d/%d %q", shard, ss.Index, ss.Term, ss.Filepath, err, s.ss.Index, s.ss.Term, s.ss.Filepath)
		}
		rs, err := db.ReadRaftState(shard, 1, s.ss.Index)
		if !s.hasState {
			if !errors.Is(err, raftio.ErrNoSavedLog) {
				return fmt.Errorf("shard %d: ReadRaftState %+v, %v; want ErrNoSavedLog", shard, rs, err)
			}
		} else {
			var want raftio.RaftState
			want.State = s.state
			if last := s.last(); last > s.ss.Index {
				want.FirstIndex, want.EntryCount = s.ss.Index+1, last-s.ss.Index
			}
			if err != nil || rs != want {
				return fmt.Errorf("shard %d: ReadRaftState(%d) = %+v, %v; want %+v", shard, s.ss.Index, rs, err, want)
			}
		}
		// Every entry held, and nothing on either side of them.
		lows := []uint64{s.compactedTo + 1, s.compactedTo, s.ss.Index + 1}
		if len(s.ents) > 0 {
			lows = append(lows, s.first, s.first-1, s.last(), s.last()+1)
		}
		for _, low := range lows {
			if low == 0 {
				continue
			}
			got, size, err := db.IterateEntries(nil, 0, shard, 1, low, low+1<<20, 0)
			if err != nil {
				return fmt.Errorf("shard %d: IterateEntries from %d: %v", shard, low, err)
			}
			var want []uint64
			for idx := low; len(s.ents) > 0 && idx >= s.first && idx <= s.last(); idx++ {
				want = append(want, idx)
			}
			if len(got) != len(want) {
				return fmt.Errorf("shard %d: IterateEntries from %d: %d entries, want %d (held %d-%d, compacted to %d)", shard, low, len(got), len(want), s.first, s.last(), s.compactedTo)
			}
			var wantSize uint64
			for i, e := range got {
				w := s.ents[want[i]-s.first]
				we := crashEntry(shard, want[i], w.term, w.size)
				if e.Index != we.Index || e.Term != we.Term || e.Key != we.Key || string(e.Cmd) != string(we.Cmd) {
					return fmt.Errorf("shard %d: entry %d: got index %d term %d, %d bytes; want term %d, %d bytes", shard, want[i], e.Index, e.Term, len(e.Cmd), w.term, w.size)
				}
				wantSize += uint64(we.SizeUpperLimit())
			}
			if size != wantSize {
				return fmt.Errorf("shard %d: IterateEntries from %d: size %d, want %d", shard, low, size, wantSize)
			}
		}
	}
	return nil
}

// crashTear damages what the newest segment holds past off in segment
// seg (or anywhere in a segment started after it), as a power cut during
// an unsynced write would: cut off, or left as zeros or garbage.
func crashTear(dir string, seg uint64, off int64, rng *rand.Rand) (string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(names) == 0 {
		return "", fmt.Errorf("segments in %s: %v", dir, err)
	}
	slices.Sort(names)
	newest := names[len(names)-1]
	switch base := filepath.Base(newest); {
	case base < segmentName(seg):
		return "", fmt.Errorf("newest segment %s is older than the child's %d", newest, seg)
	case base > segmentName(seg):
		// The call started a segment: all of it is new.
		off = 0
	}
	data, err := os.ReadFile(newest)
	if err != nil {
		return "", err
	}
	// Segments may be zero-filled ahead of use: the records end at the
	// last byte that is not zero.
	end := int64(len(data))
	for end > 0 && data[end-1] == 0 {
		end--
	}
	if end <= off {
		return "nothing written to tear", nil
	}
	cut := off + rng.Int64N(end-off)
	what := fmt.Sprintf("%s cut at %d of %d-%d", filepath.Base(newest), cut, off, end)
	if rng.IntN(3) == 0 {
		return what, os.Truncate(newest, cut)
	}
	tail := make([]byte, end-cut)
	if rng.IntN(2) == 0 {
		what = strings.Replace(what, "cut", "garbage", 1)
		for i := range tail {
			tail[i] = byte(rng.Uint32())
		}
	} else {
		what = strings.Replace(what, "cut", "zeros", 1)
	}
	f, err := os.OpenFile(newest, os.O_WRONLY, 0)
	if err != nil {
		return "", err
	}
	_, err = f.WriteAt(tail, cut)
	return what, errors.Join(err, f.Close())
}

func TestCrashKill9(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir, os.Getenv(crashSeedEnv))
		return
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedOverride); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (%s=%d to repeat)", seed, crashSeedOverride, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c))
	dir := t.TempDir()
	m := &crashModel{}
	var torn int
	for round := range crashRounds {
		target := 200 + rng.IntN(1801)
		ops, pending, err := crashRound(t, dir, rng.Uint64(), target)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, op := range ops {
			m.apply(op)
		}
		if pending != nil && pending.op.Op != "remove" && rng.IntN(2) == 0 {
			// The kill left the unacknowledged call's record whole, or not
			// written at all; a power cut could also tear it.
			what, err := crashTear(dir, pending.seg, pending.off, rng)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("round %d: tearing the unacknowledged call's record: %s", round, what)
		}
		var logBuf strings.Builder
		db, err := open(dir, slog.New(slog.NewTextHandler(&logBuf, nil)), crashSegmentBytes)
		if err != nil {
			t.Fatalf("round %d: reopen after %d acknowledged calls: %v", round, len(ops), err)
		}
		if strings.Contains(logBuf.String(), "unfinished end") {
			torn++
		}
		err = crashCheck(db, m)
		if err != nil && pending != nil {
			// The call the kill cut short may have reached the log.
			after := m.clone()
			after.apply(pending.op)
			if err2 := crashCheck(db, after); err2 == nil {
				m, err = after, nil
			} else {
				err = fmt.Errorf("%w\n(with the unacknowledged %+v applied: %v)", err, pending.op, err2)
			}
		}
		if cerr := db.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("round %d, after %d acknowledged calls: %v", round, len(ops), err)
		}
		t.Logf("round %d: %d calls acknowledged (target %d), unacknowledged call: %v", round, len(ops), target, pending != nil)
	}
	t.Logf("%d of %d reopens cut a torn record", torn, crashRounds)
}

// crashPending is a call the child started and did not acknowledge, and
// where the log ended when it started.
type crashPending struct {
	op  crashOp
	seg uint64
	off int64
}

// crashRound runs a child on dir until it has acknowledged target calls
// (or the round's budget is spent), kills it, and returns every call it
// acknowledged and the one it had started, if any.
func crashRound(t *testing.T, dir string, seed uint64, target int) ([]crashOp, *crashPending, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashSeedEnv+"="+strconv.FormatUint(seed, 10))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	var once sync.Once
	var waitErr error
	wait := func() error {
		once.Do(func() { waitErr = cmd.Wait() })
		return waitErr
	}
	// A failing test still ends its child.
	t.Cleanup(func() {
		cmd.Process.Kill()
		wait()
	})
	var killed bool
	var mu sync.Mutex
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		if !killed {
			killed = true
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	budget := time.AfterFunc(crashRoundBudget, kill)
	defer budget.Stop()

	// Everything the child printed counts, also what was still in the pipe
	// when it was killed: those calls returned before it died.
	var ops []crashOp
	var pending *crashPending
	r := bufio.NewReader(out)
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF {
			// A line without its newline was cut by the kill: an "op" line
			// cut short was never called, an "ok" cut short leaves its call
			// pending, which allows both outcomes.
			break
		}
		if err != nil {
			return nil, nil, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "op "):
			if pending != nil {
				return nil, nil, fmt.Errorf("child started a call before acknowledging %+v", pending.op)
			}
			var p crashPending
			f := strings.SplitN(line, " ", 4)
			if len(f) != 4 {
				return nil, nil, fmt.Errorf("child line %q", line)
			}
			var err1, err2 error
			p.seg, err1 = strconv.ParseUint(f[1], 10, 64)
			p.off, err2 = strconv.ParseInt(f[2], 10, 64)
			if err := errors.Join(err1, err2, json.Unmarshal([]byte(f[3]), &p.op)); err != nil {
				return nil, nil, fmt.Errorf("child line %q: %v", line, err)
			}
			pending = &p
		case line == "ok":
			if pending == nil {
				return nil, nil, errors.New("child acknowledged a call it did not start")
			}
			ops = append(ops, pending.op)
			pending = nil
			if len(ops) == target {
				// The child is already in its next call: a delay of up to
				// a few of its fsyncs lets the kill land anywhere in it.
				time.AfterFunc(time.Duration(rand.IntN(2000))*time.Microsecond, kill)
			}
		}
	}
	err = wait()
	mu.Lock()
	wasKilled := killed
	mu.Unlock()
	var ee *exec.ExitError
	if !wasKilled || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return nil, nil, fmt.Errorf("child ended by itself (%v) after %d calls: %s", err, len(ops), stderr.String())
	}
	return ops, pending, nil
}

// crashGen draws the child's calls from what the store holds, the way
// raft would make them: terms only grow, entries at or below the commit
// index or a snapshot are never overwritten, snapshots are taken of
// committed entries and logs are compacted behind them.
type crashGen struct {
	r      *rand.Rand
	shards [crashShards + 1]struct {
		boot        bool
		st          pb.State
		last, ssIdx uint64
	}
}

func crashChild(dir, seedArg string) {
	// Should the parent die without killing the child, the child goes too.
	time.AfterFunc(30*time.Second, func() { os.Exit(3) })
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	seed, err := strconv.ParseUint(seedArg, 10, 64)
	if err != nil {
		fail(err)
	}
	db, err := open(dir, slog.New(slog.DiscardHandler), crashSegmentBytes)
	if err != nil {
		fail(err)
	}
	g := &crashGen{r: rand.New(rand.NewPCG(seed, 1))}
	for shard := uint64(1); shard <= crashShards; shard++ {
		s := &g.shards[shard]
		_, err := db.GetBootstrapInfo(shard, 1)
		s.boot = err == nil
		ss, err := db.GetSnapshot(shard, 1)
		if err != nil {
			fail(err)
		}
		s.ssIdx, s.last = ss.Index, ss.Index
		rs, err := db.ReadRaftState(shard, 1, ss.Index)
		switch {
		case errors.Is(err, raftio.ErrNoSavedLog):
		case err != nil:
			fail(err)
		default:
			s.st = rs.State
			if rs.EntryCount > 0 {
				s.last = rs.FirstIndex + rs.EntryCount - 1
			}
		}
	}
	for {
		op := g.next()
		line, err := json.Marshal(op)
		if err != nil {
			fail(err)
		}
		// One write per line: nothing is left in a buffer when the kill
		// comes.
		fmt.Fprintf(os.Stdout, "op %d %d %s\n", db.cur.num, db.curSize, line)
		if err := op.do(db); err != nil {
			fail(fmt.Errorf("%+v: %w", op, err))
		}
		os.Stdout.WriteString("ok\n")
	}
}

func (g *crashGen) next() crashOp {
	r := g.r
	for shard := uint64(1); shard <= crashShards; shard++ {
		if !g.shards[shard].boot {
			g.shards[shard].boot = true
			return crashOp{Op: "boot", Shard: shard}
		}
	}
	shards := r.Perm(crashShards)[:1+r.IntN(crashShards)]
	switch n := r.IntN(100); {
	case n < 12:
		op := crashOp{Op: "snap"}
		for _, i := range shards {
			shard := uint64(i + 1)
			s := &g.shards[shard]
			switch {
			case s.st.Commit > s.ssIdx:
				s.ssIdx += 1 + uint64(r.IntN(int(s.st.Commit-s.ssIdx)))
				op.Updates = append(op.Updates, crashUpdate{Shard: shard, SSIndex: s.ssIdx, SSTerm: s.st.Term})
			case s.ssIdx > 0:
				// Not newer than the one held: must change nothing.
				op.Updates = append(op.Updates, crashUpdate{Shard: shard, SSIndex: s.ssIdx, SSTerm: s.st.Term + 1})
			}
		}
		if len(op.Updates) > 0 {
			return op
		}
	case n < 25:
		shard := uint64(shards[0] + 1)
		if s := &g.shards[shard]; s.ssIdx > 0 {
			to := s.ssIdx - uint64(r.IntN(int(min(s.ssIdx, 10))))
			return crashOp{Op: "remove", Shard: shard, Index: to}
		}
	}
	op := crashOp{Op: "save"}
	for _, i := range shards {
		op.Updates = append(op.Updates, g.round(uint64(i+1)))
	}
	return op
}

func (g *crashGen) sizes(n int) []int {
	z := make([]int, n)
	for i := range z {
		switch g.r.IntN(3) {
		case 0:
			z[i] = g.r.IntN(16)
		case 1:
			z[i] = g.r.IntN(512)
		default:
			z[i] = g.r.IntN(4097)
		}
	}
	return z
}

// round is one replica's update of a raft round.
func (g *crashGen) round(shard uint64) crashUpdate {
	r := g.r
	s := &g.shards[shard]
	if s.st.Term == 0 {
		s.st.Term = 1
	}
	// Entries above these may be replaced; raft never touches the others.
	stable := max(s.st.Commit, s.ssIdx)
	u := crashUpdate{Shard: shard}
	switch n := r.IntN(100); {
	case n < 10 && s.last > stable:
		// A new leader overwrites the uncommitted tail.
		s.st.Term++
		s.st.Vote = 1 + uint64(r.IntN(3))
		u.First = stable + 1 + uint64(r.IntN(int(s.last-stable)))
		u.ETerm = s.st.Term
		u.Sizes = g.sizes(1 + r.IntN(5))
		s.last = u.First + uint64(len(u.Sizes)) - 1
	case n < 18:
		if r.IntN(2) == 0 || s.st.Commit == s.last {
			s.st.Term++
			s.st.Vote = 1 + uint64(r.IntN(3))
		} else {
			// Commit only: written, not synced.
			s.st.Commit += 1 + uint64(r.IntN(int(s.last-s.st.Commit)))
		}
	case n < 21:
		// A snapshot from the leader, behind, at or past the log's end.
		if r.IntN(2) == 0 {
			s.st.Term++
		}
		idx := stable + 1 + uint64(r.IntN(int(s.last-stable)+20))
		u.SSIndex, u.SSTerm = idx, s.st.Term
		s.st.Commit, s.ssIdx, s.last = idx, idx, idx
		if k := r.IntN(4); k > 0 {
			u.First, u.ETerm, u.Sizes = idx+1, s.st.Term, g.sizes(k)
			s.last += uint64(k)
		}
	default:
		u.First, u.ETerm, u.Sizes = s.last+1, s.st.Term, g.sizes(1+r.IntN(8))
		s.last += uint64(len(u.Sizes))
		if r.IntN(2) == 0 {
			s.st.Commit += uint64(r.IntN(int(s.last-s.st.Commit) + 1))
		}
	}
	u.Term, u.Vote, u.Commit = s.st.Term, s.st.Vote, s.st.Commit
	return u
}
