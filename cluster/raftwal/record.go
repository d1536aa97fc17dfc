package raftwal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// A record is one atomic write: a header of the body's CRC-32C and length
// (4 bytes each, little endian) and a body of operations, applied in
// order on replay.
const headerSize = 8

// Operation kinds. The values are on disk: never reuse or renumber one.
const (
	// opUpdate is a replica's share of a raft round: its new state, a
	// snapshot it installed (which replaces its log) and entries it
	// appended (which replace any at and after the first one's index).
	opUpdate byte = 1
	// opSnapshot records a snapshot the replica took of its own state
	// machine: metadata only, the log is untouched.
	opSnapshot byte = 2
	// opBootstrap is the replica's bootstrap record.
	opBootstrap byte = 3
	// opCompact drops the replica's entries up to an index.
	opCompact byte = 4
	// opRemove drops everything of a replica.
	opRemove byte = 5
	// opNode is a replica's metadata in a checkpoint: it replaces the
	// bootstrap record, state and snapshot and compacts to an index,
	// leaving the entries alone.
	opNode byte = 6
	// opSegmentEnd opens a checkpoint: where the previous segment's
	// records end (its segment number and length, in place of a
	// replica's). Replay checks it, so an older segment that lost its tail
	// is refused: its zeros would otherwise read as unused space.
	opSegmentEnd byte = 7
)

// Flags of opUpdate and opNode.
const (
	hasState     byte = 1 << 0
	hasSnapshot  byte = 1 << 1
	hasEntries   byte = 1 << 2
	hasBootstrap byte = 1 << 3
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// ErrCorrupt marks a record or entry that fails its checks.
var ErrCorrupt = errors.New("raftwal: corrupt record")

// encoder builds one record in a reusable buffer.
type encoder struct {
	buf []byte
}

func (e *encoder) begin() { e.buf = append(e.buf[:0], make([]byte, headerSize)...) }

// finish fills in the header and returns the record.
func (e *encoder) finish() []byte {
	body := e.buf[headerSize:]
	binary.LittleEndian.PutUint32(e.buf[0:4], checksum(body))
	binary.LittleEndian.PutUint32(e.buf[4:8], uint32(len(body)))
	return e.buf
}

func (e *encoder) empty() bool { return len(e.buf) == headerSize }

func (e *encoder) byte(b byte)            { e.buf = append(e.buf, b) }
func (e *encoder) uvarint(v uint64)       { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) node(s, r uint64)       { e.uvarint(s); e.uvarint(r) }
func (e *encoder) op(k byte, s, r uint64) { e.byte(k); e.node(s, r) }

// marshaler is what the raftpb types used here provide.
type marshaler interface {
	Size() int
	MarshalTo([]byte) (int, error)
}

// message appends m with its length in front.
func (e *encoder) message(m marshaler) {
	n := m.Size()
	e.uvarint(uint64(n))
	e.buf = grow(e.buf, n)
	if _, err := m.MarshalTo(e.buf[len(e.buf) : len(e.buf)+n]); err != nil {
		// The raftpb marshalers write into a buffer of Size() bytes and
		// have no other way to fail.
		panic(fmt.Sprintf("raftwal: marshal %T: %v", m, err))
	}
	e.buf = e.buf[:len(e.buf)+n]
}

// entry appends an entry as its length, the CRC-32C of its encoding and
// the encoding; a loc points at the CRC.
func (e *encoder) entry(ent *pb.Entry) {
	n := ent.Size()
	e.uvarint(uint64(n))
	off := len(e.buf)
	e.buf = grow(e.buf, 4+n)
	data := e.buf[off+4 : off+4+n]
	if _, err := ent.MarshalTo(data); err != nil {
		panic(fmt.Sprintf("raftwal: marshal entry: %v", err))
	}
	binary.LittleEndian.PutUint32(e.buf[off:off+4], checksum(data))
	e.buf = e.buf[:off+4+n]
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), 2*cap(b)+n)
	copy(nb, b)
	return nb
}

// decodeEntry checks and decodes an entry read back from its location.
func decodeEntry(data []byte, ent *pb.Entry) error {
	if len(data) < 4 {
		return ErrCorrupt
	}
	if checksum(data[4:]) != le32(data) {
		return fmt.Errorf("%w: entry checksum mismatch", ErrCorrupt)
	}
	if err := ent.Unmarshal(data[4:]); err != nil {
		return fmt.Errorf("%w: entry: %v", ErrCorrupt, err)
	}
	return nil
}

// decoder reads the operations of one record body.
type decoder struct {
	b   []byte
	pos int
	err error
}

func (d *decoder) more() bool { return d.err == nil && d.pos < len(d.b) }

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at body offset %d", ErrCorrupt, what, d.pos)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || d.pos >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	d.pos++
	return d.b[d.pos-1]
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.pos:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.pos += n
	return v
}

// bytes returns the next n bytes, aliasing the body.
func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.pos) {
		d.fail("length beyond the record")
		return nil
	}
	b := d.b[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return b
}

type unmarshaler interface{ Unmarshal([]byte) error }

func (d *decoder) message(m unmarshaler) {
	b := d.bytes(d.uvarint())
	if d.err != nil {
		return
	}
	if err := m.Unmarshal(b); err != nil {
		d.fail(fmt.Sprintf("%T: %v", m, err))
	}
}
