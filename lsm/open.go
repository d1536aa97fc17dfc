package lsm

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/lsm/memtable"
	"github.com/kvstore/kv/lsm/sstable"
)

// Open opens the DB in dirname, creating it if needed (zero Options select
// the defaults). Recovery replays the manifest CURRENT names, then every
// WAL from the manifest's log number on; replayed writes are flushed to L0
// and recorded in a fresh manifest before the old WALs are removed, so a
// crash during or right after Open never finds a torn WAL followed by one
// with records. A torn final record of the newest WAL with records is
// dropped with a warning; damage anywhere else is reported as an error
// wrapping ErrCorruption. On a full disk (or quota) the flush is left to
// the background: the DB opens serving reads from the replayed WALs and
// refusing writes until it succeeds (see finishRecovery).
func Open(dirname string, opts Options) (*DB, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if !opts.ReadOnly {
		if err := ensureDir(opts.FS, dirname); err != nil {
			return nil, err
		}
	}
	lock, err := lockDir(opts.FS, dirname)
	if err != nil {
		return nil, err
	}
	if err := checkFormat(opts.FS, dirname, opts.ReadOnly); err != nil {
		if !isNoSpace(err) {
			lock.release()
			return nil, err
		}
		// Only a directory without FORMAT gets one: it is of format 1,
		// this one, with or without the file, and a later Open writes it.
		opts.Logger.Warn("lsm: no room to write FORMAT; opening without it", "dir", dirname, "err", err)
	}
	d := &DB{
		dirname:   dirname,
		opts:      opts,
		lock:      lock,
		flushCh:   make(chan struct{}, 1),
		compactCh: make(chan struct{}, 1),
		closeCh:   make(chan struct{}),
	}
	d.cond.L = &d.mu
	d.stallLog.Every = stallLogEvery
	d.snapshots.next, d.snapshots.prev = &d.snapshots, &d.snapshots
	d.commit.wake = make(chan struct{}, 1)
	if opts.Cache != nil {
		d.cache = opts.Cache
	} else {
		c, err := cache.New(opts.BlockCacheBytes)
		if err != nil {
			lock.release()
			return nil, fmt.Errorf("lsm: open %s: %w", dirname, err)
		}
		d.cache, d.ownCache = c, true
	}
	files := opts.TableFiles
	if files == nil {
		files = sstable.NewFileCache(opts.MaxOpenTables)
	}
	d.tc = tableCache{fs: opts.FS, dir: dirname, cache: d.cache, cacheID: d.cache.NewID(), files: files, open: make(map[uint64]*fileMetadata)}

	if err := d.recover(); err != nil {
		d.abandon()
		return nil, err
	}
	if !opts.ReadOnly {
		d.wg.Add(3)
		go d.commitLoop()
		go d.flushLoop()
		go d.compactLoop()
		d.maybeScheduleCompaction()
	}
	return d, nil
}

// ensureDir creates the DB directory if it is missing and makes its entry,
// and those of the directories above it, durable. It syncs them even when
// the directory exists: a crash between a previous run's mkdir and its
// sync leaves a directory that is there now and gone after a power loss,
// with everything acknowledged in it since. Only the sync of the parent of
// a directory created now must work; the others are best effort (a
// process may lack read access to a directory it only traverses, and one
// it could not read it did not create).
func ensureDir(fs vfs.FS, dir string) error {
	_, statErr := fs.Stat(dir)
	created := statErr != nil
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lsm: create %s: %w", dir, err)
	}
	parent := fs.PathDir(dir)
	if err := syncDir(fs, parent); err != nil && created {
		// An in-memory FS names its root "", not ".".
		if parent != "." || syncDir(fs, "") != nil {
			return fmt.Errorf("lsm: create %s: %w", dir, err)
		}
	}
	for p := parent; ; {
		up := fs.PathDir(p)
		if up == p || p == "." || p == "" {
			return nil
		}
		_ = syncDir(fs, up)
		p = up
	}
}

// abandon releases what a failed Open acquired.
func (d *DB) abandon() {
	close(d.closeCh)
	d.prefaults.Wait()
	if d.wal != nil {
		d.wal.close()
	}
	d.manifest.close()
	d.tc.closeAll()
	if d.ownCache {
		d.cache.Close()
	}
	d.lock.release()
}

