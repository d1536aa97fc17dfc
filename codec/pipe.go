package codec

import "bytes"

// PipeDecoder frames and splits pipe-protocol lines (PROTOCOL.md §1). The
// server uses it for requests and the Go client for replies, which share
// the framing.
//
// Between calls it remembers only how many bytes of the pending line have
// already been searched for '\n', so a line that arrives in many pieces is
// scanned once in total. A PipeDecoder belongs to one connection; the zero
// value uses the default Limits.
type PipeDecoder struct {
	lim Limits

	// scanned counts the bytes of the pending line known to hold no '\n'.
	scanned int

	fields  [][]byte // reused for every line
	scratch []byte   // unescaped fields, when a line has escapes
	// dirty counts the entries of fields, from the start, that may still
	// alias a buffer handed to Decode (Release clears them).
	dirty int
}

// NewPipeDecoder returns a decoder enforcing l.
func NewPipeDecoder(l Limits) *PipeDecoder { return &PipeDecoder{lim: l} }

// Reset forgets any partial line, for a caller that starts again at a new
// frame boundary without having completed the pending one.
func (d *PipeDecoder) Reset() { d.scanned = 0 }

// Need returns how many bytes, counted from the frame boundary, must be
// buffered before Decode can make progress.
func (d *PipeDecoder) Need() int { return d.scanned + 1 }

// Decode decodes one request from buf, which holds all bytes buffered so
// far starting at a frame boundary. It returns the fields and the number of
// bytes consumed; n == 0 with a nil error means more bytes are needed.
//
// Fields alias buf when no escape had to be undone, and the decoder's
// scratch buffer otherwise; they are valid until the next Decode call or
// until buf changes. An empty line is consumed with zero fields. A '\r'
// right before the '\n' is dropped.
//
// Errors are *ProtocolError: "bad escape sequence" and "too many fields"
// consume the line (n > 0) and are not fatal; "request too large" is fatal
// and is reported as soon as more than MaxFrame bytes are buffered without
// a newline.
func (d *PipeDecoder) Decode(buf []byte) (fields [][]byte, n int, err error) {
	if cap(d.scratch) > maxRetainedScratch {
		d.scratch = nil
	}
	if cap(d.fields) > maxRetainedFields {
		d.fields, d.dirty = nil, 0
	}
	maxFrame := d.lim.maxFrame()

	from := d.scanned
	if from > len(buf) {
		from = 0 // the caller restarted without telling us; rescan
	}
	// A line may hold up to maxFrame bytes before its terminator ("\n" or
	// "\r\n"), so looking two bytes further is enough to tell "too large"
	// from "incomplete".
	end := min(len(buf), maxFrame+2)
	i := -1
	if from < end {
		if j := bytes.IndexByte(buf[from:end], '\n'); j >= 0 {
			i = from + j
		}
	}
	if i < 0 {
		if overFrame(buf, len(buf), maxFrame) {
			d.scanned = 0
			return nil, 0, errTooLarge
		}
		d.scanned = len(buf)
		return nil, 0, nil
	}
	if overFrame(buf, i, maxFrame) {
		d.scanned = 0
		return nil, 0, errTooLarge
	}
	d.scanned = 0
	n = i + 1
	line := buf[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if len(line) == 0 {
		return d.fields[:0], n, nil
	}
	if bytes.IndexByte(line, '\\') < 0 {
		fields, err = d.split(line)
	} else {
		fields, err = d.unescape(line)
	}
	d.dirty = max(d.dirty, len(d.fields))
	if err != nil {
		return nil, n, err
	}
	return fields, n, nil
}

// Release drops the decoder's references to the buffers it decoded from,
// for a caller that is done with the fields Decode returned and is going
// to wait for more input: the fields alias the caller's buffer or the
// scratch buffer, and kept for the next line they would hold the last
// one, up to MaxFrame bytes, for as long as the connection is idle.
// Storage grown past what is worth keeping goes too.
func (d *PipeDecoder) Release() {
	clear(d.fields[:d.dirty])
	d.dirty = 0
	if cap(d.fields) > maxRetainedFields {
		d.fields = nil
	}
	if cap(d.scratch) > maxRetainedScratch {
		d.scratch = nil
	}
}

// overFrame reports whether the first n bytes of buf, a line without its
// '\n', hold more than maxFrame bytes besides a final '\r'.
func overFrame(buf []byte, n, maxFrame int) bool {
	if n > 0 && buf[n-1] == '\r' {
		n--
	}
	return n > maxFrame
}

// split cuts an escape-free line at each '|'; the fields alias the line.
func (d *PipeDecoder) split(line []byte) ([][]byte, error) {
	maxArgs := d.lim.maxArgs()
	fields := d.fields[:0]
	for {
		if len(fields) == maxArgs {
			d.fields = fields
			return nil, errTooManyFields
		}
		j := bytes.IndexByte(line, '|')
		if j < 0 {
			fields = append(fields, line[:len(line):len(line)])
			break
		}
		fields = append(fields, line[:j:j])
		line = line[j+1:]
	}
	d.fields = fields
	return fields, nil
}

// unescape splits a line holding at least one '\' and undoes its escapes
// into the scratch buffer. The scratch buffer is sized for the whole line
// up front, so appending never moves it and earlier fields stay valid.
func (d *PipeDecoder) unescape(line []byte) ([][]byte, error) {
	maxArgs := d.lim.maxArgs()
	if cap(d.scratch) < len(line) {
		d.scratch = make([]byte, 0, len(line))
	}
	out := d.scratch[:0]
	fields := d.fields[:0]
	defer func() { d.fields = fields }()

	// nb and np are the next '\' and '|' at or after p (len(line) if none);
	// each is searched for again only once p has passed it, so the line is
	// scanned once.
	p, start := 0, 0
	nb := indexFrom(line, p, '\\')
	np := indexFrom(line, p, '|')
	for {
		if np < nb { // field separator
			out = append(out, line[p:np]...)
			if len(fields) == maxArgs {
				return nil, errTooManyFields
			}
			fields = append(fields, out[start:len(out):len(out)])
			start = len(out)
			p = np + 1
			np = indexFrom(line, p, '|')
			continue
		}
		if nb == len(line) { // end of line
			out = append(out, line[p:]...)
			if len(fields) == maxArgs {
				return nil, errTooManyFields
			}
			fields = append(fields, out[start:len(out):len(out)])
			return fields, nil
		}
		out = append(out, line[p:nb]...)
		if nb+1 == len(line) {
			return nil, errBadEscape // lone '\' at the end
		}
		c, ok := unescapeByte(line[nb+1])
		if !ok {
			return nil, errBadEscape
		}
		out = append(out, c)
		p = nb + 2
		nb = indexFrom(line, p, '\\')
		if np < p {
			np = indexFrom(line, p, '|') // the '|' was escaped
		}
	}
}

// unescapeByte maps the character after a '\' to the byte it stands for.
func unescapeByte(c byte) (byte, bool) {
	switch c {
	case '|', '\\':
		return c, true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case '0':
		return 0, true
	}
	return 0, false
}

// indexFrom returns the index of the first c in b at or after from, or
// len(b) if there is none.
func indexFrom(b []byte, from int, c byte) int {
	if i := bytes.IndexByte(b[from:], c); i >= 0 {
		return from + i
	}
	return len(b)
}
