package main

import (
	"errors"
	"strconv"
	"strings"
)

// splitArgs splits a prompt line into arguments the way redis-cli does:
// blanks separate arguments; "double quotes" allow blanks and the escapes
// \" \\ \n \r \t \0 and \xHH; 'single quotes' take everything literally
// except \' for a quote. A quoted argument may be empty ("").
func splitArgs(line string) ([]string, error) {
	var args []string
	i := 0
	for {
		for i < len(line) && isBlank(line[i]) {
			i++
		}
		if i == len(line) {
			return args, nil
		}
		var b strings.Builder
		for i < len(line) && !isBlank(line[i]) {
			switch line[i] {
			case '"':
				n, err := readDouble(line[i+1:], &b)
				if err != nil {
					return nil, err
				}
				i += 1 + n
			case '\'':
				n, err := readSingle(line[i+1:], &b)
				if err != nil {
					return nil, err
				}
				i += 1 + n
			default:
				b.WriteByte(line[i])
				i++
			}
		}
		args = append(args, b.String())
	}
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

var errUnbalanced = errors.New("unbalanced quotes")

// readDouble reads a double-quoted string after its opening quote and
// returns the bytes consumed, including the closing quote.
func readDouble(s string, b *strings.Builder) (int, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			return i + 1, nil
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(s) {
			return 0, errUnbalanced
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case '0':
			b.WriteByte(0)
		case 'x':
			if i+2 >= len(s) {
				return 0, errors.New(`bad \x escape: want two hex digits`)
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return 0, errors.New(`bad \x escape: want two hex digits`)
			}
			b.WriteByte(byte(v))
			i += 2
		default: // \" \\ and anything else: the character itself
			b.WriteByte(s[i])
		}
	}
	return 0, errUnbalanced
}

// readSingle reads a single-quoted string after its opening quote.
func readSingle(s string, b *strings.Builder) (int, error) {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\'':
			return i + 1, nil
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '\'':
			b.WriteByte('\'')
			i++
		default:
			b.WriteByte(s[i])
		}
	}
	return 0, errUnbalanced
}
