package lsm

import (
	"errors"
	"fmt"
	"io"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm/record"
)

// walWriter is the WAL being appended to. Only the committer uses it.
//
// Each batch is one record (lsm/record framing) whose payload is the batch
// representation with its sequence number filled in. A new WAL starts with
// every memtable; a WAL is deleted once the flush of the memtables it holds
// is recorded in the manifest (their logNum falls below the manifest's).
type walWriter struct {
	num    uint64
	name   string
	f      vfs.File // syncing wrapper of raw
	raw    vfs.File
	w      *record.Writer
	dirty  bool // written since the last sync
	closed bool
}

// createWAL creates WAL number num and makes its directory entry durable,
// so that records synced into it survive a power loss.
func createWAL(fs vfs.FS, dir string, num uint64, reserve int64) (*walWriter, error) {
	name := fs.PathJoin(dir, makeFilename(fileTypeLog, num))
	f, err := fs.Create(name)
	if err != nil {
		return nil, fmt.Errorf("lsm: create WAL %s: %w", name, err)
	}
	// The blocks for the whole memtable's worth of records (its WAL is
	// smaller than it: records carry less than memtable entries) are
	// allocated now, so that a full disk is met here, where nothing has
	// been written and the writes that need the WAL are refused and the
	// creation retried, rather than by a WAL write, whose outcome is
	// unknown and which disables writes until a restart.
	if err := reserveBlocks(f, reserve); err != nil {
		f.Close()
		_ = fs.Remove(name)
		return nil, fmt.Errorf("lsm: create WAL %s: reserve %d bytes: %w", name, reserve, err)
	}
	if err := syncDir(fs, dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("lsm: create WAL %s: %w", name, err)
	}
	// Sync through fdatasync (the data and the size needed to read it back,
	// not timestamps), with blocks allocated ahead of the writes in 4 MiB
	// steps (fallocate with KEEP_SIZE: the file's size, which recovery
	// reads, only grows with the writes), so that a sync of an append
	// journals less; on file systems without a descriptor (tests) Sync is
	// the file's own.
	sf := vfs.NewSyncingFile(f, vfs.SyncingFileOptions{PreallocateSize: walPreallocateBytes})
	return &walWriter{num: num, name: name, f: sf, raw: f, w: record.NewWriter(sf, sf)}, nil
}

// walPreallocateBytes is the step in which WAL blocks are allocated ahead.
const walPreallocateBytes = 4 << 20

// write appends one record per batch and hands them to the OS with one
// write(2), followed by one fsync when sync is set. It returns the bytes
// appended.
func (w *walWriter) write(reqs []commitReq, sync bool) (int64, error) {
	before := w.w.Size()
	for _, r := range reqs {
		if err := w.w.Append(r.b.Repr()); err != nil {
			return w.w.Size() - before, fmt.Errorf("append to WAL %s: %w", w.name, err)
		}
	}
	var err error
	if sync {
		err = w.w.Sync()
		w.dirty = false
	} else {
		err = w.w.Flush()
		w.dirty = true
	}
	if err != nil {
		return w.w.Size() - before, fmt.Errorf("write WAL %s: %w", w.name, err)
	}
	return w.w.Size() - before, nil
}

func (w *walWriter) sync() error {
	if err := w.w.Sync(); err != nil {
		return fmt.Errorf("sync WAL %s: %w", w.name, err)
	}
	w.dirty = false
	return nil
}

// close syncs and closes the file. It is idempotent. The descriptor is
// closed even when the sync fails: the syncing wrapper's Close would return
// at its own failed sync and leave it open for good.
func (w *walWriter) close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.sync()
	if err != nil {
		w.raw.Close()
		return err
	}
	if cerr := w.f.Close(); cerr != nil {
		w.raw.Close() // no-op if the wrapper got that far
		err = fmt.Errorf("close WAL %s: %w", w.name, cerr)
	}
	return err
}

// replayWAL feeds every batch of WAL num to apply in order. A torn final
// record (what a crash during an append leaves) ends the log when last is
// set, with a warning: that record was never acknowledged. Anywhere else a
// damaged record is corruption: WALs are synced before the next one
// starts, so only the newest can be torn. It returns the offset where the
// intact records end (where the damage starts, after a corruption).
func (d *DB) replayWAL(num uint64, last bool, apply func(b *Batch) error) (int64, error) {
	fs := d.opts.FS
	name := fs.PathJoin(d.dirname, makeFilename(fileTypeLog, num))
	f, err := fs.Open(name)
	if err != nil {
		return 0, fmt.Errorf("lsm: open WAL %s: %w", name, err)
	}
	defer f.Close()
	r := record.NewReader(f)
	for {
		start := r.Offset()
		rec, err := r.Next()
		switch {
		case err == io.EOF:
			return r.Offset(), nil
		case errors.Is(err, record.ErrTornTail) && last:
			d.opts.Logger.Warn("lsm: WAL ends in a torn record; discarding it",
				"wal", name, "offset", r.Offset(), "err", err)
			return r.Offset(), nil
		case errors.Is(err, record.ErrTornTail):
			return r.Offset(), fmt.Errorf("lsm: replay WAL %s: damaged record at offset %d in a WAL that is not the newest: %v: %w",
				name, r.Offset(), err, ErrCorruption)
		case err != nil:
			return r.Offset(), fmt.Errorf("lsm: replay WAL %s: %w", name, err)
		}
		var b Batch
		if err := b.SetRepr(rec); err != nil {
			return start, fmt.Errorf("lsm: replay WAL %s: record at offset %d: %w", name, start, err)
		}
		if b.Len() == 0 {
			continue
		}
		if err := apply(&b); err != nil {
			return start, fmt.Errorf("lsm: replay WAL %s: %w", name, err)
		}
	}
}
