package lsm

import (
	"fmt"
	"slices"

	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/kvstore/kv/lsm/sstable"
)

// Flush makes every write acknowledged before the call durable in tables:
// it rotates the mutable memtable (in commit order) and waits until it and
// all older memtables are written as L0 tables and recorded in the
// manifest. With DisableWAL this is the only way writes become durable.
func (d *DB) Flush() error {
	_, err := d.flush(false)
	return err
}

// flush is Flush; with pin it also returns the version holding exactly
// the batches committed before the call (see flushTicket.pin), referenced.
func (d *DB) flush(pin bool) (*version, error) {
	if d.opts.ReadOnly {
		return nil, ErrReadOnly
	}
	ch := make(chan flushTicket, 1)
	if !d.commit.enqueue(commitReq{flush: ch, pin: pin}) {
		return nil, ErrClosed
	}
	t := <-ch
	if t.err != nil {
		return nil, t.err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.pin != nil && t.pin.v != nil {
		return t.pin.v, nil
	}
	if t.memID == 0 && !d.recovering {
		return nil, nil
	}
	// A flush waiting out a retry wait tries again now, so that this
	// caller learns whether the disk has room again without waiting up to
	// a minute for the next attempt. While Open's recovery is unfinished
	// (recovering), that is what the caller waits for, replayed memtables
	// or not: no write goes through before it.
	d.scheduleFlushLocked()
	failures := d.flushFailures
	for d.flushedMemID < t.memID || d.recovering {
		var err error
		switch {
		case d.closing:
			err = ErrClosed
		case d.flushFailures != failures:
			err = d.flushErr
		}
		if err != nil {
			if t.pin != nil {
				d.dropFlushPinLocked(t.pin)
			}
			return nil, err
		}
		d.cond.Wait()
	}
	if t.pin == nil {
		return nil, nil
	}
	return t.pin.v, nil
}

// dropFlushPinLocked forgets a pin whose caller gave up, releasing the
// version it may have received meanwhile. d.mu must be held.
func (d *DB) dropFlushPinLocked(p *flushPin) {
	d.flushPins = slices.DeleteFunc(d.flushPins, func(q *flushPin) bool { return q == p })
	if p.v != nil {
		p.v.unref()
		p.v = nil
	}
}

// scheduleFlushLocked wakes the flush goroutine.
func (d *DB) scheduleFlushLocked() {
	select {
	case d.flushCh <- struct{}{}:
	default:
	}
}

// flushLoop is the flush goroutine: it writes immutable memtables to L0,
// oldest first, until the DB closes (finishing the flush in progress).
// While recovering (Open met a full disk) its work is finishRecovery
// instead, first tried a retry wait after Open's attempt.
func (d *DB) flushLoop() {
	defer d.wg.Done()
	var retry retryBackoff
	d.mu.Lock()
	if d.recovering {
		retry = retryBackoff{wait: minRetryWait, failures: 1, limit: maxRecoveryRetryWait}
	}
	d.mu.Unlock()
	if retry.failures > 0 && !d.retryWait(retry.wait, nil, d.flushCh) {
		return
	}
	for {
		for {
			d.mu.Lock()
			if d.closing {
				d.mu.Unlock()
				return
			}
			var err error
			var size int64 // what the attempt writes, about
			if d.recovering {
				for _, m := range d.imm {
					size += m.t.Size()
				}
				d.mu.Unlock()
				_, err = d.finishRecovery()
			} else {
				if len(d.imm) == 0 {
					d.mu.Unlock()
					break
				}
				m := d.imm[0]
				next := d.mem
				if len(d.imm) > 1 {
					next = d.imm[1]
				}
				d.mu.Unlock()
				size = m.t.Size()
				err = d.flushMemtable(m, next.logNum)
			}
			d.mu.Lock()
			d.flushFailing = err
			if err != nil {
				d.flushErr = err
				d.flushFailures++
				d.cond.Broadcast()
			}
			d.mu.Unlock()
			var space *spaceWatch
			var attrs []any
			if err != nil {
				if space = d.watchSpace(err, size); space != nil {
					attrs = []any{"retry_when_free_bytes", space.need}
				}
			}
			if !retry.after(err, d.opts.Logger, "lsm: flush failed; will retry", "lsm: flush succeeded after failures", attrs...) {
				continue
			}
			// A Flush call or a new immutable memtable (flushCh) retries
			// at once too: a caller waiting, at shutdown say, learns at
			// once whether the disk has room again.
			if !d.retryWait(retry.wait, space, d.flushCh) {
				return
			}
		}
		retry = retryBackoff{}
		select {
		case <-d.flushCh:
		case <-d.closeCh:
			return
		}
	}
}

// flushMemtable writes m as an L0 table and records it, together with the
// WAL number from which replay must start (nextLogNum, the WAL of the
// memtable after m), in the manifest; then it deletes WALs nobody needs.
func (d *DB) flushMemtable(m *memTable, nextLogNum uint64) error {
	snapshots := d.snapshotSeqs()
	iter := m.t.NewFlushIter(snapshots[0])
	ci := &compactionIter{iter: iter, snapshots: snapshots}
	meta, err := d.writeL0(ci)
	if cerr := iter.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	e := &versionEdit{}
	if meta != nil {
		e.added = append(e.added, newFile{level: 0, meta: meta})
	}
	if !d.opts.DisableWAL {
		e.setLogNum(nextLogNum)
	}
	err = d.logAndApply(e, func() {
		if len(d.imm) == 0 || d.imm[0] != m {
			panic("lsm: flushed memtable is not the oldest immutable one")
		}
		d.imm = d.imm[1:]
		d.flushedMemID = m.id
		// Hand the version holding exactly this flush to the checkpoints
		// waiting for it; later flushes may add half of a split batch.
		d.flushPins = slices.DeleteFunc(d.flushPins, func(p *flushPin) bool {
			if p.memID != m.id {
				return false
			}
			d.current.ref()
			p.v = d.current
			return true
		})
	})
	if err != nil {
		return err
	}
	d.metrics.flushes.Add(1)
	if meta != nil {
		d.metrics.flushBytes.Add(meta.size)
	}
	if !d.opts.DisableWAL {
		d.deleteObsoleteWALs(nextLogNum)
	}
	d.maybeScheduleCompaction()
	return nil
}

// writeL0 writes the entries of it into a new table, returning nil when
// there are none. The table and its directory entry are synced.
func (d *DB) writeL0(it *compactionIter) (*fileMetadata, error) {
	out := d.newTableOutput(0)
	for it.First(); it.Valid(); it.Next() {
		if err := out.add(it.Key(), it.Value()); err != nil {
			out.abort()
			return nil, err
		}
	}
	if err := it.Err(); err != nil {
		out.abort()
		return nil, fmt.Errorf("lsm: flush: read memtable: %w", err)
	}
	meta, err := out.finish()
	if err != nil {
		return nil, err
	}
	if meta != nil {
		if err := syncDir(d.opts.FS, d.dirname); err != nil {
			d.removeTable(meta.fileNum)
			return nil, err
		}
	}
	return meta, nil
}

// tableOutput writes one table, created on the first entry.
type tableOutput struct {
	d           *DB
	level       int
	fileNum     uint64
	w           *sstable.Writer
	smallestSeq uint64
	largestSeq  uint64
	lastUkey    []byte
}

func (d *DB) newTableOutput(level int) *tableOutput {
	return &tableOutput{d: d, level: level}
}

func (o *tableOutput) add(ikey, value []byte) error {
	if o.w == nil {
		o.fileNum = o.d.nextFileNum.Add(1) - 1
		name := o.d.tc.path(o.fileNum)
		f, err := o.d.opts.FS.Create(name)
		if err != nil {
			return fmt.Errorf("lsm: create table %s: %w", name, err)
		}
		o.w = sstable.NewWriter(f, sstable.WriterOptions{
			BlockSize:       o.d.opts.BlockBytes,
			BloomBitsPerKey: o.d.bloomBits(),
			Compression:     o.d.compressionFor(o.level),
		})
		o.smallestSeq = base.MaxSeq
	}
	if err := o.w.Add(ikey, value); err != nil {
		return fmt.Errorf("lsm: write table %s: %w", o.d.tc.path(o.fileNum), err)
	}
	seq := base.SeqNum(base.Trailer(ikey))
	o.smallestSeq = min(o.smallestSeq, seq)
	o.largestSeq = max(o.largestSeq, seq)
	o.lastUkey = append(o.lastUkey[:0], base.UserKey(ikey)...)
	return nil
}

func (o *tableOutput) estimatedSize() int64 {
	if o.w == nil {
		return 0
	}
	return o.w.EstimatedSize()
}

// finish completes the table (fsynced and closed) and returns its
// metadata, or nil if nothing was added.
func (o *tableOutput) finish() (*fileMetadata, error) {
	if o.w == nil {
		return nil, nil
	}
	w := o.w
	o.w = nil
	m, err := w.Finish()
	if err != nil {
		o.d.removeTable(o.fileNum)
		return nil, fmt.Errorf("lsm: finish table %s: %w", o.d.tc.path(o.fileNum), err)
	}
	return &fileMetadata{
		fileNum:     o.fileNum,
		size:        m.Size,
		smallest:    append([]byte(nil), m.Smallest...),
		largest:     append([]byte(nil), m.Largest...),
		smallestSeq: o.smallestSeq,
		largestSeq:  o.largestSeq,
		entries:     m.Entries,
		deletions:   m.Deletions,
	}, nil
}

func (o *tableOutput) abort() {
	if o.w != nil {
		o.w.Abort()
		o.w = nil
		o.d.removeTable(o.fileNum)
	}
}

func (d *DB) removeTable(fileNum uint64) {
	name := d.tc.path(fileNum)
	if err := d.opts.FS.Remove(name); err != nil {
		d.opts.Logger.Warn("lsm: remove table", "table", name, "err", err)
	}
}

func (d *DB) bloomBits() int {
	if d.opts.BloomBitsPerKey <= 0 {
		return -1
	}
	return d.opts.BloomBitsPerKey
}

// compressionFor returns the block compression of tables written to level.
func (d *DB) compressionFor(level int) sstable.Compression {
	switch d.opts.Compression {
	case CompressionS2:
		return sstable.S2
	case CompressionZstd:
		return sstable.Zstd
	case CompressionNone:
		return sstable.NoCompression
	}
	if level == numLevels-1 {
		return sstable.Zstd
	}
	return sstable.S2
}
