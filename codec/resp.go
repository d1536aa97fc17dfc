package codec

import "bytes"

// RESPDecoder frames and splits RESP2 requests the way Redis 7 does: a
// request starting with '*' is an array of bulk strings, anything else is
// an inline command line (see splitInline).
//
// For an array in progress it keeps the offset parsed so far and the
// (start, end) offsets of the arguments already complete, never slices:
// the next call may hand it a different slice holding the same bytes plus
// more. After the header of a large bulk it knows exactly how many bytes
// are missing (Need), so the caller can wait without rescanning. A
// RESPDecoder belongs to one connection; the zero value uses the default
// Limits.
type RESPDecoder struct {
	lim Limits

	// Partial array: want > 0 while one is pending.
	want int   // number of arguments announced by *N
	pos  int   // bytes of the frame consumed by complete headers and bulks
	offs []int // start, end of each complete argument
	need int   // bytes needed before Decode can make progress; 0 = 1
	seen int   // len(buf) when Decode last asked for more bytes

	// Partial inline line: bytes known to hold no '\n'.
	scanned int

	args    [][]byte
	scratch []byte // inline arguments that had quotes
	// dirty counts the entries of args, from the start, that may still
	// alias a buffer handed to Decode (Release clears them).
	dirty int
}

// isRESPType reports whether c opens a RESP2 or RESP3 value other than an
// array: no inline command starts with one.
func isRESPType(c byte) bool {
	switch c {
	case '+', '-', ':', '$', '_', ',', '#', '!', '=', '(', '%', '~', '>', '|':
		return true
	}
	return false
}

// NewRESPDecoder returns a decoder enforcing l.
func NewRESPDecoder(l Limits) *RESPDecoder { return &RESPDecoder{lim: l} }

// Reset forgets any partial request, for a caller that starts again at a
// new frame boundary without having completed the pending one.
func (d *RESPDecoder) Reset() {
	d.want, d.pos, d.need, d.seen, d.scanned = 0, 0, 0, 0, 0
	d.offs = d.offs[:0]
}

// Need returns how many bytes, counted from the frame boundary, must be
// buffered before Decode can make progress. After the header of a bulk it
// is the end of that bulk and its CRLF.
func (d *RESPDecoder) Need() int { return max(d.need, 1) }

// Decode decodes one request from buf, which holds all bytes buffered so
// far starting at a frame boundary. It returns the arguments and the number
// of bytes consumed; n == 0 with a nil error means more bytes are needed.
// "*0\r\n" and blank inline lines are consumed with zero arguments. Every
// negative count, "*-1\r\n" included, is a protocol error: PROTOCOL.md
// says so of negative lengths (Redis skips "*-1" as a null array, which no
// client sends as a request).
//
// Arguments alias buf, or the decoder's scratch buffer for inline arguments
// with quotes; they are valid until the next Decode call or until buf
// changes. Every error is a fatal *ProtocolError worded as Redis words it.
func (d *RESPDecoder) Decode(buf []byte) (args [][]byte, n int, err error) {
	if cap(d.args) > maxRetainedFields {
		d.args, d.dirty = nil, 0
	}
	if d.want == 0 && cap(d.offs) > 2*maxRetainedFields {
		// Only between requests: a pending array's offsets are its
		// progress (dropping them stalled any array of more than ~60K
		// arguments that arrived in more than one read).
		d.offs = nil
	}
	switch {
	case len(buf) < d.seen:
		d.Reset() // the caller started over at another frame boundary
	case len(buf) < d.need:
		return nil, 0, nil
	}
	if len(buf) == 0 {
		return nil, 0, nil
	}
	if buf[0] != '*' {
		if isRESPType(buf[0]) {
			// A reply or RESP3 type where a request must be an array:
			// PROTOCOL.md's "bad type byte" (Redis would run it inline).
			return nil, 0, expected('*', buf[0])
		}
		d.want, d.pos = 0, 0
		d.offs = d.offs[:0]
		return d.decodeInline(buf)
	}
	d.scanned = 0
	return d.decodeArray(buf)
}

