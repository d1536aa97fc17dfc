package codec

// AppendPipe appends one pipe-protocol line: each field escaped, joined
// with '|', ended with '\n'.
//
// Zero fields and a single empty field both encode as an empty line, which
// a decoder reads back as zero fields.
func AppendPipe(dst []byte, fields ...[]byte) []byte {
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, '|')
		}
		dst = appendEscaped(dst, f)
	}
	return append(dst, '\n')
}

// AppendPipeStrings is AppendPipe for string fields.
func AppendPipeStrings(dst []byte, fields ...string) []byte {
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, '|')
		}
		dst = appendEscaped(dst, f)
	}
	return append(dst, '\n')
}

// AppendPipeEscaped appends one escaped field, with no separator or
// newline, for a caller that assembles a line piece by piece.
func AppendPipeEscaped(dst, field []byte) []byte { return appendEscaped(dst, field) }

// pipeEscape maps each byte the framing gives a meaning to to the letter
// that follows '\' in its escape, and every other byte to 0. '\r' and NUL
// are escaped too: a raw '\r' ending the last field would be taken for the
// CR of a CRLF, and NUL trips up line-oriented tools. Read-only.
var pipeEscape = [256]byte{'|': '|', '\\': '\\', '\n': 'n', '\r': 'r', 0: '0'}

func appendEscaped[T string | []byte](dst []byte, s T) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		esc := pipeEscape[s[i]]
		if esc == 0 {
			continue
		}
		dst = append(dst, s[start:i]...)
		dst = append(dst, '\\', esc)
		start = i + 1
	}
	return append(dst, s[start:]...)
}
