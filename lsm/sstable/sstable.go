// Package sstable writes and reads sorted string tables: immutable files
// holding internal keys (lsm/internal/base) in base.Compare order with their
// values.
//
// File layout (format version 1):
//
//	data block 0 | ... | data block n-1 | filter block | properties block | index block | footer
//
// Every block is followed by a 5-byte trailer: the compression type byte and
// a masked CRC32C (Castagnoli, LevelDB's mask) over the stored block bytes
// and the type byte. A compressed block is uvarint(raw length) followed by
// the s2 or zstd encoding of the raw block.
//
// A raw data block is a sequence of entries
//
//	uvarint shared | uvarint unshared | uvarint vlen | key[shared:] | value
//
// where shared counts the bytes the key has in common with the previous
// key, followed by the restart array (u32 LE offsets of the entries stored
// with shared = 0, one every restartInterval entries) and its u32 LE length.
// The index block has the same format with every entry a restart point; its
// keys are separators (>= the last key of their data block and < the first
// key of the next) and its values uvarint(offset) | uvarint(length) of the
// data block. The filter block is one bloom filter over the table's user
// keys. The properties block holds what Meta reports.
//
// The footer is 64 bytes: the filter, properties and index block handles as
// u64 LE offset and length pairs (48 B), the u32 LE format version, a masked
// CRC32C over the rest of the footer, and the u64 LE magic number.
//
// Invariants: a Writer only produces strictly increasing keys and blocks no
// larger than maxBlockSize; a Reader verifies every checksum before it
// parses a block read from disk, bounds-checks every length it parses, and
// reports damage as an error wrapping base.ErrCorruption that names the file
// and the offset; it never panics on bad input and never returns bytes from
// a block that failed verification. Blocks handed to the cache, and values
// returned by Get, are fresh allocations that are never written again.
package sstable

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/kvstore/kv/lsm/internal/base"
)

// Compression selects how data blocks are compressed.
type Compression uint8

const (
	// NoCompression stores blocks raw.
	NoCompression Compression = iota
	// S2 compresses blocks with klauspost/compress/s2 (fast; the default).
	S2
	// Zstd compresses blocks with zstd at its fastest level (smaller).
	Zstd
)

func (c Compression) String() string {
	switch c {
	case NoCompression:
		return "none"
	case S2:
		return "s2"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

const (
	formatVersion = 1
	// magic ends every table: "KVSSTBL1" read as a little-endian u64.
	magic = 0x314c42545353564b
	// footerLen is the fixed size of the footer.
	footerLen = 64
	// blockTrailerLen is the compression type byte plus the masked CRC.
	blockTrailerLen = 5
	// restartInterval is the number of entries between restart points of a
	// data block.
	restartInterval = 16
	// maxBlockSize bounds a block's raw size. It lets a block hold one
	// entry with a value far larger than the 16 MiB the engine allows, and
	// keeps a damaged length from making a reader allocate without limit.
	maxBlockSize = 64 << 20

	defaultBlockSize       = 4096
	defaultBloomBitsPerKey = 10
)

// handle locates a block: its offset in the file and its stored length,
// trailer excluded.
type handle struct {
	offset, length uint64
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// maskCRC is LevelDB's CRC mask: a CRC computed over data that embeds CRCs
// is then unlikely to look like one of them.
func maskCRC(c uint32) uint32 { return (c>>15 | c<<17) + 0xa282ead8 }

// blockChecksum is the masked CRC32C stored in a block trailer.
func blockChecksum(block []byte, typ byte) uint32 {
	c := crc32.Update(0, crcTable, block)
	t := [1]byte{typ}
	return maskCRC(crc32.Update(c, crcTable, t[:]))
}

// footer is the decoded fixed-size tail of a table.
type footer struct {
	filter, props, index handle
	version              uint32
}

func (f footer) encode() []byte {
	b := make([]byte, footerLen)
	for i, h := range [3]handle{f.filter, f.props, f.index} {
		binary.LittleEndian.PutUint64(b[16*i:], h.offset)
		binary.LittleEndian.PutUint64(b[16*i+8:], h.length)
	}
	binary.LittleEndian.PutUint32(b[48:], f.version)
	binary.LittleEndian.PutUint64(b[56:], magic)
	binary.LittleEndian.PutUint32(b[52:], footerChecksum(b))
	return b
}

// footerChecksum covers every footer byte except the checksum itself.
func footerChecksum(b []byte) uint32 {
	c := crc32.Update(0, crcTable, b[:52])
	return maskCRC(crc32.Update(c, crcTable, b[56:footerLen]))
}

// decodeFooter parses and verifies a footer; the error text says what is
// wrong without the file name.
func decodeFooter(b []byte) (footer, error) {
	if len(b) != footerLen {
		return footer{}, fmt.Errorf("footer of %d bytes", len(b))
	}
	if m := binary.LittleEndian.Uint64(b[56:]); m != magic {
		return footer{}, fmt.Errorf("bad magic number %#x", m)
	}
	if got, want := binary.LittleEndian.Uint32(b[52:]), footerChecksum(b); got != want {
		return footer{}, fmt.Errorf("bad footer checksum")
	}
	var f footer
	hs := [3]*handle{&f.filter, &f.props, &f.index}
	for i, h := range hs {
		h.offset = binary.LittleEndian.Uint64(b[16*i:])
		h.length = binary.LittleEndian.Uint64(b[16*i+8:])
	}
	f.version = binary.LittleEndian.Uint32(b[48:])
	if f.version != formatVersion {
		return footer{}, fmt.Errorf("unsupported format version %d", f.version)
	}
	return f, nil
}

// validKind reports whether k is a kind this format stores.
func validKind(k base.Kind) bool { return k == base.KindSet || k == base.KindDelete }
