package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// errSMClosed is what Lookup reports once the state machine is closed.
var errSMClosed = errors.New("cluster: state machine closed")

// applyChunkBytes bounds the lsm batch Update builds before writing it; a
// chunk always ends on an entry boundary and carries that entry's index.
const applyChunkBytes = 4 << 20

// stateMachine is one shard replica's dragonboat IOnDiskStateMachine over
// its own lsm.DB, opened without the engine's WAL.
//
// Layout of its directory (<storage.dir>/shard-<id>):
//
//	CURRENT      names the live lsm directory, e.g. "db-000001"
//	db-NNNNNN/   the lsm.DB
//
// Dragonboat runs Open, Update, Sync, PrepareSnapshot, RecoverFromSnapshot
// and Close one at a time, but Lookup (and SaveSnapshot) concurrently with
// them, and Lookup even after Close; mu guards the db pointer and the closed
// flag for those. The fields below the apply line belong to the apply path
// (the mutually exclusive methods) and need no lock.
type stateMachine struct {
	shardID, replicaID uint64
	dir                string
	fs                 vfs.FS
	opts               lsm.Options
	log                *slog.Logger

	mu sync.RWMutex
	// clearMu keeps reads of user data (Lookup of a readBatch) out while a
	// clear's chunked deletes go in; taken before mu, never inside it.
	clearMu sync.RWMutex
	db      *lsm.DB
	closed  bool
	current string // name of the live lsm directory
	// members caches the member records, which change only through
	// applied entries and snapshots: the status loop asks for them twice a
	// second, and reading them from the lsm would make it link the
	// memtable's new entries into order each time.
	members []member
	// proposerKeys is the number of proposer records (seqKeyPrefix) the
	// lsm holds, for the key estimate: with the applied index and the
	// member records they are keys no user wrote.
	proposerKeys atomic.Int64

	// apply path
	applied        uint64
	seqs           map[uint64]seqState // by proposer id
	dirty          map[uint64]struct{} // proposers whose state is not yet written
	membersChanged bool                // the batch adds or removes a member
	clearChunk     int                 // bytes of deletes per write of a clear (applyChunkBytes; tests lower it)
	batch          lsm.Batch
	// appliedIndex is applied, for readers off the apply goroutine.
	appliedIndex atomic.Uint64
	hashes       hashJobs // consistency checks (consistency.go)
	part         lsm.Batch
	kbuf         []byte
}

var (
	_ sm.IOnDiskStateMachine = (*stateMachine)(nil)
)

func newStateMachine(shardID, replicaID uint64, dir string, fs vfs.FS, opts lsm.Options, log *slog.Logger) *stateMachine {
	return &stateMachine{
		shardID:    shardID,
		replicaID:  replicaID,
		dir:        dir,
		fs:         fs,
		opts:       opts,
		log:        log.With("shard", shardID),
		clearChunk: applyChunkBytes,
	}
}

