package raftwal

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// errClosed is returned by every call after Close.
var errClosed = errors.New("raftwal: closed")

// Name implements raftio.ILogDB.
func (db *DB) Name() string { return Name }

// BinaryFormat implements raftio.ILogDB: entries are stored one by one,
// as with dragonboat's plain formats.
func (db *DB) BinaryFormat() uint32 { return raftio.PlainLogDBBinVersion }

// writable starts a write: callers hold wmu.
func (db *DB) writable() error {
	if db.closed {
		return errClosed
	}
	if db.failed != nil {
		return db.failed
	}
	return nil
}

// SaveRaftState implements raftio.ILogDB: one record for every replica's
// update, made durable unless only commit indexes changed.
func (db *DB) SaveRaftState(updates []pb.Update, _ uint64) error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if err := db.writable(); err != nil {
		return err
	}
	db.enc.begin()
	sync := false
	for i := range updates {
		ud := &updates[i]
		// Only writers change nodes, and they hold wmu: no need for mu.
		n := db.nodes[raftio.NodeInfo{ShardID: ud.ShardID, ReplicaID: ud.ReplicaID}]
		var flags byte
		if !pb.IsEmptyState(ud.State) && (n == nil || !n.hasState || !pb.IsStateEqual(ud.State, n.state)) {
			flags |= hasState
			if n == nil || !n.hasState || ud.State.Term != n.state.Term || ud.State.Vote != n.state.Vote {
				sync = true
			}
		}
		installs := !pb.IsEmptySnapshot(ud.Snapshot) && (n == nil || ud.Snapshot.Index > n.snapshot.Index)
		if installs {
			flags |= hasSnapshot
			sync = true
		}
		if ents := ud.EntriesToSave; len(ents) > 0 {
			first := ents[0].Index
			for j := range ents {
				if ents[j].Index != first+uint64(j) {
					return fmt.Errorf("raftwal: shard %d replica %d: entries not consecutive at %d", ud.ShardID, ud.ReplicaID, ents[j].Index)
				}
			}
			if !installs && n != nil && len(n.locs) > 0 && first > n.last()+1 {
				return fmt.Errorf("raftwal: shard %d replica %d: entries from %d leave a gap after %d", ud.ShardID, ud.ReplicaID, first, n.last())
			}
			flags |= hasEntries
			sync = true
		}
		if flags == 0 {
			continue
		}
		db.enc.op(opUpdate, ud.ShardID, ud.ReplicaID)
		db.enc.byte(flags)
		if flags&hasState != 0 {
			db.enc.message(&ud.State)
		}
		if flags&hasSnapshot != 0 {
			db.enc.message(&ud.Snapshot)
		}
		if flags&hasEntries != 0 {
			db.enc.uvarint(uint64(len(ud.EntriesToSave)))
			db.enc.uvarint(ud.EntriesToSave[0].Index)
			for j := range ud.EntriesToSave {
				db.enc.entry(&ud.EntriesToSave[j])
			}
		}
	}
	return db.write(sync)
}

