package lsm

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/kvstore/kv/lsm/sstable"
)

// VerifyReport is what Verify read and what it found wrong.
type VerifyReport struct {
	Tables  int   // tables read
	Bytes   int64 // their size
	Entries int64 // entries read (every version and tombstone)
	// Problems describes each damaged table (at most one problem per
	// table: the first found). Empty when every table is sound.
	Problems []string
}

// Verify reads every table of the current version whole, from the disk
// (not the block cache, which it leaves as it is), and checks what a read
// would only find when it reached the damage: each block's checksum and
// decoding, that keys ascend, that the first and last key, the entry count
// and the sequence numbers are those the manifest records, and that the
// bloom filter holds every key (a filter that lost one makes Get miss a
// live key). A damaged table is recorded as reads record it (Health, the
// log) and Verify goes on with the next; the error is only for a failure
// to run (ctx done, the DB closed, also while it read). The memtables and WAL were checked by
// Open, which replays the WAL.
//
// It reads as much as the DB holds: run it on a copy, or when the disk can
// spare the bandwidth.
func (d *DB) Verify(ctx context.Context) (VerifyReport, error) {
	var rep VerifyReport
	if d.closed.Load() {
		return rep, ErrClosed
	}
	d.mu.Lock()
	v := d.current
	v.ref()
	d.mu.Unlock()
	defer v.unref()
	for level, files := range v.levels {
		for _, f := range files {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			n, err := d.verifyTable(ctx, f)
			rep.Tables++
			rep.Bytes += f.size
			rep.Entries += n
			if err == nil {
				continue
			}
			if ctxErr := ctx.Err(); ctxErr != nil {
				return rep, ctxErr
			}
			if d.closed.Load() {
				// Close sets closed before it closes the tables: a read it
				// cut short is no damage.
				return rep, ErrClosed
			}
			if ce := tableCorruption(err); ce != nil {
				d.noteDamage(ce, "verify", nil)
			}
			rep.Problems = append(rep.Problems, fmt.Sprintf("L%d: %v", level, err))
		}
	}
	return rep, nil
}

// verifyTable reads f whole and returns how many entries it read and the
// first problem found.
func (d *DB) verifyTable(ctx context.Context, f *fileMetadata) (int64, error) {
	r, err := d.tc.reader(f)
	if err != nil {
		return 0, err
	}
	// Not a block's damage: the table as a whole disagrees with itself or
	// with the manifest, so no offset is named.
	bad := func(format string, args ...any) error {
		return &sstable.CorruptionError{FileNum: f.fileNum, Name: d.tc.path(f.fileNum), Detail: fmt.Sprintf(format, args...)}
	}
	it := r.NewCompactionIter()
	var n int64
	var prev []byte
	for it.First(); it.Valid(); it.Next() {
		if n%4096 == 0 && ctx.Err() != nil {
			it.Close()
			return n, ctx.Err()
		}
		k := it.Key()
		ukey, trailer, ok := base.Split(k)
		switch {
		case !ok:
			err = bad("entry %d: key of %d bytes has no trailer", n, len(k))
		case prev != nil && base.Compare(prev, k) >= 0:
			err = bad("entry %d: key %q does not sort after the previous one", n, ukey)
		case n == 0 && !bytes.Equal(k, f.smallest):
			err = bad("first key %q is not the smallest the manifest records (%q)", ukey, f.smallestUkey())
		case base.SeqNum(trailer) < f.smallestSeq || base.SeqNum(trailer) > f.largestSeq:
			err = bad("entry %d: sequence number %d outside the manifest's [%d, %d]", n, base.SeqNum(trailer), f.smallestSeq, f.largestSeq)
		case !r.MayContain(ukey):
			err = bad("bloom filter lacks key %q: Get would miss it", ukey)
		}
		if err != nil {
			it.Close()
			return n, err
		}
		prev = append(prev[:0], k...)
		n++
	}
	if err := it.Close(); err != nil {
		return n, err
	}
	switch {
	case n != f.entries && f.entries != 0:
		return n, bad("%d entries, the manifest records %d", n, f.entries)
	case n != r.Meta().Entries:
		return n, bad("%d entries, the table's properties say %d", n, r.Meta().Entries)
	case n > 0 && !bytes.Equal(prev, f.largest):
		return n, bad("last key %q is not the largest the manifest records (%q)", base.UserKey(prev), f.largestUkey())
	}
	return n, nil
}
