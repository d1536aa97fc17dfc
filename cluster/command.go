package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A command is the payload of one raft entry: a kind byte followed by the
// kind's fields. The encoding is part of the raft log, so entries written by
// one version are replayed by the next: kinds are only ever added.
//
//	cmdWrite  lsm batch repr     (user keys, unprefixed), applied atomically
//	cmdClear                     delete every user key
//	cmdMember uvarint id | uvarint len | raft | uvarint len | client
//	cmdForget uvarint id
//
// A cmdWrite carries the writes of many Write calls merged into one batch
// (see batchMerger): its records are those of the callers' batches, in
// call order, so later writes to a key win as they would have one by one.
const (
	cmdWrite  byte = 1
	cmdClear  byte = 2
	cmdMember byte = 3
	cmdForget byte = 4
)

// Update's per-entry result values.
const (
	resultApplied  uint64 = 1
	resultRejected uint64 = 2
)

// errBadCommand is wrapped by errors decoding a malformed command.
var errBadCommand = errors.New("malformed raft command")

// member is a node's record: its id and addresses.
type member struct {
	ID     uint64
	Raft   string
	Client string
}

func encodeMember(m member) []byte {
	b := []byte{cmdMember}
	return append(b, encodeMemberValue(m)...)
}

// encodeMemberValue is the stored form of a member record (also the
// cmdMember payload).
func encodeMemberValue(m member) []byte {
	var b []byte
	b = binary.AppendUvarint(b, m.ID)
	b = binary.AppendUvarint(b, uint64(len(m.Raft)))
	b = append(b, m.Raft...)
	b = binary.AppendUvarint(b, uint64(len(m.Client)))
	return append(b, m.Client...)
}

func decodeMemberValue(p []byte) (member, error) {
	var m member
	id, w := binary.Uvarint(p)
	if w <= 0 || id == 0 {
		return m, fmt.Errorf("member record: bad id: %w", errBadCommand)
	}
	p = p[w:]
	raft, p, err := lengthPrefixed(p)
	if err != nil {
		return m, fmt.Errorf("member record: raft address: %w", err)
	}
	client, p, err := lengthPrefixed(p)
	if err != nil {
		return m, fmt.Errorf("member record: client address: %w", err)
	}
	if len(p) != 0 {
		return m, fmt.Errorf("member record: %d trailing bytes: %w", len(p), errBadCommand)
	}
	return member{ID: id, Raft: string(raft), Client: string(client)}, nil
}

func encodeForget(id uint64) []byte {
	return binary.AppendUvarint([]byte{cmdForget}, id)
}

func decodeForget(p []byte) (uint64, error) {
	id, w := binary.Uvarint(p)
	if w <= 0 || w != len(p) || id == 0 {
		return 0, fmt.Errorf("forget command: bad id: %w", errBadCommand)
	}
	return id, nil
}

func lengthPrefixed(p []byte) (field, rest []byte, err error) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil, fmt.Errorf("bad field length: %w", errBadCommand)
	}
	return p[w : w+int(n)], p[w+int(n):], nil
}

// memberKey is the metadata key of node id's member record.
func memberKey(id uint64) []byte {
	k := append([]byte(nil), memberKeyPrefix...)
	return binary.BigEndian.AppendUint64(k, id)
}

// lsmBatchHeaderLen is the size of an lsm batch repr's header: the sequence
// number (u64) and the operation count (u32), little-endian, as documented
// on lsm.Batch. The records after it can be concatenated across batches.
const lsmBatchHeaderLen = 12

// batchMerger builds a cmdWrite command from the reprs of several batches by
// concatenating their records under one header. Its buffer is reused from
// one proposal to the next.
type batchMerger struct {
	buf   []byte
	count uint32
}

func (m *batchMerger) reset() {
	m.buf = append(m.buf[:0], cmdWrite)
	m.buf = append(m.buf, make([]byte, lsmBatchHeaderLen)...)
	m.count = 0
}

// add appends the records of one batch repr holding count operations.
func (m *batchMerger) add(repr []byte, count int) {
	if len(repr) <= lsmBatchHeaderLen {
		return
	}
	m.buf = append(m.buf, repr[lsmBatchHeaderLen:]...)
	m.count += uint32(count)
}

// size is the command's length so far.
func (m *batchMerger) size() int { return len(m.buf) }

// command returns the finished command; it aliases the merger's buffer.
func (m *batchMerger) command() []byte {
	binary.LittleEndian.PutUint32(m.buf[1+8:1+lsmBatchHeaderLen], m.count)
	return m.buf
}