// IterateEntries implements raftio.ILogDB: entries [low, high) in order,
// up to and including the first that takes their size past maxSize;
// nothing when low is compacted or not held.
func (db *DB) IterateEntries(ents []pb.Entry, size uint64, shardID, replicaID uint64, low, high, maxSize uint64) ([]pb.Entry, uint64, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ents, size, errClosed
	}
	n := db.nodes[raftio.NodeInfo{ShardID: shardID, ReplicaID: replicaID}]
	if n == nil || len(n.locs) == 0 || low <= n.compactedTo || low < n.first || low > n.last() || low >= high {
		return ents, size, nil
	}
	if maxSize == 0 {
		maxSize = math.MaxUint64
	}
	end := min(high, n.last()+1)
	var buf []byte
	for idx := low; idx < end; {
		// Read a run of entries of one segment with one pread: entries of
		// a record lie back to back, a length prefix apart.
		run := n.locs[idx-n.first : end-n.first]
		start, stop := int64(run[0].off), int64(run[0].off)+int64(run[0].size)
		k := 1
		for ; k < len(run); k++ {
			l := run[k]
			next := int64(l.off) + int64(l.size)
			if l.seg != run[0].seg || int64(l.off) < stop || int64(l.off)-stop > 64 || next-start > readRunBytes {
				break
			}
			stop = next
		}
		f := db.segmentFile(run[0].seg)
		if f == nil {
			return ents, size, fmt.Errorf("raftwal: shard %d replica %d: entry %d is in segment %d, which is gone", shardID, replicaID, idx, run[0].seg)
		}
		buf = slices.Grow(buf[:0], int(stop-start))[:stop-start]
		if _, err := f.ReadAt(buf, start); err != nil {
			return ents, size, fmt.Errorf("raftwal: read entry %d of shard %d replica %d from %s: %w", idx, shardID, replicaID, f.Name(), err)
		}
		for _, l := range run[:k] {
			var e pb.Entry
			data := buf[int64(l.off)-start : int64(l.off)-start+int64(l.size)]
			if err := decodeEntry(data, &e); err != nil {
				return ents, size, fmt.Errorf("raftwal: entry %d of shard %d replica %d in %s at %d: %w", idx, shardID, replicaID, f.Name(), l.off, err)
			}
			if e.Index != idx {
				return ents, size, fmt.Errorf("raftwal: %w: %s at %d holds entry %d, want %d", ErrCorrupt, f.Name(), l.off, e.Index, idx)
			}
			ents = append(ents, e)
			size += uint64(e.SizeUpperLimit())
			idx++
			if size > maxSize {
				return ents, size, nil
			}
		}
	}
	return ents, size, nil
}

// readRunBytes bounds one read of IterateEntries.
const readRunBytes = 1 << 20

// segmentFile returns segment num's file; callers hold mu.
func (db *DB) segmentFile(num uint32) *os.File {
	i, ok := slices.BinarySearchFunc(db.segs, uint64(num), func(s *segment, n uint64) int { return cmp.Compare(s.num, n) })
	if !ok {
		return nil
	}
	return db.segs[i].f
}

// ReadRaftState implements raftio.ILogDB: the replica's state and the
// entries after lastIndex (its snapshot's index).
func (db *DB) ReadRaftState(shardID, replicaID, lastIndex uint64) (raftio.RaftState, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return raftio.RaftState{}, errClosed
	}
	n := db.nodes[raftio.NodeInfo{ShardID: shardID, ReplicaID: replicaID}]
	if n == nil || !n.hasState {
		return raftio.RaftState{}, raftio.ErrNoSavedLog
	}
	rs := raftio.RaftState{State: n.state}
	if len(n.locs) > 0 && n.last() > lastIndex {
		if n.first > lastIndex+1 {
			return raftio.RaftState{}, fmt.Errorf("raftwal: %w: shard %d replica %d: entries start at %d, after %d", ErrCorrupt, shardID, replicaID, n.first, lastIndex)
		}
		rs.FirstIndex = lastIndex + 1
		rs.EntryCount = n.last() - lastIndex
	}
	return rs, nil
}

// SaveSnapshots implements raftio.ILogDB: metadata of snapshots taken of
// the replicas' own state machines, newer than the ones held.
func (db *DB) SaveSnapshots(updates []pb.Update) error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if err := db.writable(); err != nil {
		return err
	}
	db.enc.begin()
	for i := range updates {
		ud := &updates[i]
		if pb.IsEmptySnapshot(ud.Snapshot) {
			continue
		}
		if n := db.nodes[raftio.NodeInfo{ShardID: ud.ShardID, ReplicaID: ud.ReplicaID}]; n != nil && ud.Snapshot.Index <= n.snapshot.Index {
			continue
		}
		db.enc.op(opSnapshot, ud.ShardID, ud.ReplicaID)
		db.enc.message(&ud.Snapshot)
	}
	return db.write(true)
}

// GetSnapshot implements raftio.ILogDB: the newest snapshot, or an empty
// one.
func (db *DB) GetSnapshot(shardID, replicaID uint64) (pb.Snapshot, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return pb.Snapshot{}, errClosed
	}
	if n := db.nodes[raftio.NodeInfo{ShardID: shardID, ReplicaID: replicaID}]; n != nil {
		return n.snapshot, nil
	}
	return pb.Snapshot{}, nil
}

// SaveBootstrapInfo implements raftio.ILogDB.
func (db *DB) SaveBootstrapInfo(shardID, replicaID uint64, bs pb.Bootstrap) error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if err := db.writable(); err != nil {
		return err
	}
	db.enc.begin()
	db.enc.op(opBootstrap, shardID, replicaID)
	db.enc.message(&bs)
	return db.write(true)
}

