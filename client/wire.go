package client

import (
	"bytes"
	"strconv"

	"github.com/kvstore/kv/codec"
)

// appendRequest appends one request line: cmd (a protocol keyword, which
// needs no escaping) then each argument escaped.
func appendRequest(dst []byte, cmd string, args ...[]byte) []byte {
	dst = append(dst, cmd...)
	for _, a := range args {
		dst = append(dst, '|')
		dst = codec.AppendPipeEscaped(dst, a)
	}
	return append(dst, '\n')
}

func appendEscaped(dst, field []byte) []byte { return codec.AppendPipeEscaped(dst, field) }

func appendFields(dst []byte, fields [][]byte) []byte { return codec.AppendPipe(dst, fields...) }

// replyError converts an ERROR reply into a *ServerError. A message that
// itself held '|' arrives escaped as one field; more fields are rejoined.
func replyError(f [][]byte) error {
	if len(f) == 0 || string(f[0]) != "ERROR" {
		return nil
	}
	return &ServerError{Msg: string(bytes.Join(f[1:], []byte("|")))}
}

// expect checks for a one-field reply equal to want.
func expect(cmd string, f [][]byte, want string) error {
	if err := replyError(f); err != nil {
		return err
	}
	if len(f) != 1 || string(f[0]) != want {
		return unexpected(cmd, f)
	}
	return nil
}

func unexpected(cmd string, f [][]byte) error {
	return &ReplyError{Cmd: cmd, Reply: string(bytes.Join(f, []byte("|")))}
}

// parseGet handles VALUE|v or NOT_FOUND.
func parseGet(f [][]byte) ([]byte, error) {
	if err := replyError(f); err != nil {
		return nil, err
	}
	switch {
	case len(f) == 2 && string(f[0]) == "VALUE":
		return append([]byte{}, f[1]...), nil
	case len(f) == 1 && string(f[0]) == "NOT_FOUND":
		return nil, ErrNotFound
	}
	return nil, unexpected("GET", f)
}

// parseCounted checks a reply of the form NAME|n|item1|...|itemN*per and
// returns the items.
func parseCounted(cmd string, f [][]byte, per int) ([][]byte, error) {
	if len(f) < 2 || string(f[0]) != cmd {
		return nil, unexpected(cmd, f)
	}
	n, err := strconv.Atoi(string(f[1]))
	if err != nil || n < 0 || len(f)-2 != n*per {
		return nil, unexpected(cmd, f)
	}
	return f[2:], nil
}

// parseRange handles RANGE|n|k1|v1|...; the pairs share one allocation.
func parseRange(f [][]byte) ([]KV, error) {
	if err := replyError(f); err != nil {
		return nil, err
	}
	items, err := parseCounted("RANGE", f, 2)
	if err != nil {
		return nil, err
	}
	c := copyFields(items)
	kvs := make([]KV, len(c)/2)
	for i := range kvs {
		kvs[i] = KV{Key: c[2*i], Value: c[2*i+1]}
	}
	return kvs, nil
}

// copyFields copies fields into one new backing array. Each field is
// capped at its length, so appending to one cannot overwrite the next.
func copyFields(f [][]byte) [][]byte {
	total := 0
	for _, b := range f {
		total += len(b)
	}
	buf := make([]byte, 0, total)
	out := make([][]byte, len(f))
	for i, b := range f {
		start := len(buf)
		buf = append(buf, b...)
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out
}
