package codec

import "bytes"

// splitInline splits a RESP inline command line into arguments exactly as
// Redis 7's sdssplitargs does, so that redis-benchmark's PING_INLINE and
// hand-typed telnet sessions behave as against Redis:
//
//   - arguments are separated by runs of C isspace characters;
//   - an unquoted argument ends at ' ', '\t', '\r', '\n' (so '\v' and '\f'
//     inside it are kept);
//   - "double quotes" undo \xHH, \n, \r, \t, \b, \a and \<any>;
//     'single quotes' undo only \';
//   - a quote may start inside an argument (ab"cd" is abcd), but a closing
//     quote must be followed by a space or the end of the line, and an
//     unclosed quote is an error;
//   - the line is a C string to Redis, so a NUL byte ends it.
//
// Arguments without quotes alias line; the others are built in scratch,
// which is grown once, before its first use, to len(line) so that it never
// moves while earlier arguments point into it. It returns args and scratch
// for reuse.
func splitInline(line []byte, args [][]byte, scratch []byte, maxArgs int) ([][]byte, []byte, error) {
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	var out []byte // in scratch, once an argument with quotes is met
	sized := false
	p := 0
	for {
		for p < len(line) && isSpace(line[p]) {
			p++
		}
		if p == len(line) {
			return args, scratch, nil
		}
		if len(args) == maxArgs {
			return args, scratch, errInlineTooMany
		}

		// Fast path: a plain word aliases the line.
		start := p
		for p < len(line) && !endsWord(line[p]) && line[p] != '"' && line[p] != '\'' {
			p++
		}
		if p == len(line) || endsWord(line[p]) {
			args = append(args, line[start:p:p])
			continue
		}

		// A quote: redo this argument the slow way, in scratch.
		if !sized {
			if cap(scratch) < len(line) {
				scratch = make([]byte, 0, len(line))
			}
			out = scratch[:0]
			sized = true
		}
		tok := len(out)
		out = append(out, line[start:p]...)
		var err error
		if p, out, err = quotedWord(line, p, out); err != nil {
			return args, scratch, err
		}
		args = append(args, out[tok:len(out):len(out)])
	}
}

// quotedWord continues an argument at line[p], which is a quote, following
// sdssplitargs step by step, and appends its bytes to out. It returns the
// offset after the argument.
func quotedWord(line []byte, p int, out []byte) (int, []byte, error) {
	inq, insq := false, false
	for done := false; !done; {
		c := byteAt(line, p)
		switch {
		case inq:
			switch {
			case c == '\\' && byteAt(line, p+1) == 'x' && isHex(byteAt(line, p+2)) && isHex(byteAt(line, p+3)):
				out = append(out, unhex(line[p+2])<<4|unhex(line[p+3]))
				p += 3
			case c == '\\' && byteAt(line, p+1) != 0:
				p++
				out = append(out, cEscape(line[p]))
			case c == '"':
				if next := byteAt(line, p+1); next != 0 && !isSpace(next) {
					return p, out, errInlineQuotes
				}
				done = true
			case c == 0:
				return p, out, errInlineQuotes
			default:
				out = append(out, c)
			}
		case insq:
			switch {
			case c == '\\' && byteAt(line, p+1) == '\'':
				p++
				out = append(out, '\'')
			case c == '\'':
				if next := byteAt(line, p+1); next != 0 && !isSpace(next) {
					return p, out, errInlineQuotes
				}
				done = true
			case c == 0:
				return p, out, errInlineQuotes
			default:
				out = append(out, c)
			}
		default:
			switch {
			case c == 0 || endsWord(c):
				done = true
			case c == '"':
				inq = true
			case c == '\'':
				insq = true
			default:
				out = append(out, c)
			}
		}
		if p < len(line) {
			p++
		}
	}
	return p, out, nil
}

// byteAt returns line[i], or NUL past the end, as reading a C string would.
func byteAt(line []byte, i int) byte {
	if i < len(line) {
		return line[i]
	}
	return 0
}

// isSpace is C's isspace in the "C" locale.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// endsWord reports whether c ends an unquoted argument in sdssplitargs.
func endsWord(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// cEscape maps the character after a '\' inside double quotes.
func cEscape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}