// dirContents is what recovery finds in the directory.
type dirContents struct {
	logs   []uint64
	tables map[uint64]bool
	names  []string
	maxNum uint64
}

func listDir(fs vfs.FS, dir string) (dirContents, error) {
	names, err := fs.List(dir)
	if err != nil {
		return dirContents{}, fmt.Errorf("lsm: open %s: list: %w", dir, err)
	}
	c := dirContents{tables: make(map[uint64]bool), names: names}
	for _, name := range names {
		t, num, ok := parseFilename(name)
		if !ok {
			continue
		}
		c.maxNum = max(c.maxNum, num)
		switch t {
		case fileTypeLog:
			c.logs = append(c.logs, num)
		case fileTypeTable:
			c.tables[num] = true
		}
	}
	slices.Sort(c.logs)
	return c, nil
}

// recover rebuilds the DB state from the directory; see Open.
func (d *DB) recover() error {
	fs := d.opts.FS
	dir, err := listDir(fs, d.dirname)
	if err != nil {
		return err
	}
	var st *manifestState
	manifestNum, err := readCurrent(fs, d.dirname)
	switch {
	case err == nil:
		if st, err = d.loadManifest(manifestNum); err != nil {
			return err
		}
		for _, files := range st.v.levels {
			for _, f := range files {
				if !dir.tables[f.fileNum] {
					st.v.unref()
					return fmt.Errorf("lsm: open %s: table %s named by the manifest is missing: %w",
						d.dirname, makeFilename(fileTypeTable, f.fileNum), ErrCorruption)
				}
				d.checkTableSize(f)
			}
		}
		if err := checkRestoredCheckpoint(fs, d.dirname, manifestNum, st, dir); err != nil {
			st.v.unref()
			return err
		}
		if err := checkWALsFrom(d.dirname, manifestNum, st, dir.logs); err != nil {
			st.v.unref()
			return err
		}
		if err := d.checkStartWAL(manifestNum, st, dir.logs); err != nil {
			st.v.unref()
			return err
		}
	case errors.Is(err, os.ErrNotExist):
		// An empty WAL is what a crash of a new DB's first Open leaves
		// before CURRENT: nothing was written to it.
		logs := slices.DeleteFunc(slices.Clone(dir.logs), func(n uint64) bool { return walEmpty(fs, d.dirname, n) })
		if len(logs) > 0 || len(dir.tables) > 0 {
			hint := "restore from a backup"
			var newest uint64
			for _, name := range dir.names {
				if t, num, ok := parseFilename(name); ok && t == fileTypeManifest {
					newest = max(newest, num)
				}
			}
			if newest > 0 {
				// CURRENT names the newest manifest but after a crash in
				// the middle of replacing it (older ones are removed once
				// it has moved), so that is the likely one.
				hint = fmt.Sprintf("if it was removed by hand, recreate it: echo %s > %s",
					makeFilename(fileTypeManifest, newest), d.opts.FS.PathJoin(d.dirname, currentName))
			}
			return fmt.Errorf("lsm: open %s: CURRENT is missing but the directory holds WAL or table files (%s): %w",
				d.dirname, hint, ErrCorruption)
		}
		if d.opts.ReadOnly {
			return fmt.Errorf("lsm: open %s read-only: no database: %w", d.dirname, err)
		}
		st = &manifestState{v: &version{obsolete: d.markObsolete}}
		st.v.refs.Store(1)
	default:
		return fmt.Errorf("lsm: open %s: %w", d.dirname, err)
	}
	d.current = st.v
	d.nextFileNum.Store(max(st.nextFileNum, dir.maxNum+1, 1))
	d.manifestLogNum = st.logNum
	lastSeq := st.lastSeq

	mems, lastSeq, err := d.replayWALs(dir.logs, st.logNum, lastSeq)
	if err != nil {
		return err
	}
	d.logSeq = lastSeq
	d.visibleSeq.Store(lastSeq)
	d.manifestLastSeq = lastSeq

	if d.opts.ReadOnly {
		for _, m := range mems {
			d.nextMemID++
			m.id = d.nextMemID
		}
		d.imm = mems
		d.nextMemID++
		d.mem = newMemTable(d.nextMemID, minMemtableBytes, 0)
		d.publishReadStateLocked()
		return nil
	}

	// Tables no manifest names (left by a crash mid-flush or mid-compaction,
	// or by an earlier Open that failed, a full disk say) go before the
	// replayed memtables are written: their data is in the WALs or in
	// other tables, and on a full disk their room may be what this Open
	// needs.
	live := make(map[uint64]bool)
	for _, files := range d.current.levels {
		for _, f := range files {
			live[f.fileNum] = true
		}
	}
	names := dir.names[:0:0]
	for _, name := range dir.names {
		if t, num, ok := parseFilename(name); ok && t == fileTypeTable && !live[num] {
			d.removeTable(num)
			continue
		}
		names = append(names, name)
	}
	dir.names = names

	// Replayed writes go to L0 now, so the old WALs can go. Until then
	// the replayed memtables are the DB's immutable memtables, their WALs
	// its log, and the manifest the one CURRENT names: the state a full
	// disk leaves the DB in (recovering), serving reads.
	for _, m := range mems {
		d.nextMemID++
		m.id = d.nextMemID
	}
	d.imm = mems
	for _, n := range dir.logs {
		if n >= st.logNum {
			d.walNums = append(d.walNums, n)
		}
	}
	// Those go with deleteObsoleteWALs, once a manifest retires them;
	// removeUnreferenced deletes the WALs the old manifest already had.
	dir.names = slices.DeleteFunc(dir.names, func(name string) bool {
		t, num, ok := parseFilename(name)
		return ok && t == fileTypeLog && num >= st.logNum
	})
	d.nextMemID++
	d.mem = newMemTable(d.nextMemID, minMemtableBytes, 0)
	d.recovering = true
	if !d.opts.DisableWAL {
		// Closed: a write retries the rotation, which refuses it while
		// recovering.
		d.wal = &walWriter{closed: true}
	}
	clean, err := d.finishRecovery()
	if err != nil {
		if !clean || !isNoSpace(err) || d.opts.DisableWAL || len(d.damagedWALs) > 0 {
			// DisableWAL: no log of our own to serve from, and the caller's
			// writes cannot be refused. Damaged WALs: the next start must
			// find them set aside with the manifest that drops them, not
			// replay them again. Not clean: CURRENT may name the new
			// manifest now, and the old state is no longer the DB's.
			return fmt.Errorf("lsm: open %s: %w", d.dirname, err)
		}
		// A full disk must not keep the DB from serving what it holds:
		// open as the running engine is when its flushes fail (reads go
		// on, writes are refused definitely), and let the flush goroutine
		// retry (flushLoop).
		d.opts.Logger.Error("lsm: no room to flush the replayed WALs; serving reads and refusing writes until a retry succeeds",
			"dir", d.dirname, "err", err, "memtables", len(mems))
		d.flushFailing, d.flushErr, d.flushFailures = err, err, 1
		if manifestNum != 0 {
			// Still CURRENT: removed once a new manifest is (createManifest).
			d.abandonedManifests = append(d.abandonedManifests, manifestNum)
		}
		d.publishReadStateLocked()
		d.removeUnreferenced(dir.names, st.logNum, manifestNum)
		return nil
	}
	d.removeUnreferenced(dir.names, d.manifestLogNum, d.manifest.num)
	return nil
}