// createShardDir gives a shard an empty lsm directory named by CURRENT,
// durably, and returns its name. A replica raft knows whose directory has
// no CURRENT has lost its applied state (see Cluster.checkShardDirs).
func createShardDir(fs vfs.FS, dir string) (string, error) {
	name := dbDirName(1)
	if err := fs.MkdirAll(fs.PathJoin(dir, name), 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeCurrent(fs, dir, name); err != nil {
		return "", err
	}
	if err := syncDir(fs, fs.PathDir(dir)); err != nil {
		return "", err
	}
	return name, nil
}

// Open opens (or creates) the shard's lsm and returns the index of the last
// entry whose effects it holds.
func (s *stateMachine) Open(stopc <-chan struct{}) (uint64, error) {
	name, err := readCurrent(s.fs, s.dir)
	if err == nil && name == "" {
		// startReplicas creates the directory of a new replica; this is
		// for tests and for replicas started by earlier builds.
		name, err = createShardDir(s.fs, s.dir)
	}
	if err != nil {
		return 0, fmt.Errorf("open shard %d: %w", s.shardID, err)
	}
	if err := removeStaleDBDirs(s.fs, s.dir, name); err != nil {
		return 0, fmt.Errorf("open shard %d: %w", s.shardID, err)
	}
	db, err := lsm.Open(s.fs.PathJoin(s.dir, name), s.opts)
	if err != nil {
		return 0, fmt.Errorf("open shard %d: %w", s.shardID, err)
	}
	applied, err := readApplied(db)
	if err != nil {
		db.Close()
		return 0, fmt.Errorf("open shard %d: %w", s.shardID, err)
	}
	seqs, err := loadSeqs(db)
	if err != nil {
		db.Close()
		return 0, fmt.Errorf("open shard %d: %w", s.shardID, err)
	}
	members, err := readMembers(db)
	if err != nil {
		db.Close()
		return 0, fmt.Errorf("open shard %d: %w", s.shardID, err)
	}
	s.seqs, s.dirty = seqs, make(map[uint64]struct{})
	s.proposerKeys.Store(int64(len(seqs)))
	s.mu.Lock()
	s.db, s.current, s.closed, s.members = db, name, false, members
	s.mu.Unlock()
	s.applied = applied
	s.appliedIndex.Store(applied)
	s.log.Debug("state machine open", "dir", name, "applied", applied)
	return applied, nil
}

func readApplied(db *lsm.DB) (uint64, error) {
	v, err := db.Get(appliedKey)
	if errors.Is(err, lsm.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read applied index: %w", err)
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("read applied index: %d bytes, want 8: %w", len(v), lsm.ErrCorruption)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Proposer bookkeeping: a proposer silent for seqRetainEntries entries is
// forgotten (its retries are long over); the check runs when the entry
// index crosses a multiple of seqGCInterval. Both depend only on the
// entries, so every replica forgets the same proposers at the same point.
const (
	seqRetainEntries = 1 << 20
	seqGCInterval    = 1 << 12
)

// Update applies committed entries. Each entry's effects, its proposer's
// seqState and the entry's index go into the same lsm batch (or, for a
// large Update, a chunk of whole entries ending with that entry's index),
// so the stored applied index always matches the stored data.
func (s *stateMachine) Update(ents []sm.Entry) ([]sm.Entry, error) {
	db := s.db
	b := &s.batch
	b.Reset()
	for i := range ents {
		e := &ents[i]
		// The previous entry's index is the same on every replica however
		// dragonboat splits the entries into Updates (s.applied is the last
		// entry of the previous Update).
		prev := s.applied
		if i > 0 {
			prev = ents[i-1].Index
		}
		if e.Index/seqGCInterval != prev/seqGCInterval {
			s.forgetProposers(b, e.Index)
		}
		h, body, err := decodeHeader(e.Cmd)
		if err != nil {
			s.log.Error("rejecting raft entry", "index", e.Index, "err", err)
			e.Result = sm.Result{Value: resultRejected}
			continue
		}
		if h.kind > cmdMaxKind {
			// Proposed by a newer version. Skipping it, as a malformed
			// entry is skipped, would leave this replica without effects
			// the others applied; stopping keeps it consistent (an Update
			// error stops the process: dragonboat panics) until the
			// node is upgraded and replays the entry from its log.
			err := fmt.Errorf("shard %d: raft entry %d has command kind %d, unknown to this version of kvserver: a newer version proposed it; upgrade this node, which applies the entry at its next start: %w",
				s.shardID, e.Index, h.kind, errNewerCommand)
			s.log.Error("stopping: raft entry of an unknown kind", "index", e.Index, "kind", h.kind, "err", err)
			return nil, err
		}
		if h.kind == cmdHash && (b.Len() > 0 || len(s.dirty) > 0) {
			// The hash covers every entry before this one, on every
			// replica alike, wherever its Updates begin: also work of
			// this Update done before its first entry (proposers
			// forgotten at a GC boundary).
			prevIndex := s.applied
			if i > 0 {
				prevIndex = ents[i-1].Index
			}
			if err := s.commit(db, b, prevIndex); err != nil {
				return nil, err
			}
		}
		if h.kind == cmdClear && i > 0 && (b.Len() > 0 || len(s.dirty) > 0) {
			// Clear reads the state, so everything before it must be
			// written first (and only that: the clear's own sequence
			// state goes with its deletes).
			if err := s.commit(db, b, ents[i-1].Index); err != nil {
				return nil, err
			}
		}
		if r, ok := s.checkSeq(h, e.Index); !ok {
			e.Result = sm.Result{Value: r}
			continue
		}
		if h.kind == cmdHash {
			token, err := decodeHash(body)
			if err != nil {
				s.log.Error("rejecting raft entry", "index", e.Index, "err", err)
				e.Result = sm.Result{Value: resultRejected}
				continue
			}
			s.startHash(db, token, e.Index)
			e.Result = sm.Result{Value: resultApplied}
			continue
		}
		if h.kind == cmdClear {
			if err := s.applyClear(db, e.Index); err != nil {
				return nil, err
			}
			e.Result = sm.Result{Value: resultApplied}
			continue
		}
		if err := s.apply(b, h.kind, body); err != nil {
			// Deterministic on every replica: the entry is skipped.
			s.log.Error("rejecting raft entry", "index", e.Index, "err", err)
			e.Result = sm.Result{Value: resultRejected}
		} else {
			e.Result = sm.Result{Value: resultApplied}
		}
		if b.Size() >= applyChunkBytes && i < len(ents)-1 {
			if err := s.commit(db, b, e.Index); err != nil {
				return nil, err
			}
		}
	}
	// Also when a clear applied the last entry but earlier work of this
	// Update is still in b (proposers forgotten at a GC boundary).
	if last := ents[len(ents)-1].Index; last > s.applied || b.Len() > 0 || len(s.dirty) > 0 {
		if err := s.commit(db, b, last); err != nil {
			return nil, err
		}
	}
	return ents, nil
}

// checkSeq applies the seqState rules to a command from a proposer; ok says
// the command is to be applied (its seq is then consumed), otherwise r is
// the entry's result.
func (s *stateMachine) checkSeq(h cmdHeader, index uint64) (r uint64, ok bool) {
	if h.proposer == 0 {
		return 0, true
	}
	st := s.seqs[h.proposer]
	st.next = max(st.next, h.floor)
	st.last = index
	switch {
	case h.seq < st.next:
		r = resultDuplicate
	case h.seq > st.next:
		r = resultOutOfOrder
	default:
		st.next++
		ok = true
	}
	s.seqs[h.proposer] = st
	s.dirty[h.proposer] = struct{}{}
	return r, ok
}

// forgetProposers drops the state of proposers silent for a long time.
func (s *stateMachine) forgetProposers(b *lsm.Batch, index uint64) {
	for id, st := range s.seqs {
		if st.last+seqRetainEntries < index {
			delete(s.seqs, id)
			delete(s.dirty, id)
			b.Delete(seqKey(id))
		}
	}
}

// apply adds one entry's effects to b. On error nothing was added.
func (s *stateMachine) apply(b *lsm.Batch, kind byte, body []byte) error {
	switch kind {
	case cmdWrite:
		if err := s.part.SetRepr(body); err != nil {
			return fmt.Errorf("write command: %w", err)
		}
		return s.part.Each(func(del bool, key, value []byte) error {
			s.kbuf = userKey(s.kbuf[:0], key)
			if del {
				b.Delete(s.kbuf)
			} else {
				b.Put(s.kbuf, value)
			}
			return nil
		})
	case cmdMember:
		m, err := decodeMemberValue(body)
		if err != nil {
			return err
		}
		b.Put(memberKey(m.ID), body)
		s.membersChanged = true
		return nil
	case cmdForget:
		id, err := decodeForget(body)
		if err != nil {
			return err
		}
		b.Delete(memberKey(id))
		s.membersChanged = true
		return nil
	default:
		return fmt.Errorf("unknown command kind %d: %w", kind, errBadCommand)
	}
}

// commit writes b, the proposers' states changed since the last commit and
// the applied index, then empties b.
func (s *stateMachine) commit(db *lsm.DB, b *lsm.Batch, index uint64) error {
	if err := s.persist(db, b, index); err != nil {
		return err
	}
	return s.refreshMembers(db, index)
}

// persist writes b with the proposers' states and the applied index.
func (s *stateMachine) persist(db *lsm.DB, b *lsm.Batch, index uint64) error {
	for id := range s.dirty {
		b.Put(seqKey(id), s.seqs[id].encode())
	}
	b.Put(appliedKey, binary.BigEndian.AppendUint64(nil, index))
	if err := db.Write(b); err != nil {
		return fmt.Errorf("shard %d: apply entries up to %d: %w", s.shardID, index, err)
	}
	s.applied = index
	s.appliedIndex.Store(index)
	s.proposerKeys.Store(int64(len(s.seqs)))
	clear(s.dirty)
	b.Reset()
	return nil
}

// refreshMembers reloads the member cache when applied entries changed it.
func (s *stateMachine) refreshMembers(db *lsm.DB, index uint64) error {
	if s.membersChanged {
		s.membersChanged = false
		members, err := readMembers(db)
		if err != nil {
			return fmt.Errorf("shard %d: read members after entry %d: %w", s.shardID, index, err)
		}
		s.mu.Lock()
		s.members = members
		s.mu.Unlock()
	}
	return nil
}

// loadSeqs reads every proposer's state.
func loadSeqs(db *lsm.DB) (map[uint64]seqState, error) {
	upper := append([]byte(nil), seqKeyPrefix...)
	upper[len(upper)-1]++
	it := db.NewIterator(seqKeyPrefix, upper)
	seqs := make(map[uint64]seqState)
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != len(seqKeyPrefix)+8 {
			it.Close()
			return nil, fmt.Errorf("proposer key %q: %w", k, lsm.ErrCorruption)
		}
		st, err := decodeSeqState(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		seqs[binary.BigEndian.Uint64(k[len(seqKeyPrefix):])] = st
	}
	err := it.Err()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return seqs, err
}

// applyClear deletes every user key. The deletes go out in chunks; only the
// last carries the clear's index, and a replay after a crash in between just
// deletes what is left. Reads of user data wait meanwhile (clearMu), so
// that none sees the clear half done: it is one command. Health and key
// counts do not wait (a clear stalled on a full disk must not hang
// /healthz).
func (s *stateMachine) applyClear(db *lsm.DB, index uint64) error {
	s.clearMu.Lock()
	err := s.clearLocked(db, index)
	s.clearMu.Unlock()
	if err != nil {
		return err
	}
	return s.refreshMembers(db, index)
}

func (s *stateMachine) clearLocked(db *lsm.DB, index uint64) error {
	it := db.NewIterator([]byte{prefixUser}, userUpper)
	b := lsm.NewBatch()
	for ok := it.First(); ok; ok = it.Next() {
		b.Delete(it.Key())
		if b.Size() >= s.clearChunk {
			if err := db.Write(b); err != nil {
				it.Close()
				return fmt.Errorf("shard %d: clear: %w", s.shardID, err)
			}
			b.Reset()
		}
	}
	err := it.Err()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("shard %d: clear: %w", s.shardID, err)
	}
	return s.persist(db, b, index)
}

// Sync makes every applied entry durable: with the WAL off, that is a
// memtable flush.
func (s *stateMachine) Sync() error {
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("sync shard %d: %w", s.shardID, err)
	}
	return nil
}

// Lookup serves reads: *readBatch (gets and ranges queued by a reader),
// membersQuery and approxKeysQuery.
func (s *stateMachine) Lookup(q interface{}) (interface{}, error) {
	if _, ok := q.(*readBatch); ok {
		s.clearMu.RLock()
		defer s.clearMu.RUnlock()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.db == nil {
		return nil, errSMClosed
	}
	switch q := q.(type) {
	case *readBatch:
		for _, op := range q.ops {
			op.run(s.db)
		}
		return nil, nil
	case membersQuery:
		return slices.Clone(s.members), nil
	default:
		return nil, fmt.Errorf("cluster: unknown lookup %T", q)
	}
}

// approxKeys estimates the user keys of this replica: the lsm's estimate
// less the keys the state machine keeps for itself (the applied index, the
// member records and the proposer records).
func (s *stateMachine) approxKeys() int64 {
	m, _ := s.metrics()
	return m.ApproxKeys
}

// metrics returns the lsm's metrics with ApproxKeys as approxKeys counts
// them, and ok false (zero metrics) once the replica is closed.
func (s *stateMachine) metrics() (m lsm.Metrics, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.db == nil {
		return lsm.Metrics{}, false
	}
	m = s.db.Metrics()
	m.ApproxKeys = max(m.ApproxKeys-s.ownKeys(), 0)
	return m, true
}

// ownKeys is the number of keys the state machine keeps for itself: the
// applied index, the member records and the proposer records. s.mu is held.
func (s *stateMachine) ownKeys() int64 {
	return 1 + int64(len(s.members)) + s.proposerKeys.Load()
}

// health reports the lsm's Health.
func (s *stateMachine) health() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.db == nil {
		return nil
	}
	return s.db.Health()
}

// membersQuery asks Lookup for the member records.
type membersQuery struct{}

func readMembers(db *lsm.DB) ([]member, error) {
	upper := append([]byte(nil), memberKeyPrefix...)
	upper[len(upper)-1]++
	it := db.NewIterator(memberKeyPrefix, upper)
	var ms []member
	for ok := it.First(); ok; ok = it.Next() {
		m, err := decodeMemberValue(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		ms = append(ms, m)
	}
	err := it.Err()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return ms, err
}

// Close releases the lsm. Lookups after it get errSMClosed.
func (s *stateMachine) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.db == nil {
		s.closed = true
		return nil
	}
	s.closed = true
	err := s.db.Close()
	if err != nil {
		return fmt.Errorf("close shard %d: %w", s.shardID, err)
	}
	return nil
}

// readOp is one read a reader hands to Lookup; run fills in its result.
type readOp struct {
	// get
	key []byte
	val []byte
	// range
	isRange    bool
	start, end []byte
	limit      int
	maxBytes   int // past it, stop with store.ErrRangeTruncated; 0: no bound
	kvs        []store.KV

	err error
}

// readBatch is the Lookup query of one ReadIndex round.
type readBatch struct {
	ops []*readOp
}

func (op *readOp) run(db *lsm.DB) {
	if !op.isRange {
		k := userKey(make([]byte, 0, len(op.key)+1), op.key)
		op.val, op.err = db.Get(k)
		if errors.Is(op.err, lsm.ErrNotFound) {
			op.err = store.ErrNotFound
		}
		return
	}
	lower := userKey(make([]byte, 0, len(op.start)+1), op.start)
	upper := userUpper
	if len(op.end) > 0 {
		upper = userKey(make([]byte, 0, len(op.end)+1), op.end)
	}
	it := db.NewIterator(lower, upper)
	var kvs []store.KV
	size, maxBytes := 0, op.maxBytes
	if maxBytes <= 0 {
		maxBytes = math.MaxInt
	}
	for ok := it.First(); ok && len(kvs) < op.limit && size <= maxBytes; ok = it.Next() {
		k, v := it.Key(), it.Value()
		buf := make([]byte, len(k)-1+len(v))
		n := copy(buf, k[1:])
		copy(buf[n:], v)
		kvs = append(kvs, store.KV{Key: buf[:n:n], Value: buf[n:]})
		size += len(buf)
	}
	err := it.Err()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err == nil && size > maxBytes {
		err = store.ErrRangeTruncated
	}
	op.kvs, op.err = kvs, err
}

// errSnapshotFormat is wrapped by errors decoding a snapshot stream.
var errSnapshotFormat = errors.New("bad snapshot stream")

// snapshotCtx is what PrepareSnapshot hands to SaveSnapshot: an iterator
// opened at the snapshot point.
type snapshotCtx struct {
	it *lsm.Iterator
}

// PrepareSnapshot pins the current state: an lsm iterator is one consistent
// view, unaffected by later Updates.
func (s *stateMachine) PrepareSnapshot() (interface{}, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errSMClosed
	}
	return &snapshotCtx{it: s.db.NewIterator(nil, nil)}, nil
}

