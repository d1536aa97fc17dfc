package codec

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// frame is one outcome of Decode in a comparable form: the fields of a
// request (nil for an empty one) or the message of an error.
type frame struct {
	fields []string
	err    string
}

func (f frame) String() string {
	s := "error " + f.err
	if f.err == "" {
		s = fmt.Sprintf("%q", f.fields)
	}
	if len(s) > 200 {
		s = fmt.Sprintf("%s...(%d bytes)", s[:200], len(s))
	}
	return s
}

func framesString(fs []frame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String())
		b.WriteString("\n")
	}
	return b.String()
}

// requestDecoder is what PipeDecoder and RESPDecoder have in common.
type requestDecoder interface {
	Decode(buf []byte) ([][]byte, int, error)
	Need() int
	Release()
}

func fieldStrings(fields [][]byte) []string {
	if len(fields) == 0 {
		return nil
	}
	s := make([]string, len(fields))
	for i, f := range fields {
		s[i] = string(f)
	}
	return s
}

// feedMode says how feed hands bytes to a decoder.
type feedMode struct {
	copyBuf    bool // hand over a fresh copy each call, as gnet's Peek may
	ignoreNeed bool // call Decode even when fewer than Need bytes are there
	release    bool // call Release after each prefix, as a server waiting for more input does
}

// feed makes data visible to dec one prefix at a time (the cuts, then all
// of it), decoding as much as each prefix allows, and returns every frame
// and error in order. It checks the Decode contract on the way: n within
// the buffer, n > 0 for a non-fatal error, Need beyond the buffer when more
// bytes are asked for, and decoding stops at a fatal error.
func feed(t testing.TB, dec requestDecoder, data []byte, mode feedMode, cuts ...int) []frame {
	t.Helper()
	var out []frame
	off := 0
	for _, cut := range append(cuts, len(data)) {
		cut = max(cut, off)
		for {
			buf := data[off:cut]
			if !mode.ignoreNeed && len(buf) < dec.Need() {
				break
			}
			if mode.copyBuf {
				buf = append([]byte(nil), buf...)
			}
			fields, n, err := dec.Decode(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("Decode(%q) consumed %d of %d bytes", buf, n, len(buf))
			}
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("Decode(%q) error %v is not a *ProtocolError", buf, err)
				}
				out = append(out, frame{err: pe.Msg})
				if pe.Fatal {
					return out
				}
				if n == 0 {
					t.Fatalf("Decode(%q): non-fatal error %q consumed nothing", buf, pe.Msg)
				}
				off += n
				continue
			}
			if n == 0 {
				if dec.Need() <= len(buf) {
					t.Fatalf("Decode(%q) wants more bytes but Need() = %d", buf, dec.Need())
				}
				break
			}
			out = append(out, frame{fields: fieldStrings(fields)})
			off += n
		}
		if mode.release {
			dec.Release()
		}
	}
	return out
}

// replyString renders a reply compactly and unambiguously.
func replyString(r Reply) string {
	switch r.Type {
	case '+', '-':
		return fmt.Sprintf("%c%q", r.Type, r.Str)
	case ':':
		return fmt.Sprintf(":%d", r.Int)
	case '$':
		if r.Null {
			return "$nil"
		}
		return fmt.Sprintf("$%q", r.Str)
	case '*':
		if r.Null {
			return "*nil"
		}
		parts := make([]string, len(r.Elems))
		for i, e := range r.Elems {
			parts[i] = replyString(e)
		}
		return "*[" + strings.Join(parts, " ") + "]"
	}
	return fmt.Sprintf("?%q", r.Type)
}

// feedReplies is feed for a ReplyDecoder; each frame holds one rendered
// reply.
func feedReplies(t testing.TB, dec *ReplyDecoder, data []byte, mode feedMode, cuts ...int) []frame {
	t.Helper()
	var out []frame
	off := 0
	for _, cut := range append(cuts, len(data)) {
		cut = max(cut, off)
		for {
			buf := data[off:cut]
			if !mode.ignoreNeed && len(buf) < dec.Need() {
				break
			}
			if mode.copyBuf {
				buf = append([]byte(nil), buf...)
			}
			r, n, err := dec.Decode(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("Decode(%q) consumed %d of %d bytes", buf, n, len(buf))
			}
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) || !pe.Fatal {
					t.Fatalf("Decode(%q) error %#v is not a fatal *ProtocolError", buf, err)
				}
				return append(out, frame{err: pe.Msg})
			}
			if n == 0 {
				if dec.Need() <= len(buf) {
					t.Fatalf("Decode(%q) wants more bytes but Need() = %d", buf, dec.Need())
				}
				break
			}
			out = append(out, frame{fields: []string{replyString(r)}})
			off += n
		}
	}
	return out
}

// everyByte returns the cuts 1, 2, ..., n-1.
func everyByte(n int) []int {
	cuts := make([]int, 0, n)
	for i := 1; i < n; i++ {
		cuts = append(cuts, i)
	}
	return cuts
}

func sameFrames(t testing.TB, what string, got, want []frame) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\ngot\n%swant\n%s", what, framesString(got), framesString(want))
	}
}
