package sstable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// compressor compresses the blocks of one Writer, reusing its zstd encoder
// and output buffer across blocks (building an encoder costs far more than
// compressing a 4 KiB block).
type compressor struct {
	typ  Compression
	zenc *zstd.Encoder
	buf  []byte
}

func newCompressor(typ Compression) (*compressor, error) {
	c := &compressor{typ: typ}
	switch typ {
	case NoCompression, S2:
	case Zstd:
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			// One encoder state per Writer: a Writer compresses one block
			// at a time, and every extra state holds its own history.
			zstd.WithEncoderConcurrency(1),
			// The block trailer's CRC32C already covers the bytes.
			zstd.WithEncoderCRC(false),
		)
		if err != nil {
			return nil, fmt.Errorf("new zstd encoder: %w", err)
		}
		c.zenc = enc
	default:
		return nil, fmt.Errorf("sstable writer: unknown compression %d", uint8(typ))
	}
	return c, nil
}

// compress returns the bytes to store for raw and their compression type.
// It stores raw as is when compressing would not save at least an eighth,
// since every read of a compressed block pays for decompression. The result
// is valid until the next call.
func (c *compressor) compress(raw []byte) ([]byte, Compression) {
	if c.typ == NoCompression || len(raw) == 0 {
		return raw, NoCompression
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(raw)))
	var out []byte
	switch c.typ {
	case S2:
		need := n + s2.MaxEncodedLen(len(raw))
		if cap(c.buf) < need {
			c.buf = make([]byte, need)
		}
		enc := s2.Encode(c.buf[n:need], raw)
		copy(c.buf, hdr[:n])
		out = c.buf[:n+len(enc)]
	case Zstd:
		out = c.zenc.EncodeAll(raw, append(c.buf[:0], hdr[:n]...))
		c.buf = out[:0]
	default:
		return raw, NoCompression
	}
	if len(out) > len(raw)-len(raw)/8 {
		return raw, NoCompression
	}
	return out, c.typ
}

func (c *compressor) close() {
	if c.zenc != nil {
		c.zenc.Close()
		c.zenc = nil
	}
}

// zstdDecoder is shared by every Reader of the process: it is safe for
// concurrent DecodeAll calls (up to GOMAXPROCS at once), and one decoder
// per table would cost memory for nothing. It is built on first use and
// never changes afterwards.
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxMemory(maxBlockSize),
		// Decode into exactly the buffer sized from the block's own length
		// prefix; a frame claiming more is damaged.
		zstd.WithDecodeAllCapLimit(true),
	)
})

var errDecompress = errors.New("bad compressed block")

// decompress returns the raw block for a stored block of type typ. For a
// compressed block the result is a new allocation the caller may keep; for
// NoCompression it is stored itself, so a caller that reuses stored's
// buffer copies it first.
func decompress(typ Compression, stored []byte) ([]byte, error) {
	if typ == NoCompression {
		return stored, nil
	}
	rawLen, n := binary.Uvarint(stored)
	if n <= 0 || rawLen > maxBlockSize {
		return nil, fmt.Errorf("%w: bad raw length", errDecompress)
	}
	src := stored[n:]
	raw := make([]byte, rawLen)
	switch typ {
	case S2:
		dl, err := s2.DecodedLen(src)
		if err != nil || uint64(dl) != rawLen {
			return nil, fmt.Errorf("%w: s2 length does not match", errDecompress)
		}
		out, err := s2.Decode(raw, src)
		if err != nil || len(out) != len(raw) {
			return nil, fmt.Errorf("%w: s2: %v", errDecompress, err)
		}
		return out, nil
	case Zstd:
		dec, err := zstdDecoder()
		if err != nil {
			return nil, fmt.Errorf("zstd decoder: %w", err)
		}
		out, err := dec.DecodeAll(src, raw[:0])
		if err != nil || len(out) != len(raw) {
			return nil, fmt.Errorf("%w: zstd: %v", errDecompress, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown compression type %d", errDecompress, uint8(typ))
}
