package lsm

import (
	"errors"
	"fmt"
	"io"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm/record"
)

// The manifest is the durable history of versions: a log (lsm/record
// framing) of version edits, the first one a snapshot of every live table.
// CURRENT names the live manifest.
//
// Invariants:
//   - An edit is synced before the version it produces is installed, and a
//     table or WAL is deleted only after a synced edit stops referencing it
//     (tables: when no version holds them; WALs: when the log number passes
//     them). So the files the manifest names always exist.
//   - Tables an edit adds are fsynced, and their directory entries too,
//     before the edit is written.
//   - Every edit records the next file number and the last sequence number,
//     so numbers are never reused and sequence numbers never go back, even
//     when the WAL is disabled.
//   - A new manifest (at Open, and when the current one outgrows
//     maxManifestBytes) is written and synced completely before CURRENT is
//     switched to it (temp file + fsync + rename + directory fsync); the old
//     one is deleted only after that.
//
// Writers of the manifest (flush, compaction, Open) serialise on
// d.manifestMu; the in-memory current version changes only under both
// d.manifestMu and d.mu, so holders of either may read it.

// manifestState is the recovered content of a manifest.
type manifestState struct {
	v           *version
	logNum      uint64
	nextFileNum uint64
	lastSeq     uint64
	// droppedTail says the manifest's last record was damaged and ignored.
	droppedTail bool
}

// loadManifest replays MANIFEST-num. A torn final record is an edit whose
// sync never returned (its effects were never relied on), so it is
// ignored; damage elsewhere is corruption.
func (d *DB) loadManifest(num uint64) (*manifestState, error) {
	fs := d.opts.FS
	name := fs.PathJoin(d.dirname, makeFilename(fileTypeManifest, num))
	f, err := fs.Open(name)
	if err != nil {
		return nil, fmt.Errorf("lsm: open manifest %s: %w", name, err)
	}
	defer f.Close()

	type placed struct {
		level int
		meta  *fileMetadata
	}
	files := make(map[uint64]placed)
	st := &manifestState{}
	r := record.NewReader(f)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, record.ErrTornTail) {
			d.opts.Logger.Warn("lsm: manifest ends in a torn record; ignoring it", "manifest", name, "err", err)
			st.droppedTail = true
			break
		}
		if err != nil {
			return nil, fmt.Errorf("lsm: read manifest %s: %w", name, err)
		}
		var e versionEdit
		if err := e.decode(rec); err != nil {
			return nil, fmt.Errorf("lsm: read manifest %s at offset %d: %w", name, r.Offset(), err)
		}
		if e.hasLogNum {
			st.logNum = e.logNum
		}
		if e.hasNextFileNum {
			st.nextFileNum = e.nextFileNum
		}
		if e.hasLastSeq {
			st.lastSeq = e.lastSeq
		}
		for _, del := range e.deleted {
			p, ok := files[del.fileNum]
			if !ok || p.level != del.level {
				return nil, fmt.Errorf("lsm: read manifest %s: edit deletes table %d from L%d, which does not hold it: %w",
					name, del.fileNum, del.level, ErrCorruption)
			}
			delete(files, del.fileNum)
		}
		for _, a := range e.added {
			files[a.meta.fileNum] = placed(a)
		}
	}
	snap := &versionEdit{}
	for _, p := range files {
		snap.added = append(snap.added, newFile(p))
		st.nextFileNum = max(st.nextFileNum, p.meta.fileNum+1)
		st.lastSeq = max(st.lastSeq, p.meta.largestSeq)
	}
	v, err := (&version{obsolete: d.markObsolete}).apply(snap)
	if err != nil {
		return nil, fmt.Errorf("lsm: read manifest %s: %w", name, err)
	}
	st.v = v
	return st, nil
}

// manifestWriter is the open manifest.
type manifestWriter struct {
	num          uint64
	f            vfs.File
	w            *record.Writer
	size         int64
	snapshotSize int64 // of the snapshot edit it starts with
}

// Beside maxManifestBytes, a manifest is rewritten once its edits outgrow
// its snapshot manifestGrowth times (and it is past minManifestRewrite):
// Open replays every edit, so a store with few tables but a long history
// of flushes and compactions spent 337 ms on a 64 MiB manifest where a
// fresh one took 20 ms.
const (
	manifestGrowth     = 16
	minManifestRewrite = 1 << 20
)

// full reports whether the manifest should be rewritten before the next
// edit.
func (m *manifestWriter) full(maxBytes int64) bool {
	return m.size >= maxBytes || (m.size >= minManifestRewrite && m.size >= manifestGrowth*m.snapshotSize)
}

func (m *manifestWriter) close() {
	if m != nil && m.f != nil {
		m.f.Close()
		m.f = nil
	}
}