// finishRecovery writes the memtables Open replayed (d.imm, while
// d.recovering) to L0 tables, creates the WAL the DB goes on with and
// records both in a new manifest, which retires the replayed WALs; then it
// installs the new state and deletes those WALs. Open calls it, and when
// Open met a full disk the flush goroutine retries it (no write is taken
// meanwhile: the memtables are exactly those replayed).
//
// Order matters for crashes: the new WAL exists before the manifest that
// starts from it (a crash in between leaves an empty WAL after the
// replayed ones, read as nothing: see replayWALs), and the old WALs go
// after the manifest switch. When the new WAL cannot reserve its blocks (a
// full disk), it is created without, so that the manifest can start from
// it; if the reservation still fails once the old WALs (and their
// reservations) are gone, it is closed unwritten and writes are refused,
// definitely, until a rotation creates one that can (rotateMemtable,
// retried by the committer), rather than meeting the full disk in a WAL
// write, which would disable them until a restart.
//
// On failure the tables and the WAL it made are removed and clean is true,
// unless a manifest naming them may be CURRENT (a failed CURRENT switch
// whose outcome is unknown): then they are kept until a later manifest
// settles them, as after a failed manifest edit (logAndApply).
func (d *DB) finishRecovery() (clean bool, err error) {
	d.mu.Lock()
	mems := slices.Clone(d.imm)
	d.mu.Unlock()
	snapshots := d.snapshotSeqs()
	e := &versionEdit{}
	removeTables := func() {
		for _, nf := range e.added {
			d.removeTable(nf.meta.fileNum)
		}
	}
	for _, m := range mems {
		iter := m.t.NewFlushIter(snapshots[0])
		meta, err := d.writeL0(&compactionIter{iter: iter, snapshots: snapshots})
		if cerr := iter.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			// Named by no manifest: they would only take the room the
			// next attempt needs.
			removeTables()
			return true, fmt.Errorf("flush replayed WAL: %w", err)
		}
		if meta != nil {
			e.added = append(e.added, newFile{level: 0, meta: meta})
		}
	}
	if err := d.keepDamagedWALs(); err != nil {
		removeTables()
		return true, err
	}
	fs := d.opts.FS
	logNum := d.nextFileNum.Add(1) - 1
	var wal *walWriter
	var reserveErr error
	if !d.opts.DisableWAL {
		wal, err = createWAL(fs, d.dirname, logNum, d.memtableBytes(0))
		if isNoSpace(err) {
			reserveErr = fmt.Errorf("%w: %w", errWALCreateFailing, err)
			wal, err = createWAL(fs, d.dirname, logNum, 0)
		}
		if err != nil {
			fs.Remove(fs.PathJoin(d.dirname, makeFilename(fileTypeLog, logNum)))
			removeTables()
			return true, err
		}
	}

	// The committer's state (the WAL, the mutable memtable) changes below;
	// active before manifestMu, as everywhere.
	d.commit.active.Lock()
	defer d.commit.active.Unlock()
	d.manifestMu.Lock()
	cur := d.current
	// As logAndApply: no write is taken while recovering, so this is the
	// last replayed sequence number.
	lastSeq := max(d.visibleSeq.Load(), d.manifestLastSeq)
	nv, err := cur.apply(e)
	if err == nil {
		var unnamed bool
		if unnamed, err = d.createManifest(nv, logNum, lastSeq); err != nil {
			if !unnamed {
				for _, a := range e.added {
					a.meta.refs.Add(1)
					d.unsettled = append(d.unsettled, a.meta)
				}
			}
			nv.unref()
			clean = unnamed
		}
	} else {
		clean = true
	}
	if err != nil {
		d.manifestMu.Unlock()
		if wal != nil {
			wal.close()
			if clean {
				fs.Remove(wal.name)
			} else {
				d.mu.Lock()
				d.walNums = append(d.walNums, logNum)
				d.mu.Unlock()
			}
		}
		if clean {
			// nv held the only references: they are queued as obsolete.
			d.deleteObsoleteTables()
		}
		return clean, err
	}
	d.manifestLastSeq = lastSeq

	d.mu.Lock()
	d.current = nv
	if len(mems) > 0 {
		last := mems[len(mems)-1].id
		d.flushedMemID = last
		d.flushPins = slices.DeleteFunc(d.flushPins, func(p *flushPin) bool {
			if p.memID > last {
				return false
			}
			nv.ref()
			p.v = nv
			return true
		})
	}
	d.imm = nil
	d.recovering = false
	d.nextMemID++
	d.mem = newMemTable(d.nextMemID, d.memtableBytes(0), 0)
	first := d.mem.t
	d.goPrefaultLocked(func() { first.Prefault(d.closeCh) })
	if wal != nil {
		d.mem.logNum = logNum
		d.wal = wal
		d.walNums = append(d.walNums, logNum)
	}
	d.publishReadStateLocked()
	d.cond.Broadcast()
	d.mu.Unlock()
	d.manifestMu.Unlock()
	cur.unref()
	for _, a := range e.added {
		d.metrics.flushes.Add(1)
		d.metrics.flushBytes.Add(a.meta.size)
	}
	d.deleteObsoleteWALs(logNum)
	if reserveErr != nil {
		// The replayed WALs' blocks (each reserved a memtable's worth) are
		// free now, which may be room enough.
		if err := reserveBlocks(wal.raw, d.memtableBytes(0)); err == nil {
			return true, nil
		}
		// Still active: no write has reached the WAL.
		if err := wal.close(); err != nil {
			d.opts.Logger.Warn("lsm: close unreserved WAL", "wal", wal.name, "err", err)
		}
		d.opts.Logger.Error("lsm: cannot create the next WAL; refusing writes until it can", "err", reserveErr)
		d.mu.Lock()
		d.walCreateFailing = reserveErr
		d.mu.Unlock()
	}
	return true, nil
}

