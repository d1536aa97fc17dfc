package lsm

import (
	"bytes"
)

// pickerOptions are the knobs the compaction picker reads.
type pickerOptions struct {
	l0Trigger int
	// l0Stop is the L0 table count at which writes stop
	// (Options.L0StopWrites); from it on, L0 is compacted first. Zero:
	// L0 competes by score alone.
	l0Stop          int
	levelBaseBytes  int64
	targetFileBytes int64
	// oldestSnapshot is the oldest sequence number a reader can still
	// read at (the first of DB.snapshotSeqs): a bottom-level tombstone at
	// or below it can be dropped. Zero disables bottom-level rewrites.
	oldestSnapshot uint64
}

func (d *DB) pickerOptions() pickerOptions {
	return pickerOptions{
		l0Trigger:       d.opts.L0CompactionTrigger,
		l0Stop:          d.opts.L0StopWrites,
		levelBaseBytes:  d.opts.LevelBaseBytes,
		targetFileBytes: d.opts.TargetFileBytes,
	}
}

// levelMaxBytes is the target size of level (>= 1): LevelBaseBytes for L1,
// ten times more per level below.
func levelMaxBytes(o pickerOptions, level int) int64 {
	n := o.levelBaseBytes
	for i := 1; i < level; i++ {
		n *= 10
	}
	return n
}

// levelScores rates how urgently each level needs compaction: L0 by file
// count relative to the trigger, L1..L5 by size relative to the target. The
// bottom level is never compacted into anything and scores zero. A score of
// 1 or more asks for compaction.
func levelScores(v *version, o pickerOptions) [numLevels]float64 {
	var s [numLevels]float64
	s[0] = float64(len(v.levels[0])) / float64(o.l0Trigger)
	for level := 1; level < numLevels-1; level++ {
		s[level] = float64(v.levelBytes(level)) / float64(levelMaxBytes(o, level))
	}
	return s
}

// compaction describes one unit of compaction work: inputs[0] from level,
// inputs[1] from level+1 (the output level). A bottom-level rewrite
// (pickTombstoneCompaction) has outputLevel == level and no inputs[1].
type compaction struct {
	level       int
	outputLevel int
	inputs      [2][]*fileMetadata
	// grandparents are the tables of outputLevel+1 overlapping the inputs;
	// outputs are cut so that none overlaps too many of them (which would
	// make its own later compaction expensive).
	grandparents []*fileMetadata
	// trivialMove: inputs[0] is one table that overlaps nothing in the
	// output level; it moves down without being rewritten.
	trivialMove bool
}

// maxGrandparentOverlap bounds the grandparent bytes one output table (or
// a trivially moved table) may overlap, in units of TargetFileBytes.
const maxGrandparentOverlap = 10

func totalSize(files []*fileMetadata) int64 {
	var n int64
	for _, f := range files {
		n += f.size
	}
	return n
}

// pickCompaction chooses the most urgent compaction of v, or nil. cursor
// remembers, per level, where the previous compaction of that level ended,
// so successive compactions walk the key space round-robin. It is a pure
// function of its arguments (tests drive it with synthetic versions).
func pickCompaction(v *version, o pickerOptions, cursor *[numLevels][]byte) *compaction {
	// Stopped writes wait for an L0 compaction and nothing else. By score
	// L0 would wait behind any level further over its target than
	// L0StopWrites/L0CompactionTrigger (3 by default), and an L0
	// compaction leaves L1 at 5-10 times its target: with 6-12 GB of
	// data, writes stopped for 15-20 s at a time, and for 75 s after a
	// restart, while L1 and L2 were compacted.
	if o.l0Stop > 0 && len(v.levels[0]) >= o.l0Stop {
		return pickL0(v, o)
	}
	scores := levelScores(v, o)
	best, bestScore := -1, 1.0
	for level, s := range scores {
		if s >= bestScore {
			best, bestScore = level, s
		}
	}
	if best < 0 {
		return pickTombstoneCompaction(v, o)
	}
	if best == 0 {
		return pickL0(v, o)
	}
	return pickLevel(v, o, best, cursor)
}