// GetBootstrapInfo implements raftio.ILogDB.
func (db *DB) GetBootstrapInfo(shardID, replicaID uint64) (pb.Bootstrap, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return pb.Bootstrap{}, errClosed
	}
	n := db.nodes[raftio.NodeInfo{ShardID: shardID, ReplicaID: replicaID}]
	if n == nil || n.bootstrap == nil {
		return pb.Bootstrap{}, raftio.ErrNoBootstrapInfo
	}
	return *n.bootstrap, nil
}

// ListNodeInfo implements raftio.ILogDB: the replicas with a bootstrap
// record, by shard and replica.
func (db *DB) ListNodeInfo() ([]raftio.NodeInfo, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return nil, errClosed
	}
	out := []raftio.NodeInfo{}
	for ni, n := range db.nodes {
		if n.bootstrap != nil {
			out = append(out, ni)
		}
	}
	slices.SortFunc(out, compareNodes)
	return out, nil
}

// RemoveEntriesTo implements raftio.ILogDB: entries up to index are
// dropped, and segments no replica needs any more are deleted.
func (db *DB) RemoveEntriesTo(shardID, replicaID, index uint64) error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if err := db.writable(); err != nil {
		return err
	}
	n := db.nodes[raftio.NodeInfo{ShardID: shardID, ReplicaID: replicaID}]
	if n == nil || index <= n.compactedTo {
		return nil
	}
	db.enc.begin()
	db.enc.op(opCompact, shardID, replicaID)
	db.enc.uvarint(index)
	// Durable before any segment goes: replay must not find entries of a
	// deleted segment still live.
	if err := db.write(true); err != nil {
		return err
	}
	db.deleteObsolete()
	return nil
}

// CompactEntriesTo implements raftio.ILogDB. RemoveEntriesTo already
// reclaimed the space; the channel is ready at once.
func (db *DB) CompactEntriesTo(shardID, replicaID, index uint64) (<-chan struct{}, error) {
	done := make(chan struct{}, 1)
	done <- struct{}{}
	return done, nil
}

// RemoveNodeData implements raftio.ILogDB.
func (db *DB) RemoveNodeData(shardID, replicaID uint64) error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if err := db.writable(); err != nil {
		return err
	}
	db.enc.begin()
	db.enc.op(opRemove, shardID, replicaID)
	if err := db.write(true); err != nil {
		return err
	}
	db.deleteObsolete()
	return nil
}

// ImportSnapshot implements raftio.ILogDB: the replica starts over from
// the snapshot, as a joining member (dragonboat's tools.ImportSnapshot).
func (db *DB) ImportSnapshot(ss pb.Snapshot, replicaID uint64) error {
	if ss.Type == pb.UnknownStateMachine {
		return errors.New("raftwal: import snapshot: unknown state machine type")
	}
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if err := db.writable(); err != nil {
		return err
	}
	db.enc.begin()
	db.enc.op(opRemove, ss.ShardID, replicaID)
	db.enc.op(opBootstrap, ss.ShardID, replicaID)
	db.enc.message(&pb.Bootstrap{Join: true, Type: ss.Type})
	db.enc.op(opUpdate, ss.ShardID, replicaID)
	db.enc.byte(hasState | hasSnapshot)
	db.enc.message(&pb.State{Term: ss.Term, Commit: ss.Index})
	db.enc.message(&ss)
	if err := db.write(true); err != nil {
		return err
	}
	db.deleteObsolete()
	return nil
}

// Close implements raftio.ILogDB.
func (db *DB) Close() error {
	db.spare.Lock()
	db.spare.stop = true
	db.spare.Unlock()
	db.spare.wg.Wait()
	db.wmu.Lock()
	defer db.wmu.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil
	}
	db.closed = true
	var err error
	if db.cur != nil && db.failed == nil {
		// Commit-index records may be unsynced; a clean stop keeps them.
		err = fdatasync(db.cur.f)
	}
	return errors.Join(err, db.closeFiles())
}

func (db *DB) closeFiles() error {
	var errs []error
	for _, s := range db.segs {
		errs = append(errs, s.f.Close())
	}
	db.segs = nil
	if db.lock != nil {
		errs = append(errs, db.lock.Close())
		db.lock = nil
	}
	return errors.Join(errs...)
}
