package codec

import "bytes"

// maxReplyDepth bounds the nesting of arrays in a reply. Our server nests
// at most two levels (SCAN); hiredis stops at 7.
const maxReplyDepth = 64

// Reply is one decoded RESP2 reply.
type Reply struct {
	Type  byte    // '+', '-', ':', '$', '*'
	Str   []byte  // simple string, error text, or bulk (aliases input; valid until next Decode)
	Int   int64   // ':' replies
	Null  bool    // $-1 or *-1
	Elems []Reply // arrays (nested); valid until next Decode
}

// ReplyDecoder decodes RESP2 replies on the client side (Go client,
// kvbench). Pipe-protocol replies share the request framing: use a
// PipeDecoder for those.
//
// A reply in progress is kept as a flat list of parsed nodes, in order,
// holding offsets rather than slices, plus a stack of how many elements
// each open array still lacks; the next call resumes at the first
// unparsed byte. Only when the reply is complete is the tree of Replies
// built, in a slice the decoder reuses. Zero value: default Limits.
type ReplyDecoder struct {
	lim Limits

	pos   int         // bytes of the reply parsed so far
	scan  int         // for a '+'/'-' line in progress: bytes known to hold no '\n'
	need  int         // bytes needed before Decode can make progress; 0 = 1
	seen  int         // len(buf) when Decode last asked for more bytes
	nodes []replyNode // complete nodes, in order
	open  []int       // elements still missing, per open array

	flat []Reply // backing store of every Elems
	used int     // entries of flat handed out by build
}

// replyNode is a parsed reply without its children.
type replyNode struct {
	typ        byte
	null       bool
	start, end int   // Str, as offsets into the input
	n          int64 // Int, or the element count of an array
}

// NewReplyDecoder returns a decoder enforcing l: MaxFrame bounds a whole
// reply, MaxBulk one bulk, MaxArgs the number of values nested in a reply
// (all levels together).
func NewReplyDecoder(l Limits) *ReplyDecoder { return &ReplyDecoder{lim: l} }

// Reset forgets any partial reply.
func (d *ReplyDecoder) Reset() {
	d.pos, d.scan, d.need, d.seen = 0, 0, 0, 0
	d.nodes = d.nodes[:0]
	d.open = d.open[:0]
}

// Need returns how many bytes, counted from the reply boundary, must be
// buffered before Decode can make progress.
func (d *ReplyDecoder) Need() int { return max(d.need, 1) }

// Decode decodes one reply from buf, which holds all bytes buffered so far
// starting at a reply boundary. n == 0 with a nil error means more bytes
// are needed. The reply's slices alias buf and the decoder's own storage:
// they are valid until the next Decode call or until buf changes. Every
// error is a fatal *ProtocolError.
func (d *ReplyDecoder) Decode(buf []byte) (r Reply, n int, err error) {
	switch {
	case len(buf) < d.seen:
		d.Reset() // the caller started over at another reply boundary
	case len(buf) < d.need:
		return Reply{}, 0, nil
	}
	if cap(d.flat) > maxRetainedFields {
		d.flat = nil
	}
	if len(d.nodes) == 0 && cap(d.nodes) > maxRetainedFields {
		// Only between replies: a pending reply's nodes are its progress.
		d.nodes = nil
	}
	maxFrame, maxBulk, maxArgs := d.lim.maxFrame(), d.lim.maxBulk(), d.lim.maxArgs()
	for {
		if err := d.parseNode(buf, maxFrame, maxBulk); err != nil {
			d.Reset()
			return Reply{}, 0, err
		}
		if d.need > 0 {
			d.seen = len(buf)
			return Reply{}, 0, nil
		}
		if len(d.nodes)-1 > maxArgs { // the values inside the outermost one
			d.Reset()
			return Reply{}, 0, errReplyTooMany
		}
		last := d.nodes[len(d.nodes)-1]
		if last.typ == '*' && !last.null && last.n > 0 {
			if len(d.open) == maxReplyDepth {
				d.Reset()
				return Reply{}, 0, errReplyTooDeep
			}
			d.open = append(d.open, int(last.n))
			continue
		}
		// A value is complete: it may complete its array, and so on up.
		for len(d.open) > 0 {
			top := len(d.open) - 1
			d.open[top]--
			if d.open[top] > 0 {
				break
			}
			d.open = d.open[:top]
		}
		if len(d.open) == 0 {
			break
		}
	}

	if cap(d.flat) < len(d.nodes) {
		d.flat = make([]Reply, len(d.nodes))
	}
	d.flat = d.flat[:len(d.nodes)]
	d.used = 0
	r, _ = d.build(buf, 0)
	n = d.pos
	d.Reset()
	return r, n, nil
}

