package raftwal

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	pb "github.com/lni/dragonboat/v4/raftpb"
	"golang.org/x/sys/unix"
)

// fillsUnderWay counts the goroutines prepareSpare started that have not
// ended, running or not yet scheduled.
func fillsUnderWay() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("(*DB).prepareSpare")) {
			count++
		}
	}
	return count
}

// A zero-fill still under way when its segment ends (writes outran it)
// must stay the only one. A second fill of the same spare path outlives
// the first: the first's completion marks the spare ready, the next
// rotation renames the file the second is still zeroing into a live
// segment, whose checkpoint and records it then overwrites, and the
// second's completion marks a spare ready that no longer exists, so the
// rotation after fails (ENOENT) and dragonboat panics. Seen in a
// three-node cluster with cluster.max_raft_log_bytes = "1MiB" (128 KiB
// segments): two nodes panicked on the rename within seconds and the
// third's log was refused at restart ("zeroed record header followed by
// data" at offset 0 of a segment).
//
// A read lease on the spare's path stands for a slow fill: a fill's open
// for writing waits until the lease is given up (or for
// /proc/sys/fs/lease-break-time), so the fill cannot finish while the
// test writes on.
func TestOneSpareFillAtATime(t *testing.T) {
	dir := t.TempDir()
	const segBytes = 64 << 10
	db := mustOpen(t, dir, segBytes)
	defer db.Close()

	spare := filepath.Join(dir, spareName)
	if err := os.WriteFile(spare, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	lf, err := os.Open(spare)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(lf.Fd(), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		lf.Close()
		t.Skipf("no file leases here: %v", err)
	}
	held := true
	release := func() {
		if held {
			held = false
			unix.FcntlInt(lf.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
			lf.Close()
		}
	}
	// Before db.Close, which waits for the fills.
	defer release()

	idx := uint64(1)
	save := func() error {
		ents := []pb.Entry{{Index: idx, Term: 1, Cmd: bytes.Repeat([]byte{byte(idx)}, 4000)}}
		err := db.SaveRaftState([]pb.Update{{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 1}, EntriesToSave: ents}}, 1)
		if err == nil {
			idx++
		}
		return err
	}
	for range 4 * segBytes / 4000 {
		if err := save(); err != nil {
			t.Fatal(err)
		}
	}
	if segs := len(segmentFiles(t, dir)); segs < 4 {
		t.Fatalf("%d segments, want at least 4", segs)
	}
	if n := fillsUnderWay(); n != 1 {
		t.Errorf("%d zero-fills under way at once, want 1", n)
	}

	release()
	db.spare.wg.Wait()
	// Rotations take the spare again; every write and every entry must
	// survive them and a reopen.
	for range 4 * segBytes / 4000 {
		if err := save(); err != nil {
			t.Fatal(err)
		}
		db.spare.wg.Wait()
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir); err != nil || rep.Entries != int(idx-1) {
		t.Fatalf("Verify: %+v, %v; want %d entries", rep, err, idx-1)
	}
	db = mustOpen(t, dir, segBytes)
	defer db.Close()
	ents, _, err := db.IterateEntries(nil, 0, 1, 1, 1, idx, 0)
	if err != nil || len(ents) != int(idx-1) {
		t.Fatalf("read back %d entries, %v; want %d", len(ents), err, idx-1)
	}
	for _, e := range ents {
		if !bytes.Equal(e.Cmd, bytes.Repeat([]byte{byte(e.Index)}, 4000)) {
			t.Fatalf("entry %d changed", e.Index)
		}
	}
}