// checkWALsFrom checks that the WAL the manifest's state starts from is
// present when a later one is. A WAL is deleted only once a synced
// manifest edit has moved logNum past it, so it can be missing only if it
// was deleted by hand or if that edit was lost: damaged at rest and dropped
// as a torn last record, although it had been synced and relied on. Either
// way acknowledged writes are gone (the WAL's, or the table the dropped
// edit added), and opening would hide it and delete that table as
// unreferenced. A DB without WALs (DisableWAL) has nothing to check.
func checkWALsFrom(dirname string, manifestNum uint64, st *manifestState, logs []uint64) error {
	if st.logNum == 0 || len(logs) == 0 || logs[len(logs)-1] <= st.logNum || slices.Contains(logs, st.logNum) {
		return nil
	}
	why := "deleted from the directory"
	if st.droppedTail {
		why = "deleted after an edit the manifest's damaged last record held (damage at rest, not a torn write)"
	}
	return fmt.Errorf("lsm: open %s: WAL %s, where %s starts, is missing while later WALs exist: it was %s, and writes it or that edit held are lost; restore from a backup: %w",
		dirname, makeFilename(fileTypeLog, st.logNum), makeFilename(fileTypeManifest, manifestNum), why, ErrCorruption)
}

// checkTableSize records a table whose file is not the size the manifest
// says as damaged (truncated, or replaced, since it was written): /healthz
// and the log show it from the start, not from the first read that reaches
// it (a restored backup with a truncated table started "healthy"). Reads
// of it fail as reads of any damaged table do; the rest of the DB serves.
func (d *DB) checkTableSize(f *fileMetadata) {
	name := d.opts.FS.PathJoin(d.dirname, makeFilename(fileTypeTable, f.fileNum))
	fi, err := d.opts.FS.Stat(name)
	if err != nil || fi.Size() == int64(f.size) {
		return // a table that cannot be read says so when it is
	}
	d.noteDamage(&sstable.CorruptionError{Name: name, FileNum: f.fileNum, Offset: uint64(min(fi.Size(), int64(f.size))),
		Detail: fmt.Sprintf("file is %d bytes, the manifest says %d", fi.Size(), f.size)}, "open", nil)
}

