package sstable

import (
	"encoding/binary"
	"errors"

	"github.com/kvstore/kv/lsm/internal/base"
)

// Meta describes a finished table.
type Meta struct {
	// Size is the file size in bytes.
	Size int64
	// Smallest and Largest are the first and last internal keys (nil for a
	// table with no entries). Slices returned by Reader.Meta must not be
	// modified.
	Smallest, Largest []byte
	// Entries counts every entry; Deletions counts the tombstones among them.
	Entries   int64
	Deletions int64
}

// properties is the content of the properties block.
type properties struct {
	entries, deletions uint64
	dataBlocks         uint64
	compression        Compression
	smallest, largest  []byte
}

func (p *properties) encode() []byte {
	var b []byte
	b = binary.AppendUvarint(b, p.entries)
	b = binary.AppendUvarint(b, p.deletions)
	b = binary.AppendUvarint(b, p.dataBlocks)
	b = binary.AppendUvarint(b, uint64(p.compression))
	b = binary.AppendUvarint(b, uint64(len(p.smallest)))
	b = append(b, p.smallest...)
	b = binary.AppendUvarint(b, uint64(len(p.largest)))
	return append(b, p.largest...)
}

var errProperties = errors.New("bad properties block")

// decodeProperties parses a properties block; the keys alias b.
func decodeProperties(b []byte) (properties, error) {
	var p properties
	bad := false
	next := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	bytesField := func() []byte {
		n := next()
		if n > uint64(len(b)) {
			bad = true
			return nil
		}
		v := b[:n:n]
		b = b[n:]
		return v
	}
	p.entries = next()
	p.deletions = next()
	p.dataBlocks = next()
	comp := next()
	p.smallest = bytesField()
	p.largest = bytesField()
	switch {
	case bad || len(b) != 0:
		return properties{}, errProperties
	case p.entries > 1<<62 || p.deletions > p.entries || comp > uint64(Zstd):
		return properties{}, errProperties
	case p.entries > 0 && (len(p.smallest) < base.TrailerLen || len(p.largest) < base.TrailerLen):
		return properties{}, errProperties
	case p.entries > 0 && base.Compare(p.smallest, p.largest) > 0:
		return properties{}, errProperties
	}
	p.compression = Compression(comp)
	return p, nil
}
