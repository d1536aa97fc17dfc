package lsm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/kvstore/kv/lsm/sstable"
)

// damagedTables records the tables in which reads or compactions found
// damage (a block whose checksum does not match, say). Damage is
// permanent: the file stays as it is until an operator restores it, so
// it is logged once per table however often reads hit it (a hot damaged
// block must not flood the log), and Health reports it until the DB is
// reopened.
type damagedTables struct {
	mu     sync.Mutex
	tables map[uint64]*damagedTable // by file number
	first  *sstable.CorruptionError // the first damage found, for Health
}

type damagedTable struct {
	// compaction is the damage a compaction found, or nil: compactions
	// over the table are not retried (see compactLoop).
	compaction error
}

// tableCorruption returns the table damage err reports, or nil.
func tableCorruption(err error) *sstable.CorruptionError {
	var ce *sstable.CorruptionError
	if errors.As(err, &ce) {
		return ce
	}
	return nil
}

// noteReadErr counts a read (Get, GetNoWait, an Iterator) that failed
// because a table is damaged, and records the table.
func (d *DB) noteReadErr(err error) {
	if !errors.Is(err, ErrCorruption) {
		return
	}
	d.metrics.corruptReads.Add(1)
	if ce := tableCorruption(err); ce != nil {
		d.noteDamage(ce, "read", nil)
	}
}

// noteDamage records the damage ce and logs it if its table was not known
// to be damaged. compactionErr is the error of the compaction that met
// the damage, or nil for a read (or Open's check of table sizes).
func (d *DB) noteDamage(ce *sstable.CorruptionError, foundBy string, compactionErr error) {
	dt := &d.damaged
	dt.mu.Lock()
	t, known := dt.tables[ce.FileNum]
	if !known {
		if dt.tables == nil {
			dt.tables = make(map[uint64]*damagedTable)
		}
		t = &damagedTable{}
		dt.tables[ce.FileNum] = t
		if dt.first == nil {
			dt.first = ce
		}
	}
	newToCompaction := compactionErr != nil && t.compaction == nil
	if newToCompaction {
		t.compaction = compactionErr
	}
	n := len(dt.tables)
	dt.mu.Unlock()

	if !known {
		d.opts.Logger.Error("lsm: damaged table: reads of its damaged blocks fail until it is restored from a backup or a replica",
			"table", ce.Name, "offset", ce.Offset, "damage", ce.Detail, "found_by", foundBy, "damaged_tables", n)
	}
	if newToCompaction {
		d.opts.Logger.Error("lsm: compaction failed on a damaged table; compactions that read it are not retried",
			"table", ce.Name, "err", compactionErr)
	}
}

// damagedCompactionInput returns the error of the compaction that found
// one of c's input tables damaged, or nil. Running c again would read the
// same damaged block and fail the same way.
func (d *DB) damagedCompactionInput(c *compaction) error {
	if c.trivialMove {
		return nil // moves the table without reading it
	}
	dt := &d.damaged
	dt.mu.Lock()
	defer dt.mu.Unlock()
	for _, files := range c.inputs {
		for _, f := range files {
			if t := dt.tables[f.fileNum]; t != nil && t.compaction != nil {
				return t.compaction
			}
		}
	}
	return nil
}

// damageErr reports the damaged tables found so far, or nil.
func (d *DB) damageErr() error {
	dt := &d.damaged
	dt.mu.Lock()
	defer dt.mu.Unlock()
	if dt.first == nil {
		return nil
	}
	return fmt.Errorf("lsm: %d damaged table(s), reads of their damaged blocks fail; first: %w", len(dt.tables), dt.first)
}