// checkStartWAL refuses a DB whose manifest starts from a WAL that is
// missing when no later one exists (checkWALsFrom covers the other case):
// Open creates a WAL before the manifest that starts from it, and a WAL
// is deleted only after a manifest has moved past it, so the WAL was
// deleted by hand (a "*.log" file, to an operator cleaning logs), and
// every write acknowledged since the last flush went with it. Opening
// started empty of them, silently. A checkpoint's manifest starts from a
// WAL that never existed (its log number is its own number), and a DB
// without a WAL has none; RecoverDamagedWAL opens anyway, without them,
// as it opens without the writes after damage. (A DB left by an earlier
// version that crashed between writing its manifest and creating its WAL
// lost nothing, and needs RecoverDamagedWAL once.)
func (d *DB) checkStartWAL(manifestNum uint64, st *manifestState, logs []uint64) error {
	if st.logNum == 0 || st.logNum == manifestNum || d.opts.DisableWAL || slices.Contains(logs, st.logNum) ||
		(len(logs) > 0 && logs[len(logs)-1] > st.logNum) {
		return nil
	}
	name := makeFilename(fileTypeLog, st.logNum)
	if d.opts.RecoverDamagedWAL || d.opts.ReadOnly {
		d.opts.Logger.Warn("lsm: opening without the missing WAL: writes acknowledged since the last flush are lost", "dir", d.dirname, "wal", name)
		return nil
	}
	return fmt.Errorf("lsm: open %s: WAL %s, where %s starts, is missing: the writes acknowledged since the last flush were in it, and opening would drop them silently; put it back, or open without them: %w: %w",
		d.dirname, name, makeFilename(fileTypeManifest, manifestNum), ErrDamagedWAL, ErrCorruption)
}

