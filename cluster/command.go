package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A command is the payload of one raft entry: a fixed header, then the
// body of its kind. The encoding is part of the raft log, so entries
// written by one version are replayed by the next: kinds are only added.
//
//	header  kind u8 | proposer u64 LE | seq u64 LE | floor u64 LE
//	cmdWrite  lsm batch repr (user keys, unprefixed), applied atomically
//	cmdClear  (empty)  delete every user key
//	cmdMember uvarint id | uvarint len | raft | uvarint len | client
//	cmdForget uvarint id
//	cmdHash   token u64 LE: hash the state as of the entries before it
//	          (consistency.go); changes nothing
//
// A cmdWrite carries the writes of many Write calls merged into one batch
// (see batchMerger): its records are those of the callers' batches, in call
// order, so later writes to a key win as they would have one by one.
//
// Proposer, seq and floor make proposals exactly-once and in order (see
// seqState): proposer is a random id of one process's proposer (0: no
// checks), seq numbers its proposals 0, 1, 2..., and floor says the
// proposer gave up on every seq below it.
//
// A replica that meets a kind above cmdMaxKind stops applying rather than
// skip it (errNewerCommand), so a cluster is upgraded node by node and a
// version proposes a new kind only once every member says it applies it
// (requireKind).
const (
	cmdWrite  byte = 1
	cmdClear  byte = 2
	cmdMember byte = 3
	cmdForget byte = 4
	cmdHash   byte = 5

	cmdMaxKind = cmdHash
)

const cmdHeaderLen = 1 + 8 + 8 + 8

// Update's per-entry result values.
const (
	resultApplied    uint64 = 1 // applied now
	resultRejected   uint64 = 2 // malformed; skipped (a seq is still consumed)
	resultDuplicate  uint64 = 3 // this seq was applied before: nothing to do
	resultOutOfOrder uint64 = 4 // an earlier seq of the proposer is missing
)

// errBadCommand is wrapped by errors decoding a malformed command.
var errBadCommand = errors.New("malformed raft command")

// errNewerCommand is wrapped by the error a state machine stops on when an
// entry's kind, or a snapshot's format, is newer than this version.
var errNewerCommand = errors.New("raft command or snapshot of a newer version")

type cmdHeader struct {
	kind                 byte
	proposer, seq, floor uint64
}

func appendHeader(dst []byte, h cmdHeader) []byte {
	dst = append(dst, h.kind)
	dst = binary.LittleEndian.AppendUint64(dst, h.proposer)
	dst = binary.LittleEndian.AppendUint64(dst, h.seq)
	return binary.LittleEndian.AppendUint64(dst, h.floor)
}

// setFloor rewrites the floor of an encoded command in place.
func setFloor(cmd []byte, floor uint64) {
	binary.LittleEndian.PutUint64(cmd[17:25], floor)
}

func decodeHeader(cmd []byte) (cmdHeader, []byte, error) {
	if len(cmd) < cmdHeaderLen {
		return cmdHeader{}, nil, fmt.Errorf("command of %d bytes: %w", len(cmd), errBadCommand)
	}
	h := cmdHeader{
		kind:     cmd[0],
		proposer: binary.LittleEndian.Uint64(cmd[1:9]),
		seq:      binary.LittleEndian.Uint64(cmd[9:17]),
		floor:    binary.LittleEndian.Uint64(cmd[17:25]),
	}
	return h, cmd[cmdHeaderLen:], nil
}

// member is a node's record: its id and addresses.
type member struct {
	ID     uint64
	Raft   string
	Client string
}

// encodeMemberValue is the stored form of a member record, which is also
// the cmdMember body.
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

// encodeForget is the cmdForget body.
func encodeForget(id uint64) []byte {
	return binary.AppendUvarint(nil, id)
}

func decodeForget(p []byte) (uint64, error) {
	id, w := binary.Uvarint(p)
	if w <= 0 || w != len(p) || id == 0 {
		return 0, fmt.Errorf("forget command: bad id: %w", errBadCommand)
	}
	return id, nil
}

func decodeHash(p []byte) (uint64, error) {
	if len(p) != 8 {
		return 0, fmt.Errorf("hash command: body of %d bytes: %w", len(p), errBadCommand)
	}
	return binary.LittleEndian.Uint64(p), nil
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

// seqKey is the metadata key of a proposer's seqState.
func seqKey(proposer uint64) []byte {
	k := append([]byte(nil), seqKeyPrefix...)
	return binary.BigEndian.AppendUint64(k, proposer)
}

// seqState is what a state machine remembers of one proposer: the next
// seq it will apply, and the index of the last entry from the proposer
// (proposers silent for seqRetainEntries entries are forgotten).
//
// A proposal applies only when its seq is exactly next: a lower seq was
// applied already (a retry), a higher one means an earlier proposal is
// still missing, and the proposer re-sends from there. A proposal's floor
// first raises next past the seqs its proposer gave up on. So every
// proposal applies at most once, and a proposer's proposals apply in seq
// order, whatever retries and leader changes did to the log.
type seqState struct {
	next, last uint64
}

func (s seqState) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, s.next)
	return binary.BigEndian.AppendUint64(b, s.last)
}

func decodeSeqState(p []byte) (seqState, error) {
	if len(p) != 16 {
		return seqState{}, fmt.Errorf("proposer state of %d bytes: %w", len(p), errBadCommand)
	}
	return seqState{next: binary.BigEndian.Uint64(p[:8]), last: binary.BigEndian.Uint64(p[8:])}, nil
}

// lsmBatchHeaderLen is the size of an lsm batch repr's header: the sequence
// number (u64) and the operation count (u32), little-endian, as documented
// on lsm.Batch. The records after it can be concatenated across batches.
const lsmBatchHeaderLen = 12

// batchMerger builds a cmdWrite command from the reprs of several batches by
// concatenating their records under one header.
type batchMerger struct {
	buf   []byte
	count uint32
}

// reset starts a command with header h (its kind must be cmdWrite), in a
// buffer with room for size more bytes.
func (m *batchMerger) reset(h cmdHeader, size int) {
	m.buf = appendHeader(make([]byte, 0, cmdHeaderLen+lsmBatchHeaderLen+size), h)
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

// command returns the finished command, which the merger gives up.
func (m *batchMerger) command() []byte {
	binary.LittleEndian.PutUint32(m.buf[cmdHeaderLen+8:cmdHeaderLen+lsmBatchHeaderLen], m.count)
	b := m.buf
	m.buf = nil
	return b
}
