// Package base holds the vocabulary shared by the engine's layers: internal
// keys, their ordering, the internal iterator contract and the corruption
// error.
//
// An internal key is the user key followed by an 8-byte trailer,
// little-endian (seq<<8 | kind). Internal keys order by user key ascending,
// then by trailer descending, so the newest version of a key comes first and
// a seek to (key, snapshot seq, KindMax) lands on the newest version visible
// at that snapshot. Sequence numbers are 56 bits.
package base

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// Kind says what an internal key records.
type Kind uint8

const (
	// KindDelete is a tombstone: the key is absent at this sequence number.
	KindDelete Kind = 0
	// KindSet stores a value.
	KindSet Kind = 1
	// KindMax is the largest kind; seek keys use it so they sort before
	// every real entry with the same user key and sequence number.
	KindMax Kind = KindSet
)

// TrailerLen is the size of the (seq, kind) trailer of an internal key.
const TrailerLen = 8

// MaxSeq is the largest sequence number a trailer can hold.
const MaxSeq = uint64(1)<<56 - 1

// ErrCorruption is wrapped by every error that reports damaged on-disk data
// (bad checksum, impossible length, bad magic). Callers test with errors.Is.
var ErrCorruption = errors.New("corruption")

// ErrWouldBlock is returned by reads told not to wait for the disk when
// they would have to (a block in neither the block cache nor the OS page
// cache, or a table not open yet).
var ErrWouldBlock = errors.New("read would wait for the disk")

// MakeTrailer packs a sequence number and kind.
func MakeTrailer(seq uint64, kind Kind) uint64 { return seq<<8 | uint64(kind) }

// AppendKey appends the internal key for (ukey, seq, kind) to dst.
func AppendKey(dst, ukey []byte, seq uint64, kind Kind) []byte {
	dst = append(dst, ukey...)
	return binary.LittleEndian.AppendUint64(dst, MakeTrailer(seq, kind))
}

// MakeSearchKey returns the internal key that sorts before every version of
// ukey visible at snapshot seq, and after every newer version.
func MakeSearchKey(ukey []byte, seq uint64) []byte {
	return AppendKey(make([]byte, 0, len(ukey)+TrailerLen), ukey, seq, KindMax)
}

// Split separates an internal key into its user key and trailer. ok is false
// when ikey is too short to be an internal key.
func Split(ikey []byte) (ukey []byte, trailer uint64, ok bool) {
	n := len(ikey) - TrailerLen
	if n < 0 {
		return nil, 0, false
	}
	return ikey[:n:n], binary.LittleEndian.Uint64(ikey[n:]), true
}

// UserKey returns the user-key part of an internal key (ikey must be valid).
func UserKey(ikey []byte) []byte {
	n := len(ikey) - TrailerLen
	return ikey[:n:n]
}

// Trailer returns the trailer of an internal key (ikey must be valid).
func Trailer(ikey []byte) uint64 {
	return binary.LittleEndian.Uint64(ikey[len(ikey)-TrailerLen:])
}

// SeqNum extracts the sequence number from a trailer.
func SeqNum(trailer uint64) uint64 { return trailer >> 8 }

// KindOf extracts the kind from a trailer.
func KindOf(trailer uint64) Kind { return Kind(trailer & 0xff) }

// Compare orders internal keys: user key ascending, then trailer descending.
// Both arguments must be valid internal keys (at least TrailerLen bytes).
func Compare(a, b []byte) int {
	ua, ub := UserKey(a), UserKey(b)
	if c := bytes.Compare(ua, ub); c != 0 {
		return c
	}
	ta, tb := Trailer(a), Trailer(b)
	switch {
	case ta > tb:
		return -1
	case ta < tb:
		return 1
	}
	return 0
}

// Iterator is the contract of every internal iterator (memtable, sstable,
// merging, level). Keys are internal keys in Compare order. Key and Value
// stay valid until the next positioning call (SeekGE, First, Next) or Close;
// a caller that keeps them longer copies them.
type Iterator interface {
	// SeekGE positions at the first entry whose internal key is >= ikey.
	SeekGE(ikey []byte)
	// First positions at the first entry.
	First()
	// Next advances; only valid when Valid() is true.
	Next()
	// Valid reports whether the iterator is positioned at an entry. It is
	// false at the end and after an error.
	Valid() bool
	Key() []byte
	Value() []byte
	// Err returns the first error met (for example ErrCorruption); an
	// iterator that errs becomes invalid.
	Err() error
	// Close releases resources and returns Err.
	Close() error
}