// checkRestoredCheckpoint refuses a checkpoint (a backup) that was
// extracted into a directory that already held a DB. A checkpoint's
// manifest, until its first Open replaces it, is the only one whose log
// number is its own file number (Checkpoint: "the copy has no WAL to
// replay"), and its directory holds no WAL and no table the manifest does
// not name: Open itself makes neither before CURRENT names a new manifest.
// Either one therefore belongs to the DB the archive was extracted over.
// Opening would replay that DB's WALs numbered above the checkpoint's on
// top of the backup (or, as it did, refuse with a message about a WAL
// "deleted from the directory"), and silently delete that DB's other
// tables and WALs: neither the backup nor the data it was extracted over.
func checkRestoredCheckpoint(fs vfs.FS, dirname string, manifestNum uint64, st *manifestState, dir dirContents) error {
	if st.logNum != manifestNum {
		return nil
	}
	named := make(map[uint64]bool)
	for _, files := range st.v.levels {
		for _, f := range files {
			named[f.fileNum] = true
		}
	}
	var foreign []string
	for _, n := range dir.logs {
		// Its first Open creates its WAL, numbered from the checkpoint's
		// next file number, before the manifest that replaces it: after
		// a crash in between that WAL is here, empty.
		if n >= st.nextFileNum && walEmpty(fs, dirname, n) {
			continue
		}
		foreign = append(foreign, makeFilename(fileTypeLog, n))
	}
	for n := range dir.tables {
		if !named[n] {
			foreign = append(foreign, makeFilename(fileTypeTable, n))
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	slices.Sort(foreign)
	if len(foreign) > 5 {
		foreign = append(foreign[:5], fmt.Sprintf("and %d more", len(foreign)-5))
	}
	return fmt.Errorf("lsm: open %s: %s is an unopened backup (checkpoint), but the directory also holds files of another database (%s): the backup was extracted into a non-empty directory; extract it into an empty one (nothing was changed here)",
		dirname, makeFilename(fileTypeManifest, manifestNum), strings.Join(foreign, ", "))
}

// walEmpty reports whether WAL num in dirname holds nothing (a reserved
// WAL's blocks are not counted in its size).
func walEmpty(fs vfs.FS, dirname string, num uint64) bool {
	fi, err := fs.Stat(fs.PathJoin(dirname, makeFilename(fileTypeLog, num)))
	return err == nil && fi.Size() == 0
}

// replayWALs replays the WALs numbered from minLog on, in order, into
// memtables (several if they do not fit one) and returns them with the
// highest sequence number seen.
func (d *DB) replayWALs(logs []uint64, minLog, lastSeq uint64) ([]*memTable, uint64, error) {
	var mems []*memTable
	var mem *memTable
	var replay []uint64
	for _, n := range logs {
		if n >= minLog {
			replay = append(replay, n)
		}
	}
	// A torn tail is allowed in the newest WAL with anything in it: the
	// WALs after it, empty, are what a crash leaves between an Open's
	// creation of its WAL and the manifest that retires the replayed ones
	// (finishRecovery), which no write reached.
	lastWithData := 0
	for i, num := range replay {
		if !walEmpty(d.opts.FS, d.dirname, num) {
			lastWithData = i
		}
	}
	for i, num := range replay {
		// Size memtables by the log (entries take more room in a memtable
		// than in the WAL), without allocating a full-size arena for a
		// short log.
		size := d.opts.MemtableBytes
		if fi, err := d.opts.FS.Stat(d.opts.FS.PathJoin(d.dirname, makeFilename(fileTypeLog, num))); err == nil {
			size = min(size, max(minMemtableBytes, 4*fi.Size()))
		}
		end, err := d.replayWAL(num, i >= lastWithData, func(b *Batch) error {
			done := 0
			for {
				if mem == nil {
					mem = newMemTable(0, max(size, batchMaxMemBytes(b)+minMemtableBytes), num)
				}
				n, err := mem.apply(b, done)
				if err == nil {
					break
				}
				if !errors.Is(err, memtable.ErrFull) || n == done && mem.empty() {
					return err
				}
				done = n
				mems = append(mems, mem)
				mem = nil
			}
			lastSeq = max(lastSeq, b.seq()+uint64(b.Len())-1)
			return nil
		})
		if err != nil && errors.Is(err, ErrCorruption) && d.opts.RecoverDamagedWAL && !d.opts.ReadOnly {
			d.damagedWALs = replay[i:]
			d.opts.Logger.Error("lsm: recovering from a damaged WAL: keeping the writes before the damage, dropping the rest",
				"err", err, "kept_bytes", end, "dropped_wals", len(replay)-i)
			break
		}
		if err != nil {
			if errors.Is(err, ErrCorruption) {
				err = fmt.Errorf("%w: %w", ErrDamagedWAL, err)
			}
			return nil, 0, err
		}
	}
	if mem != nil {
		mems = append(mems, mem)
	}
	return mems, lastSeq, nil
}

// keepDamagedWALs hard-links each WAL a recovery dropped (RecoverDamagedWAL)
// as NAME.corrupt before the new manifest makes the writes kept from them
// durable in tables; the manifest switch then lets removeUnreferenced
// delete the NAME links with the other old WALs. Linking first means no
// crash can leave a state in which the next start deletes a dropped WAL
// that was never set aside. A NAME.corrupt that exists already is an
// earlier link of the same WAL (WAL numbers are never reused), from a
// recovery interrupted after linking.
func (d *DB) keepDamagedWALs() error {
	if len(d.damagedWALs) == 0 {
		return nil
	}
	fs := d.opts.FS
	for _, num := range d.damagedWALs {
		name := fs.PathJoin(d.dirname, makeFilename(fileTypeLog, num))
		if _, err := fs.Stat(name + ".corrupt"); err == nil {
			continue
		}
		if err := fs.Link(name, name+".corrupt"); err != nil {
			return fmt.Errorf("lsm: keep damaged WAL %s: %w", name, err)
		}
		d.opts.Logger.Warn("lsm: damaged WAL kept for inspection", "file", name+".corrupt")
	}
	return syncDir(fs, d.dirname)
}

// removeUnreferenced deletes what recovery left behind: WALs older than
// logNum, manifests other than manifestNum (CURRENT's), tables no version
// names, temporary files, and checkpoints of interrupted backups.
func (d *DB) removeUnreferenced(names []string, logNum, manifestNum uint64) {
	live := make(map[uint64]bool)
	for _, files := range d.current.levels {
		for _, f := range files {
			live[f.fileNum] = true
		}
	}
	fs := d.opts.FS
	for _, name := range names {
		if strings.HasPrefix(name, backupDirPrefix) {
			if err := fs.RemoveAll(fs.PathJoin(d.dirname, name)); err != nil {
				d.opts.Logger.Warn("lsm: remove leftover backup checkpoint", "dir", name, "err", err)
			}
			continue
		}
		t, num, ok := parseFilename(name)
		if !ok {
			continue
		}
		var remove bool
		switch t {
		case fileTypeLog:
			remove = num < logNum
		case fileTypeManifest:
			remove = num != manifestNum
		case fileTypeTable:
			remove = !live[num]
		case fileTypeTemp:
			remove = true
		}
		if remove {
			if err := fs.Remove(fs.PathJoin(d.dirname, name)); err != nil {
				d.opts.Logger.Warn("lsm: remove leftover file", "file", name, "err", err)
			}
		}
	}
}
