package codec

import "bytes"

// parseInt parses a decimal integer the way Redis's string2ll does: an
// optional '-', then either a lone "0" or a digit 1-9 followed by digits,
// with no other characters and no overflow. "-0", "+1", "01" and "" are
// rejected.
func parseInt(s []byte) (int64, bool) {
	if len(s) == 1 && s[0] == '0' {
		return 0, true
	}
	neg := false
	if len(s) > 0 && s[0] == '-' {
		neg = true
		s = s[1:]
	}
	if len(s) == 0 || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	// Accumulate as a negative number so that MinInt64 fits.
	const minInt64 = -1 << 63
	var v int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if v < (minInt64+d)/10 {
			return 0, false
		}
		v = v*10 - d
	}
	if !neg {
		if v == minInt64 {
			return 0, false
		}
		v = -v
	}
	return v, true
}

// headerStatus is the outcome of reading a RESP header line.
type headerStatus uint8

const (
	headerOK         headerStatus = iota
	headerIncomplete              // more bytes are needed
	headerBad                     // malformed; no more bytes can fix it
)

// parseHeader reads the integer that follows the type byte at buf[pos], up
// to and including its CRLF. It returns the value and the offset just past
// the CRLF. The line is short by construction, so rereading it after more
// bytes arrive costs O(1).
func parseHeader(buf []byte, pos int) (v int64, next int, st headerStatus) {
	start := pos + 1
	end := min(len(buf), start+maxHeaderDigits+2)
	if start >= end {
		return 0, 0, headerIncomplete
	}
	i := bytes.IndexByte(buf[start:end], '\n')
	if i < 0 {
		if end-start == maxHeaderDigits+2 {
			return 0, 0, headerBad
		}
		return 0, 0, headerIncomplete
	}
	i += start
	if i == start || buf[i-1] != '\r' {
		return 0, 0, headerBad
	}
	v, ok := parseInt(buf[start : i-1])
	if !ok {
		return 0, 0, headerBad
	}
	return v, i + 1, headerOK
}
