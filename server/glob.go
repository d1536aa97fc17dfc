package server

// maxGlobPattern bounds a SCAN MATCH or CONFIG GET pattern. Matching costs
// up to len(pattern)·len(s) steps on the event loop (see globMatch), so a
// pattern may not be as long as a frame.
const maxGlobPattern = 1024

// globMatch reports whether s matches the Redis-style glob pattern: '*'
// (any run), '?' (one byte), '[abc]', '[^a-z]' (classes) and '\x' (literal).
//
// It backtracks only to the last '*' seen: everything a match through an
// earlier '*' could do, the last one can do too, so its cost is at most
// len(pattern)·len(s) steps. (A recursive matcher that retries every '*'
// is exponential: `*a*a*a*a*a*a*a*a*a*a*a*a*b` against a 60-byte key held
// an event loop for good.)
func globMatch(pattern, s []byte) bool {
	p, i := 0, 0
	starP, starI := -1, 0 // pattern index after the last '*', and where s resumed then
	for i < len(s) {
		if p < len(pattern) && pattern[p] == '*' {
			for p < len(pattern) && pattern[p] == '*' {
				p++
			}
			if p == len(pattern) {
				return true
			}
			starP, starI = p, i
			continue
		}
		if p < len(pattern) {
			if width, ok := globToken(pattern[p:], s[i]); ok {
				p += width
				i++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' take one more byte and retry what follows it.
		starI++
		p, i = starP, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// globToken matches the pattern's first token (not '*') against c and
// returns the token's width in the pattern.
func globToken(pattern []byte, c byte) (width int, ok bool) {
	switch pattern[0] {
	case '?':
		return 1, true
	case '[':
		p := pattern[1:]
		negate := len(p) > 0 && p[0] == '^'
		if negate {
			p = p[1:]
		}
		matched := false
		for len(p) > 0 && p[0] != ']' {
			switch {
			case p[0] == '\\' && len(p) > 1:
				matched = matched || p[1] == c
				p = p[2:]
			case len(p) > 2 && p[1] == '-' && p[2] != ']':
				lo, hi := p[0], p[2]
				if lo > hi {
					lo, hi = hi, lo
				}
				matched = matched || lo <= c && c <= hi
				p = p[3:]
			default:
				matched = matched || p[0] == c
				p = p[1:]
			}
		}
		if len(p) > 0 { // the closing ']'
			p = p[1:]
		}
		return len(pattern) - len(p), matched != negate
	case '\\':
		if len(pattern) > 1 {
			return 2, pattern[1] == c
		}
	}
	return 1, pattern[0] == c
}
