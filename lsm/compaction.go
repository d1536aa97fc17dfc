package lsm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/kvstore/kv/lsm/internal/base"
)

// errCompactionAborted stops a compaction when the DB closes.
var errCompactionAborted = errors.New("lsm: compaction aborted at close")

// maybeScheduleCompaction wakes the compaction goroutine.
func (d *DB) maybeScheduleCompaction() {
	select {
	case d.compactCh <- struct{}{}:
	default:
	}
}

// compactLoop is the compaction goroutine. One compaction runs at a time
// (the machine this targets has two cores: one for flushes, one for this).
// It also deletes obsolete tables.
func (d *DB) compactLoop() {
	defer d.wg.Done()
	var cursor [numLevels][]byte
	for {
		select {
		case <-d.compactCh:
		case <-d.closeCh:
			return
		}
		d.deleteObsoleteTables()
		var retry retryBackoff
		for {
			d.mu.Lock()
			if d.closing {
				d.mu.Unlock()
				return
			}
			v := d.current
			v.ref()
			o := d.pickerOptions()
			o.oldestSnapshot = d.oldestSnapshotLocked()
			c := pickCompaction(v, o, &cursor)
			d.mu.Unlock()
			if c == nil {
				v.unref()
				break
			}
			// A compaction that read a damaged block would read it again:
			// the table stays damaged until an operator restores it.
			err := d.damagedCompactionInput(c)
			if err == nil {
				err = d.runCompaction(v, c)
			}
			v.unref()
			d.deleteObsoleteTables()
			if errors.Is(err, errCompactionAborted) {
				return
			}
			ce := tableCorruption(err)
			if ce != nil {
				d.noteDamage(ce, "compaction", err) // logs once per table
			}
			d.mu.Lock()
			d.compactFailing = err
			if err != nil {
				// Stalled writes look at it (stallIfNeeded).
				d.cond.Broadcast()
			}
			if errors.Is(err, ErrCorruption) && d.bgErr == nil {
				// Retrying cannot help, and L0 will pile up behind it:
				// let stalled writes fail instead of waiting forever.
				d.bgErr = fmt.Errorf("lsm: compaction failed: %w", err)
			}
			d.mu.Unlock()
			if ce != nil {
				// Not retried on a timer, which would reread every input
				// and log the failure again each minute, for ever. The
				// next wake-up (a flush, a deletion) picks again: another
				// compaction may be due by then, and one over the damaged
				// table fails at once, reading nothing.
				break
			}
			attrs := []any{"level", c.level}
			var space *spaceWatch
			if err != nil {
				var size int64 // what it writes, about; a move writes only the manifest
				if !c.trivialMove {
					for _, files := range c.inputs {
						size += totalSize(files)
					}
				}
				if space = d.watchSpace(err, size); space != nil {
					attrs = append(attrs, "retry_when_free_bytes", space.need)
				}
			}
			// Not woken by compactCh: every flush signals it, and a full
			// disk's compaction would then be retried at each flush.
			if retry.after(err, d.opts.Logger, "lsm: compaction failed; will retry", "lsm: compaction succeeded after failures", attrs...) &&
				!d.retryWait(retry.wait, space, nil) {
				return
			}
		}
	}
}

// runCompaction executes c, picked from v (referenced by the caller).
func (d *DB) runCompaction(v *version, c *compaction) error {
	e := &versionEdit{}
	for i, files := range c.inputs {
		for _, f := range files {
			e.deleted = append(e.deleted, deletedFile{level: c.level + i, fileNum: f.fileNum})
		}
	}
	if c.trivialMove {
		f := c.inputs[0][0]
		e.added = append(e.added, newFile{level: c.outputLevel, meta: f})
		if err := d.logAndApply(e, nil); err != nil {
			return err
		}
		d.metrics.compactions.Add(1)
		d.metrics.trivialMoves.Add(1)
		return nil
	}

	outputs, err := d.writeCompactionOutputs(v, c)
	if err != nil {
		return err
	}
	for _, m := range outputs {
		e.added = append(e.added, newFile{level: c.outputLevel, meta: m})
	}
	if err := d.logAndApply(e, nil); err != nil {
		// The edit may be on disk even so (see logAndApply): the outputs
		// stay until the next Open removes them if no manifest names them.
		return err
	}
	var read, written int64
	for _, files := range c.inputs {
		read += totalSize(files)
	}
	for _, m := range outputs {
		written += m.size
	}
	d.metrics.compactions.Add(1)
	d.metrics.compactionBytesRead.Add(read)
	d.metrics.compactionBytesWritten.Add(written)
	return nil
}

