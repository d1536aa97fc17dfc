// Package record frames the payloads of an append-only log (the WAL and the
// manifest) so that a reader can tell whole records from the debris a crash
// leaves behind.
//
// A log is a sequence of records, each an 8-byte header followed by the
// payload:
//
//	masked CRC-32C (u32 LE) | payload length (u32 LE) | payload
//
// The CRC (Castagnoli) covers the four length bytes and the payload, and is
// masked as LevelDB masks it, so a log stored as a payload of another log
// does not produce self-consistent checksums. Payloads are at most
// MaxPayload bytes. Unlike LevelDB there are no 32 KiB blocks: records are
// contiguous and never fragmented.
//
// Invariants:
//   - A payload is returned by Reader.Next only after its CRC has checked.
//   - The writer never writes a record with a length above MaxPayload, and an
//     all-zero header is never a valid record (the masked CRC of an empty
//     payload is not zero), so zero-filled (preallocated or lost) space is
//     always recognised as "no record".
//   - Damage is classified, never skipped. A damaged record (short header,
//     impossible length, payload running past the end, CRC mismatch) is a
//     torn tail (ErrTornTail) when no intact record starts anywhere after
//     the damaged record's first byte: that is what a crash in the middle of
//     an append leaves, including a tail of zeros. When an intact record does
//     follow, data the writer wrote later survives behind the damage, so the
//     error wraps base.ErrCorruption and the caller must not truncate.
//
// The rule deliberately looks for surviving records instead of trusting the
// damaged record's length field: a flipped bit in a length can make a
// middle record appear to run past the end of the file (which would
// otherwise be mistaken for a torn tail and silently drop the rest of the
// log), or make the last record appear to end early (which would otherwise
// be mistaken for mid-log corruption and make the log unreadable after an
// ordinary crash). Its one blind spot: a torn final record whose own payload
// happens to contain a byte-exact framed record of this format (a log stored
// as a value) is reported as corruption.
package record

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

const (
	// HeaderLen is the size of a record header.
	HeaderLen = 8
	// MaxPayload is the largest payload a record may carry (1 GiB).
	MaxPayload = 1 << 30
)

var (
	// ErrTornTail reports that the log ends in an incomplete or damaged
	// record with nothing intact after it, or in zero-filled space: the
	// expected result of a crash during an append. The caller truncates the
	// log at Reader.Offset. Returned errors wrap it; test with errors.Is.
	ErrTornTail = errors.New("record: torn tail")
	// ErrTooLarge is returned by Writer.Append for a payload above
	// MaxPayload.
	ErrTooLarge = errors.New("record: payload too large")
)

// crcTable is read-only after initialisation; crc32 uses the SSE4.2/ARMv8
// instructions for the Castagnoli polynomial.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

const crcMaskDelta = 0xa282ead8

// mask rotates and offsets a CRC as LevelDB does, so that checksums computed
// over data that itself embeds checksums stay well distributed.
func mask(c uint32) uint32 { return (c>>15 | c<<17) + crcMaskDelta }

// recordCRC returns the masked checksum of a record whose header length
// field holds lenBytes and whose payload is payload.
func recordCRC(lenBytes, payload []byte) uint32 {
	c := crc32.Update(0, crcTable, lenBytes)
	return mask(crc32.Update(c, crcTable, payload))
}

// appendHeader appends the header of a record holding payload to dst.
func appendHeader(dst, payload []byte) []byte {
	h := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[h:], recordCRC(dst[h+4:h+8], payload))
	return dst
}

// intact reports whether b begins with a complete record whose checksum
// verifies, and returns that record's total length.
func intact(b []byte) (int, bool) {
	if len(b) < HeaderLen {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(b[4:8])
	if n > MaxPayload || uint64(n) > uint64(len(b)-HeaderLen) {
		return 0, false
	}
	end := HeaderLen + int(n)
	if binary.LittleEndian.Uint32(b[:4]) != recordCRC(b[4:8], b[HeaderLen:end]) {
		return 0, false
	}
	return end, true
}