// createManifest writes a new manifest holding a snapshot of v (plus the
// counters), syncs it, points CURRENT at it and closes and deletes the
// previous one. d.manifestMu must be held (or Open be running alone).
// On failure, unnamed reports that CURRENT certainly does not name the new
// manifest: nothing durable refers to v's new tables then.
func (d *DB) createManifest(v *version, logNum, lastSeq uint64) (unnamed bool, err error) {
	fs := d.opts.FS
	num := d.nextFileNum.Add(1) - 1
	tempNum := d.nextFileNum.Add(1) - 1
	m, err := writeSnapshotManifest(fs, d.dirname, num, v, logNum, d.nextFileNum.Load(), lastSeq)
	unnamed = err != nil
	if err == nil {
		if err = setCurrent(fs, d.dirname, num, tempNum); err != nil {
			m.close()
			// A failed rename leaves CURRENT on the old manifest.
			if cur, cerr := readCurrent(fs, d.dirname); cerr == nil && cur != num {
				unnamed = true
				fs.Remove(fs.PathJoin(d.dirname, makeFilename(fileTypeManifest, num)))
			}
		}
	}
	if err != nil {
		return unnamed, fmt.Errorf("lsm: write manifest: %w", err)
	}
	old := d.manifest
	d.manifest = m
	d.manifestLogNum = logNum
	var remove []uint64
	if old != nil {
		old.close()
		remove = append(remove, old.num)
	}
	// CURRENT names the new manifest, a snapshot of v: what failed edits
	// may have left on disk is named by no manifest any more.
	remove = append(remove, d.abandonedManifests...)
	d.abandonedManifests = nil
	for _, n := range remove {
		name := fs.PathJoin(d.dirname, makeFilename(fileTypeManifest, n))
		if err := fs.Remove(name); err != nil {
			d.opts.Logger.Warn("lsm: remove old manifest", "manifest", name, "err", err)
		}
	}
	for _, f := range d.unsettled {
		if f.refs.Add(-1) == 0 {
			d.markObsolete(f)
		}
	}
	d.unsettled = nil
	d.metrics.manifestRotations.Add(1)
	return false, nil
}

// writeSnapshotManifest creates MANIFEST-num in dir holding one edit that
// recreates v, syncs it and its directory entry, and returns it open for
// further edits.
func writeSnapshotManifest(fs vfs.FS, dir string, num uint64, v *version, logNum, nextFileNum, lastSeq uint64) (*manifestWriter, error) {
	name := fs.PathJoin(dir, makeFilename(fileTypeManifest, num))
	f, err := fs.Create(name)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	m := &manifestWriter{num: num, f: f, w: record.NewWriter(f, f)}
	e := v.snapshotEdit()
	e.setLogNum(logNum)
	e.setNextFileNum(nextFileNum)
	e.setLastSeq(lastSeq)
	err = m.w.Append(e.encode(nil))
	if err == nil {
		err = m.w.Sync()
	}
	if err == nil {
		err = syncDir(fs, dir)
	}
	if err != nil {
		m.close()
		fs.Remove(name)
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	m.size = m.w.Size()
	m.snapshotSize = m.size
	return m, nil
}

// logAndApply makes edit durable in the manifest and installs the version
// it produces, calling install (under d.mu) so that the caller's in-memory
// changes (for a flush: dropping the memtable) are published in the same
// read state. The previous version loses the version set's reference.
func (d *DB) logAndApply(e *versionEdit, install func()) error {
	d.manifestMu.Lock()
	defer d.manifestMu.Unlock()
	if d.closedManifest {
		return ErrClosed
	}
	cur := d.current // stable: only changed under manifestMu
	nv, err := cur.apply(e)
	if err != nil {
		return err
	}
	logNum := d.manifestLogNum
	if e.hasLogNum {
		logNum = max(logNum, e.logNum)
	}
	lastSeq := max(d.visibleSeq.Load(), d.manifestLastSeq)
	unnamed := false
	if d.manifest == nil || d.manifest.full(d.opts.maxManifestBytes) {
		unnamed, err = d.createManifest(nv, logNum, lastSeq)
	} else {
		e.setLogNum(logNum)
		e.setNextFileNum(d.nextFileNum.Load())
		e.setLastSeq(lastSeq)
		if err = d.manifest.w.Append(e.encode(nil)); err == nil {
			err = d.manifest.w.Sync()
		}
		if err != nil {
			// The manifest's tail is unknown now; the next edit starts a
			// fresh manifest from a snapshot.
			d.opts.Logger.Error("lsm: manifest write failed; will rewrite it", "err", err)
			d.manifest.close()
			// Still CURRENT: removed once a new manifest is (createManifest).
			d.abandonedManifests = append(d.abandonedManifests, d.manifest.num)
			d.manifest = nil
			err = fmt.Errorf("lsm: write manifest: %w", err)
		} else {
			d.manifest.size = d.manifest.w.Size()
		}
	}
	if err != nil {
		// The edit may have reached the disk even though the write or sync
		// reported failure, so the tables it adds must not be deleted until
		// a manifest that does not name them is CURRENT (createManifest
		// settles them), unless CURRENT certainly does not name the edit's
		// manifest: then nothing durable refers to them, and they go now.
		if !unnamed {
			for _, a := range e.added {
				a.meta.refs.Add(1)
				d.unsettled = append(d.unsettled, a.meta)
			}
		}
		nv.unref()
		return err
	}
	d.manifestLogNum = logNum
	d.manifestLastSeq = lastSeq

	d.mu.Lock()
	d.current = nv
	if install != nil {
		install()
	}
	d.publishReadStateLocked()
	d.cond.Broadcast()
	d.mu.Unlock()
	cur.unref()
	return nil
}