// writeCompactionOutputs merges the inputs of c through the compaction
// filter into new tables of the output level, cut at TargetFileBytes (and
// where an output would overlap too much of the grandparent level), never
// between two versions of one user key: a level's tables must have disjoint
// user-key ranges. The outputs are synced, and so is the directory.
func (d *DB) writeCompactionOutputs(v *version, c *compaction) (outputs []*fileMetadata, err error) {
	var iters []base.Iterator
	if c.level == 0 {
		for _, f := range c.inputs[0] {
			r, err := d.tc.reader(f)
			if err != nil {
				return nil, err
			}
			iters = append(iters, r.NewCompactionIter())
		}
	} else {
		iters = append(iters, newCompactionLevelIter(&d.tc, c.inputs[0]))
	}
	if len(c.inputs[1]) > 0 {
		iters = append(iters, newCompactionLevelIter(&d.tc, c.inputs[1]))
	}
	mi := newMergingIter(iters)
	defer func() {
		if cerr := mi.Close(); err == nil && cerr != nil {
			err = cerr
			for _, m := range outputs {
				d.removeTable(m.fileNum)
			}
			outputs = nil
		}
	}()
	ci := &compactionIter{
		iter:      mi,
		snapshots: d.snapshotSeqs(),
		elide:     func(ukey []byte) bool { return isBaseLevelForKey(v, c.outputLevel, ukey) },
	}

	target := d.opts.TargetFileBytes
	out := d.newTableOutput(c.outputLevel)
	fail := func(err error) ([]*fileMetadata, error) {
		out.abort()
		for _, m := range outputs {
			d.removeTable(m.fileNum)
		}
		return nil, err
	}
	gp := 0 // grandparents[:gp] lie entirely before the current key
	var gpOverlap int64
	for n := 0; ; n++ {
		if n == 0 {
			ci.First()
		} else {
			ci.Next()
		}
		if !ci.Valid() {
			break
		}
		if n%1024 == 0 && d.isClosing() {
			return fail(errCompactionAborted)
		}
		ukey := base.UserKey(ci.Key())
		for gp < len(c.grandparents) && bytes.Compare(c.grandparents[gp].largestUkey(), ukey) < 0 {
			gpOverlap += c.grandparents[gp].size
			gp++
		}
		if out.w != nil && !bytes.Equal(ukey, out.lastUkey) &&
			(out.estimatedSize() >= target || gpOverlap > maxGrandparentOverlap*target) {
			m, err := out.finish()
			if err != nil {
				return fail(err)
			}
			outputs = append(outputs, m)
			out = d.newTableOutput(c.outputLevel)
			gpOverlap = 0
		}
		if err := out.add(ci.Key(), ci.Value()); err != nil {
			return fail(err)
		}
	}
	if err := ci.Err(); err != nil {
		return fail(fmt.Errorf("lsm: compaction L%d->L%d: read inputs: %w", c.level, c.outputLevel, err))
	}
	m, err := out.finish()
	if err != nil {
		return fail(err)
	}
	if m != nil {
		outputs = append(outputs, m)
	}
	if len(outputs) > 0 {
		if err := syncDir(d.opts.FS, d.dirname); err != nil {
			return fail(err)
		}
	}
	return outputs, nil
}

// isBaseLevelForKey reports whether no level below level can hold a
// version of ukey, so that a tombstone written to level may be dropped.
func isBaseLevelForKey(v *version, level int, ukey []byte) bool {
	for l := level + 1; l < numLevels; l++ {
		files := v.levels[l]
		if i := findFile(files, ukey); i < len(files) && bytes.Compare(files[i].smallestUkey(), ukey) <= 0 {
			return false
		}
	}
	return true
}

// oldestSnapshotLocked is the first of snapshotSeqs: the oldest sequence
// number a reader can still read at. d.mu must be held.
func (d *DB) oldestSnapshotLocked() uint64 {
	v := d.visibleSeq.Load()
	if s := d.snapshots.next; s != &d.snapshots && s.seq < v {
		return s.seq
	}
	return v
}

func (d *DB) isClosing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closing
}

// snapshotSeqs returns the sequence numbers reads can still use, ascending
// and without duplicates: those pinned by open iterators, and the published
// one (visibleSeq), at which every new read starts. The last matters while
// a commit group is being inserted: when a batch overflows the memtable the
// full one is flushed at once, possibly holding a newer, unpublished
// version of a key beside its visible one, and a flush or compaction that
// kept only the newest would hide the key from reads until the group is
// published.
func (d *DB) snapshotSeqs() []uint64 {
	d.mu.Lock()
	var seqs []uint64
	for s := d.snapshots.next; s != &d.snapshots; s = s.next {
		if len(seqs) == 0 || seqs[len(seqs)-1] != s.seq {
			seqs = append(seqs, s.seq)
		}
	}
	d.mu.Unlock()
	// Read after the iterators': it is at least each of theirs.
	if v := d.visibleSeq.Load(); len(seqs) == 0 || seqs[len(seqs)-1] < v {
		seqs = append(seqs, v)
	}
	return seqs
}