// parseNode parses the value at d.pos and appends it to d.nodes. If the
// value is not all there yet, it sets d.need instead and leaves d.pos.
func (d *ReplyDecoder) parseNode(buf []byte, maxFrame, maxBulk int) error {
	d.need = 0
	pos := d.pos
	if pos >= len(buf) {
		d.need = pos + 1
		return nil
	}
	switch t := buf[pos]; t {
	case '+', '-':
		from := max(d.scan, pos+1)
		end := min(len(buf), maxFrame)
		i := -1
		if from < end {
			if j := bytes.IndexByte(buf[from:end], '\n'); j >= 0 {
				i = from + j
			}
		}
		if i < 0 {
			if len(buf) >= maxFrame {
				return errReplyTooLarge
			}
			d.scan = len(buf)
			d.need = len(buf) + 1
			return nil
		}
		// Simple strings and errors hold no CR or LF; a CR anywhere but
		// right before the LF means the line is not what it seems.
		if i-1 < pos+1 || buf[i-1] != '\r' || bytes.IndexByte(buf[pos+1:i-1], '\r') >= 0 {
			return errReplyLine
		}
		d.scan = 0
		d.nodes = append(d.nodes, replyNode{typ: t, start: pos + 1, end: i - 1})
		d.pos = i + 1
		return nil

	case ':', '$', '*':
		v, next, st := parseHeader(buf, pos)
		switch st {
		case headerIncomplete:
			d.need = len(buf) + 1
			return nil
		case headerBad:
			switch t {
			case ':':
				return errReplyInt
			case '$':
				return errBulkLen
			}
			return errMultibulkLen
		}
		if next > maxFrame {
			return errReplyTooLarge
		}
		nd := replyNode{typ: t, n: v}
		switch t {
		case '$':
			if v == -1 {
				nd.null = true
				break
			}
			if v < 0 || v > int64(maxBulk) {
				return errBulkLen
			}
			end := next + int(v)
			if int64(next)+v+2 > int64(maxFrame) {
				return errReplyTooLarge
			}
			if end+2 > len(buf) {
				d.need = end + 2
				return nil
			}
			if buf[end] != '\r' || buf[end+1] != '\n' {
				return errBulkCRLF
			}
			nd.start, nd.end = next, end
			next = end + 2
		case '*':
			if v == -1 {
				nd.null = true
				break
			}
			if v < 0 || v > int64(d.lim.maxArgs()) {
				return errMultibulkLen
			}
		}
		d.nodes = append(d.nodes, nd)
		d.pos = next
		return nil
	default:
		return unexpectedReplyType(t)
	}
}

// build turns d.nodes[i] and its descendants into a Reply. The elements of
// an array take consecutive entries of d.flat, which was sized for every
// node before the first call, so it never moves under earlier Elems.
func (d *ReplyDecoder) build(buf []byte, i int) (Reply, int) {
	nd := d.nodes[i]
	i++
	r := Reply{Type: nd.typ, Null: nd.null}
	switch nd.typ {
	case '+', '-', '$':
		if !nd.null {
			r.Str = buf[nd.start:nd.end:nd.end]
		}
	case ':':
		r.Int = nd.n
	case '*':
		if nd.null {
			break
		}
		k := int(nd.n)
		elems := d.flat[d.used : d.used+k : d.used+k]
		d.used += k
		for j := range elems {
			elems[j], i = d.build(buf, i)
		}
		r.Elems = elems
	}
	return r, i
}