func (d *RESPDecoder) decodeArray(buf []byte) ([][]byte, int, error) {
	if d.want == 0 {
		d.Reset()
		count, next, st := parseHeader(buf, 0)
		switch st {
		case headerIncomplete:
			return d.incomplete(buf, len(buf)+1)
		case headerBad:
			return nil, 0, errMultibulkLen
		}
		if count == 0 {
			return d.args[:0], next, nil
		}
		if count < 0 || count > int64(d.lim.maxArgs()) {
			return nil, 0, errMultibulkLen
		}
		d.want, d.pos = int(count), next
	}

	maxFrame, maxBulk := d.lim.maxFrame(), d.lim.maxBulk()
	for len(d.offs) < 2*d.want {
		pos := d.pos
		if pos >= len(buf) {
			return d.incomplete(buf, pos+1)
		}
		if buf[pos] != '$' {
			d.Reset()
			return nil, 0, expectedDollar(buf[pos])
		}
		// The header is at most a few bytes, so rereading it when the
		// bulk is still incomplete costs nothing; Need keeps the caller
		// from calling again before the whole bulk is there.
		size, next, st := parseHeader(buf, pos)
		switch st {
		case headerIncomplete:
			return d.incomplete(buf, len(buf)+1)
		case headerBad:
			d.Reset()
			return nil, 0, errBulkLen
		}
		if size < 0 || size > int64(maxBulk) || int64(next)+size+2 > int64(maxFrame) {
			d.Reset()
			return nil, 0, errBulkLen
		}
		end := next + int(size)
		if end+2 > len(buf) {
			return d.incomplete(buf, end+2)
		}
		if buf[end] != '\r' || buf[end+1] != '\n' {
			d.Reset()
			return nil, 0, errBulkCRLF
		}
		d.offs = append(d.offs, next, end)
		d.pos = end + 2
	}

	args := d.args[:0]
	for i := 0; i < len(d.offs); i += 2 {
		s, e := d.offs[i], d.offs[i+1]
		args = append(args, buf[s:e:e])
	}
	d.args = args
	d.dirty = max(d.dirty, len(args))
	n := d.pos
	d.Reset()
	return args, n, nil
}

// Release drops the decoder's references to the buffers it decoded from,
// for a caller that is done with the arguments Decode returned and is
// going to wait for more input. The arguments alias the caller's buffer,
// and the decoder keeps its argument slice for the next request: without
// Release the last request, up to MaxFrame bytes of it (or the larger
// buffer holding it), stays reachable for as long as the connection is
// idle (40 idle connections that had each sent one 30 MiB SET held
// 960 MB). Storage grown past what is worth keeping goes too. A request
// in progress is kept: its progress is offsets, not slices.
func (d *RESPDecoder) Release() {
	clear(d.args[:d.dirty])
	d.dirty = 0
	if cap(d.args) > maxRetainedFields {
		d.args = nil
	}
	if cap(d.scratch) > maxRetainedScratch {
		d.scratch = nil
	}
	if d.want == 0 && cap(d.offs) > 2*maxRetainedFields {
		d.offs = nil
	}
}

// incomplete records that Decode needs need bytes and has seen all of buf.
func (d *RESPDecoder) incomplete(buf []byte, need int) ([][]byte, int, error) {
	d.seen, d.need = len(buf), need
	return nil, 0, nil
}

func (d *RESPDecoder) decodeInline(buf []byte) ([][]byte, int, error) {
	limit := min(maxInline, d.lim.maxFrame())
	from := d.scanned
	end := min(len(buf), limit+1)
	i := -1
	if from < end {
		if j := bytes.IndexByte(buf[from:end], '\n'); j >= 0 {
			i = from + j
		}
	}
	if i < 0 {
		if len(buf) > limit {
			d.Reset()
			return nil, 0, errInlineTooBig
		}
		d.scanned = len(buf)
		return d.incomplete(buf, len(buf)+1)
	}
	d.Reset()
	line := buf[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if cap(d.scratch) > maxRetainedScratch {
		d.scratch = nil
	}
	args, scratch, err := splitInline(line, d.args[:0], d.scratch, d.lim.maxArgs())
	d.args, d.scratch = args[:0], scratch
	d.dirty = max(d.dirty, len(args))
	if err != nil {
		return nil, 0, err
	}
	return args, i + 1, nil
}