// pickL0 compacts the oldest L0 table together with every L0 table that
// overlaps it, transitively, and the overlapping L1 tables. Taking the
// whole overlapping group keeps the level invariant: no L0 table left
// behind holds versions older than data moved to L1.
func pickL0(v *version, o pickerOptions) *compaction {
	l0 := v.levels[0]
	if len(l0) == 0 {
		return nil
	}
	chosen := make([]bool, len(l0))
	chosen[len(l0)-1] = true
	lo, hi := l0[len(l0)-1].smallestUkey(), l0[len(l0)-1].largestUkey()
	for changed := true; changed; {
		changed = false
		for i, f := range l0 {
			if !chosen[i] && f.overlapsRange(lo, hi) {
				chosen[i] = true
				changed = true
				if bytes.Compare(f.smallestUkey(), lo) < 0 {
					lo = f.smallestUkey()
				}
				if bytes.Compare(f.largestUkey(), hi) > 0 {
					hi = f.largestUkey()
				}
			}
		}
	}
	c := &compaction{level: 0, outputLevel: 1}
	for i, f := range l0 {
		if chosen[i] {
			c.inputs[0] = append(c.inputs[0], f)
		}
	}
	c.inputs[1] = v.overlaps(1, lo, hi)
	c.setGrandparents(v)
	if len(c.inputs[0]) == 1 && len(c.inputs[1]) == 0 &&
		totalSize(c.grandparents) <= maxGrandparentOverlap*o.targetFileBytes {
		c.trivialMove = true
	}
	return c
}

// pickLevel compacts the table after the level's cursor with the tables of
// the next level it overlaps.
func pickLevel(v *version, o pickerOptions, level int, cursor *[numLevels][]byte) *compaction {
	files := v.levels[level]
	if len(files) == 0 {
		return nil
	}
	var f *fileMetadata
	if cur := cursor[level]; cur != nil {
		for _, g := range files {
			if bytes.Compare(g.smallestUkey(), cur) > 0 {
				f = g
				break
			}
		}
	}
	if f == nil {
		f = files[0]
	}
	cursor[level] = append(cursor[level][:0], f.largestUkey()...)
	c := &compaction{level: level, outputLevel: level + 1}
	c.inputs[0] = []*fileMetadata{f}
	c.inputs[1] = v.overlaps(level+1, f.smallestUkey(), f.largestUkey())
	c.setGrandparents(v)
	if len(c.inputs[1]) == 0 && totalSize(c.grandparents) <= maxGrandparentOverlap*o.targetFileBytes {
		c.trivialMove = true
	}
	return c
}

// tombstoneDense reports whether at least half of f's entries are
// tombstones: a table mostly of deletions that no size-triggered
// compaction may ever reach (its level below target, or the bottom level,
// which is never compacted), while it keeps the deleted data below it on
// disk and makes every scan over its range step through each tombstone.
func tombstoneDense(f *fileMetadata) bool {
	return f.deletions > 0 && 2*f.deletions >= f.entries
}

// pickTombstoneCompaction, when no level is due, picks a compaction that
// pushes a tombstone-dense table down to the data it deletes (rewritten,
// never trivially moved, so that tombstones with nothing left below are
// dropped on the way), or rewrites a bottom-level one in place, dropping
// its tombstones, once no reader can still need them (largestSeq at or
// below oldestSnapshot: otherwise the rewrite would keep them and the
// table would be picked again and again). Each such compaction moves the
// table's entries down a level or removes its tombstones, so the picks
// end.
func pickTombstoneCompaction(v *version, o pickerOptions) *compaction {
	for level := 0; level < numLevels; level++ {
		for _, f := range v.levels[level] {
			if !tombstoneDense(f) {
				continue
			}
			var c *compaction
			switch {
			case level == 0:
				c = pickL0(v, o)
			case level < numLevels-1:
				c = &compaction{level: level, outputLevel: level + 1}
				c.inputs[0] = []*fileMetadata{f}
				c.inputs[1] = v.overlaps(level+1, f.smallestUkey(), f.largestUkey())
				c.setGrandparents(v)
			case f.largestSeq <= o.oldestSnapshot:
				c = &compaction{level: level, outputLevel: level}
				c.inputs[0] = []*fileMetadata{f}
			default:
				continue
			}
			c.trivialMove = false
			return c
		}
	}
	return nil
}

func (c *compaction) setGrandparents(v *version) {
	if c.outputLevel+1 >= numLevels {
		return
	}
	lo, hi := keyRange(c.inputs[0], c.inputs[1])
	c.grandparents = v.overlaps(c.outputLevel+1, lo, hi)
}