// SaveSnapshot streams the pinned view to w (format in snapshot.go).
func (s *stateMachine) SaveSnapshot(ctx interface{}, w io.Writer, stopc <-chan struct{}) error {
	sc, ok := ctx.(*snapshotCtx)
	if !ok {
		return fmt.Errorf("save snapshot: unexpected context %T", ctx)
	}
	defer sc.it.Close()
	return writeSnapshot(sc.it, w, stopc)
}

// RecoverFromSnapshot replaces the state with a snapshot streamed from
// another replica: it loads the stream into a fresh lsm directory, makes
// that durable, switches CURRENT to it, and only then swaps it in and
// deletes the old directory. The stream carries the applied-index key, so
// the recovered state reports the snapshot's index.
func (s *stateMachine) RecoverFromSnapshot(r io.Reader, stopc <-chan struct{}) error {
	name := nextDBDirName(s.current)
	path := s.fs.PathJoin(s.dir, name)
	if err := s.fs.RemoveAll(path); err != nil {
		return fmt.Errorf("recover shard %d: %w", s.shardID, err)
	}
	ndb, err := lsm.Open(path, s.opts)
	if err != nil {
		return fmt.Errorf("recover shard %d: %w", s.shardID, err)
	}
	fail := func(err error) error {
		ndb.Close()
		s.fs.RemoveAll(path)
		return err
	}
	if err := readSnapshot(r, ndb, stopc); err != nil {
		if errors.Is(err, sm.ErrSnapshotStopped) {
			return fail(err)
		}
		return fail(fmt.Errorf("recover shard %d: %w", s.shardID, err))
	}
	if err := ndb.Flush(); err != nil {
		return fail(fmt.Errorf("recover shard %d: %w", s.shardID, err))
	}
	applied, err := readApplied(ndb)
	if err != nil {
		return fail(fmt.Errorf("recover shard %d: %w", s.shardID, err))
	}
	seqs, err := loadSeqs(ndb)
	if err != nil {
		return fail(fmt.Errorf("recover shard %d: %w", s.shardID, err))
	}
	members, err := readMembers(ndb)
	if err != nil {
		return fail(fmt.Errorf("recover shard %d: %w", s.shardID, err))
	}
	if err := syncDir(s.fs, s.dir); err != nil {
		return fail(fmt.Errorf("recover shard %d: %w", s.shardID, err))
	}
	if err := writeCurrent(s.fs, s.dir, name); err != nil {
		return fail(fmt.Errorf("recover shard %d: %w", s.shardID, err))
	}
	s.mu.Lock()
	old, oldName := s.db, s.current
	s.db, s.current, s.members = ndb, name, members
	s.mu.Unlock()
	s.applied = applied
	s.appliedIndex.Store(applied)
	s.seqs = seqs
	s.proposerKeys.Store(int64(len(seqs)))
	clear(s.dirty)
	if old != nil {
		if err := old.Close(); err != nil {
			s.log.Warn("close replaced lsm", "dir", oldName, "err", err)
		}
		if err := s.fs.RemoveAll(s.fs.PathJoin(s.dir, oldName)); err != nil {
			s.log.Warn("remove replaced lsm", "dir", oldName, "err", err)
		}
	}
	s.log.Info("recovered from snapshot", "dir", name, "applied", applied)
	return nil
}
