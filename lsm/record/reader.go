package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kvstore/kv/lsm/internal/base"
)

// readBufSize is the Reader's initial buffer; it grows to hold the largest
// record met.
const readBufSize = 64 << 10

// Reader returns the payloads of a log in order.
//
// It streams: memory is bounded by the largest record, except when it meets
// a damaged record, where it reads the rest of the log into memory to decide
// between a torn tail and corruption (see the package comment), in time
// linear in what remains (damage.go).
//
// Next ends with exactly one of:
//   - io.EOF: the log ends exactly after the last record (unwrapped, so
//     callers may compare with ==);
//   - an error wrapping ErrTornTail: a torn final record or a zero-filled
//     tail. Zero-filled space is reported this way too, not as io.EOF, so the
//     caller always truncates it: a writer appending after leftover zeros
//     would make the next recovery see intact records behind a zero header,
//     which is corruption;
//   - an error wrapping base.ErrCorruption: damage with intact records after
//     it;
//   - an I/O error from the underlying reader.
//
// The error is sticky. A Reader is not safe for concurrent use.
type Reader struct {
	r   io.Reader
	buf []byte // unread data is buf[pos:end]
	pos int
	end int
	// base is the log offset of buf[0].
	base int64
	eof  bool
	// good is the end offset of the last record returned.
	good int64
	err  error
}

// NewReader returns a Reader of the log r, starting at its first record.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, buf: make([]byte, readBufSize)}
}

// Offset returns the end offset of the last record Next returned (0 before
// the first): the length to truncate the log to after ErrTornTail, and
// where the damage starts after a corruption error.
func (r *Reader) Offset() int64 { return r.good }

// Next returns the next payload. It aliases the Reader's buffer and stays
// valid until the next call.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if err := r.fill(HeaderLen); err != nil {
		return nil, r.fail(err)
	}
	avail := r.end - r.pos
	if avail == 0 {
		r.err = io.EOF
		return nil, r.err
	}
	if avail < HeaderLen {
		return nil, r.damaged("truncated header")
	}
	n := binary.LittleEndian.Uint32(r.buf[r.pos+4:])
	if n > MaxPayload {
		return nil, r.damaged(fmt.Sprintf("impossible length %d", n))
	}
	total := HeaderLen + int(n)
	if err := r.fill(total); err != nil {
		return nil, r.fail(err)
	}
	if r.end-r.pos < total {
		return nil, r.damaged(fmt.Sprintf("%d-byte record truncated at %d bytes", total, r.end-r.pos))
	}
	rec := r.buf[r.pos : r.pos+total]
	if binary.LittleEndian.Uint32(rec) != recordCRC(rec[4:8], rec[HeaderLen:]) {
		if binary.LittleEndian.Uint64(rec) == 0 {
			return nil, r.damaged("zero-filled header")
		}
		return nil, r.damaged("checksum mismatch")
	}
	r.pos += total
	r.good = r.base + int64(r.pos)
	return rec[HeaderLen:total:total], nil
}

func (r *Reader) fail(err error) error {
	r.err = fmt.Errorf("record: read log at offset %d: %w", r.base+int64(r.end), err)
	return r.err
}

// fill reads until at least n bytes are buffered or the log ends. The
// buffer grows only as data arrives, so a damaged length field claiming a
// huge record cannot make it allocate more than about twice the log's size.
func (r *Reader) fill(n int) error {
	for stalls := 0; r.end-r.pos < n && !r.eof; {
		if r.end == len(r.buf) {
			if r.pos > 0 {
				copy(r.buf, r.buf[r.pos:r.end])
				r.base += int64(r.pos)
				r.end -= r.pos
				r.pos = 0
			}
			if r.end == len(r.buf) {
				grown := make([]byte, max(len(r.buf)+1, min(2*len(r.buf), n)))
				copy(grown, r.buf[:r.end])
				r.buf = grown
			}
		}
		m, err := r.r.Read(r.buf[r.end:])
		r.end += m
		switch {
		case errors.Is(err, io.EOF):
			r.eof = true
		case err != nil:
			return err
		case m == 0:
			if stalls++; stalls > 100 {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// damaged classifies the damaged record starting at r.pos and returns the
// sticky error: ErrTornTail when no intact record starts after its first
// byte, corruption otherwise.
func (r *Reader) damaged(reason string) error {
	start := r.base + int64(r.pos)
	// Reading to the end is bounded by the log's size; the damage path runs
	// at most once per Reader.
	if err := r.fill(int(^uint(0) >> 1)); err != nil {
		return r.fail(err)
	}
	rest := r.buf[r.pos:r.end]
	if p, ok := findIntact(rest, 1); ok {
		r.err = fmt.Errorf("record: %s at offset %d, intact record follows at offset %d: %w",
			reason, start, start+int64(p), base.ErrCorruption)
		return r.err
	}
	r.err = fmt.Errorf("%w: %s at offset %d (%d bytes to end of log)", ErrTornTail, reason, start, len(rest))
	return r.err
}
