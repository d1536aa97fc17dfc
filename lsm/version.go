package lsm

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/kvstore/kv/lsm/sstable"
)

// numLevels is the depth of the tree: L0 (overlapping tables, newest first)
// and L1..L6 (each a sorted run of tables with disjoint user-key ranges).
const numLevels = 7

// fileMetadata describes one table. It is shared by every version that
// contains the table (a trivial move keeps the same metadata), and so is
// its lazily opened reader.
type fileMetadata struct {
	fileNum  uint64
	size     int64
	smallest []byte // internal keys
	largest  []byte
	// smallestSeq and largestSeq bound the sequence numbers inside; they
	// order L0 (newest first).
	smallestSeq, largestSeq uint64
	entries, deletions      int64

	// refs counts the versions containing the table. When it drops to zero
	// the table is obsolete: its reader is closed and the file deleted.
	refs atomic.Int32

	// reader is the open table, nil until first use (see tableCache).
	reader   atomic.Pointer[sstable.Reader]
	readerMu sync.Mutex
}

func (f *fileMetadata) smallestUkey() []byte { return base.UserKey(f.smallest) }
func (f *fileMetadata) largestUkey() []byte  { return base.UserKey(f.largest) }

// containsUkey reports whether ukey falls within the table's key range.
func (f *fileMetadata) containsUkey(ukey []byte) bool {
	return bytes.Compare(ukey, f.smallestUkey()) >= 0 && bytes.Compare(ukey, f.largestUkey()) <= 0
}

// overlapsRange reports whether the table's user-key range meets
// [lo, hi] (inclusive).
func (f *fileMetadata) overlapsRange(lo, hi []byte) bool {
	return bytes.Compare(f.largestUkey(), lo) >= 0 && bytes.Compare(f.smallestUkey(), hi) <= 0
}

// version is an immutable set of tables, one list per level.
//
// Invariants:
//   - L0 is ordered newest first (largestSeq descending): for any user key,
//     a newer L0 table holds newer versions than an older one.
//   - In L1..L6 tables are sorted by key and their user-key ranges are
//     disjoint: all versions of one user key live in one table per level.
//   - For every user key, versions in level i are newer than versions in
//     level i+1 (compaction moves data down only together with all newer
//     overlapping data above it).
//
// A version is reference-counted by everything that reads it: the version
// set (while current), read states, iterators and compactions. When the
// last reference goes, each table loses one reference, and tables that no
// version holds any more become obsolete.
type version struct {
	levels [numLevels][]*fileMetadata
	refs   atomic.Int32
	// obsolete receives tables whose last version went away.
	obsolete func(*fileMetadata)
}

func (v *version) ref() { v.refs.Add(1) }

func (v *version) unref() {
	switch n := v.refs.Add(-1); {
	case n == 0:
		for _, files := range v.levels {
			for _, f := range files {
				if f.refs.Add(-1) == 0 && v.obsolete != nil {
					v.obsolete(f)
				}
			}
		}
	case n < 0:
		panic("lsm: version unreferenced too often")
	}
}

// apply returns the version that results from applying e to v. The new
// version holds one reference (the caller's) and references its tables.
func (v *version) apply(e *versionEdit) (*version, error) {
	nv := &version{obsolete: v.obsolete}
	deleted := make(map[deletedFile]bool, len(e.deleted))
	for _, d := range e.deleted {
		deleted[d] = true
	}
	for level := range numLevels {
		files := make([]*fileMetadata, 0, len(v.levels[level])+len(e.added))
		for _, f := range v.levels[level] {
			if deleted[deletedFile{level, f.fileNum}] {
				delete(deleted, deletedFile{level, f.fileNum})
				continue
			}
			files = append(files, f)
		}
		for _, a := range e.added {
			if a.level == level {
				files = append(files, a.meta)
			}
		}
		if level == 0 {
			slices.SortFunc(files, func(a, b *fileMetadata) int {
				if a.largestSeq != b.largestSeq {
					if a.largestSeq > b.largestSeq {
						return -1
					}
					return 1
				}
				return -cmpUint64(a.fileNum, b.fileNum)
			})
		} else {
			slices.SortFunc(files, func(a, b *fileMetadata) int { return base.Compare(a.smallest, b.smallest) })
			for i := 1; i < len(files); i++ {
				if bytes.Compare(files[i-1].largestUkey(), files[i].smallestUkey()) >= 0 {
					return nil, fmt.Errorf("lsm: apply version edit: tables %d and %d overlap in L%d: %w",
						files[i-1].fileNum, files[i].fileNum, level, ErrCorruption)
				}
			}
		}
		nv.levels[level] = files
	}
	for d := range deleted {
		return nil, fmt.Errorf("lsm: apply version edit: deleted table %d is not in L%d: %w", d.fileNum, d.level, ErrCorruption)
	}
	seen := make(map[uint64]bool)
	for _, files := range nv.levels {
		for _, f := range files {
			if seen[f.fileNum] {
				return nil, fmt.Errorf("lsm: apply version edit: table %d appears twice: %w", f.fileNum, ErrCorruption)
			}
			seen[f.fileNum] = true
		}
	}
	for _, files := range nv.levels {
		for _, f := range files {
			f.refs.Add(1)
		}
	}
	nv.refs.Store(1)
	return nv, nil
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// levelBytes returns the total size of the tables in a level.
func (v *version) levelBytes(level int) int64 {
	var n int64
	for _, f := range v.levels[level] {
		n += f.size
	}
	return n
}

// findFile returns the index of the first table in a sorted level (L1+)
// whose largest user key is >= ukey; len(files) if none.
func findFile(files []*fileMetadata, ukey []byte) int {
	lo, hi := 0, len(files)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(files[m].largestUkey(), ukey) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// overlaps returns the tables of a level whose user-key range meets
// [lo, hi] (inclusive).
func (v *version) overlaps(level int, lo, hi []byte) []*fileMetadata {
	files := v.levels[level]
	if level == 0 {
		var out []*fileMetadata
		for _, f := range files {
			if f.overlapsRange(lo, hi) {
				out = append(out, f)
			}
		}
		return out
	}
	i := findFile(files, lo)
	j := i
	for j < len(files) && bytes.Compare(files[j].smallestUkey(), hi) <= 0 {
		j++
	}
	return files[i:j:j]
}

// snapshotEdit returns an edit that recreates v from an empty version.
func (v *version) snapshotEdit() *versionEdit {
	e := &versionEdit{}
	for level, files := range v.levels {
		for _, f := range files {
			e.added = append(e.added, newFile{level: level, meta: f})
		}
	}
	return e
}

// keyRange returns the smallest and largest user keys of a set of tables.
func keyRange(sets ...[]*fileMetadata) (lo, hi []byte) {
	first := true
	for _, files := range sets {
		for _, f := range files {
			if first || bytes.Compare(f.smallestUkey(), lo) < 0 {
				lo = f.smallestUkey()
			}
			if first || bytes.Compare(f.largestUkey(), hi) > 0 {
				hi = f.largestUkey()
			}
			first = false
		}
	}
	return lo, hi
}
