package lsm

import (
	"encoding/binary"
	"fmt"

	"github.com/kvstore/kv/lsm/internal/base"
)

// Manifest record tags. A version edit is a sequence of (tag, fields); every
// field is a uvarint or a uvarint-length-prefixed byte string.
const (
	tagLogNumber      = 2
	tagNextFileNumber = 3
	tagLastSequence   = 4
	tagDeletedFile    = 6  // level, file number
	tagNewFile        = 20 // level, number, size, smallest, largest, smallest seq, largest seq, entries, deletions
)

// deletedFile names a table an edit removes from a level.
type deletedFile struct {
	level   int
	fileNum uint64
}

// newFile is a table an edit adds to a level.
type newFile struct {
	level int
	meta  *fileMetadata
}

// versionEdit is the delta between two versions, as logged in the manifest:
// tables added and removed, and the counters recovery needs. A manifest is
// a snapshot edit (every live table) followed by deltas.
type versionEdit struct {
	// logNum, when set, is the oldest WAL still needed: every WAL with a
	// smaller number is covered by tables.
	logNum, nextFileNum, lastSeq          uint64
	hasLogNum, hasNextFileNum, hasLastSeq bool

	deleted []deletedFile
	added   []newFile
}

func (e *versionEdit) setLogNum(n uint64)      { e.logNum, e.hasLogNum = n, true }
func (e *versionEdit) setNextFileNum(n uint64) { e.nextFileNum, e.hasNextFileNum = n, true }
func (e *versionEdit) setLastSeq(n uint64)     { e.lastSeq, e.hasLastSeq = n, true }

func (e *versionEdit) encode(dst []byte) []byte {
	if e.hasLogNum {
		dst = binary.AppendUvarint(dst, tagLogNumber)
		dst = binary.AppendUvarint(dst, e.logNum)
	}
	if e.hasNextFileNum {
		dst = binary.AppendUvarint(dst, tagNextFileNumber)
		dst = binary.AppendUvarint(dst, e.nextFileNum)
	}
	if e.hasLastSeq {
		dst = binary.AppendUvarint(dst, tagLastSequence)
		dst = binary.AppendUvarint(dst, e.lastSeq)
	}
	for _, d := range e.deleted {
		dst = binary.AppendUvarint(dst, tagDeletedFile)
		dst = binary.AppendUvarint(dst, uint64(d.level))
		dst = binary.AppendUvarint(dst, d.fileNum)
	}
	for _, a := range e.added {
		m := a.meta
		dst = binary.AppendUvarint(dst, tagNewFile)
		dst = binary.AppendUvarint(dst, uint64(a.level))
		dst = binary.AppendUvarint(dst, m.fileNum)
		dst = binary.AppendUvarint(dst, uint64(m.size))
		dst = binary.AppendUvarint(dst, uint64(len(m.smallest)))
		dst = append(dst, m.smallest...)
		dst = binary.AppendUvarint(dst, uint64(len(m.largest)))
		dst = append(dst, m.largest...)
		dst = binary.AppendUvarint(dst, m.smallestSeq)
		dst = binary.AppendUvarint(dst, m.largestSeq)
		dst = binary.AppendUvarint(dst, uint64(m.entries))
		dst = binary.AppendUvarint(dst, uint64(m.deletions))
	}
	return dst
}

// editDecoder reads the fields of an encoded edit, remembering the first
// error so the caller checks once.
type editDecoder struct {
	p   []byte
	err error
}

func (d *editDecoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.err = fmt.Errorf("decode version edit: bad %s: %w", what, ErrCorruption)
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *editDecoder) bytes(what string) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.p)) {
		d.err = fmt.Errorf("decode version edit: %s length %d exceeds record: %w", what, n, ErrCorruption)
		return nil
	}
	b := append([]byte(nil), d.p[:n]...)
	d.p = d.p[n:]
	return b
}

func (d *editDecoder) level() int {
	l := d.uvarint("level")
	if d.err == nil && l >= numLevels {
		d.err = fmt.Errorf("decode version edit: level %d out of range: %w", l, ErrCorruption)
	}
	return int(l)
}

// decode parses an encoded edit. The edit copies what it keeps.
func (e *versionEdit) decode(p []byte) error {
	d := &editDecoder{p: p}
	for len(d.p) > 0 && d.err == nil {
		switch tag := d.uvarint("tag"); tag {
		case tagLogNumber:
			e.setLogNum(d.uvarint("log number"))
		case tagNextFileNumber:
			e.setNextFileNum(d.uvarint("next file number"))
		case tagLastSequence:
			e.setLastSeq(d.uvarint("last sequence"))
		case tagDeletedFile:
			level := d.level()
			e.deleted = append(e.deleted, deletedFile{level: level, fileNum: d.uvarint("file number")})
		case tagNewFile:
			level := d.level()
			m := &fileMetadata{}
			m.fileNum = d.uvarint("file number")
			m.size = int64(d.uvarint("file size"))
			m.smallest = d.bytes("smallest key")
			m.largest = d.bytes("largest key")
			m.smallestSeq = d.uvarint("smallest seq")
			m.largestSeq = d.uvarint("largest seq")
			m.entries = int64(d.uvarint("entries"))
			m.deletions = int64(d.uvarint("deletions"))
			if d.err == nil && (len(m.smallest) < base.TrailerLen || len(m.largest) < base.TrailerLen) {
				d.err = fmt.Errorf("decode version edit: table %d has a malformed key range: %w", m.fileNum, ErrCorruption)
			}
			if d.err == nil && base.Compare(m.smallest, m.largest) > 0 {
				d.err = fmt.Errorf("decode version edit: table %d has smallest key above largest: %w", m.fileNum, ErrCorruption)
			}
			e.added = append(e.added, newFile{level: level, meta: m})
		default:
			if d.err == nil {
				d.err = fmt.Errorf("decode version edit: unknown tag %d: %w", tag, ErrCorruption)
			}
		}
	}
	return d.err
}
