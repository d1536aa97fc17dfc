package codec

import (
	"strings"
	"testing"
)

func rep(s string) frame { return frame{fields: []string{s}} }

func TestReplyDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []frame
	}{
		{"simple", "+OK\r\n", []frame{rep(`+"OK"`)}},
		{"empty simple", "+\r\n", []frame{rep(`+""`)}},
		{"error", "-ERR unknown command 'FOO'\r\n", []frame{rep(`-"ERR unknown command 'FOO'"`)}},
		{"integer", ":42\r\n", []frame{rep(":42")}},
		{"negative integer", ":-7\r\n", []frame{rep(":-7")}},
		{"min integer", ":-9223372036854775808\r\n", []frame{rep(":-9223372036854775808")}},
		{"bulk", "$5\r\nhello\r\n", []frame{rep(`$"hello"`)}},
		{"binary bulk", "$4\r\n\r\n\x00\n\r\n", []frame{rep(`$"\r\n\x00\n"`)}},
		{"empty bulk", "$0\r\n\r\n", []frame{rep(`$""`)}},
		{"null bulk", "$-1\r\n", []frame{rep("$nil")}},
		{"null array", "*-1\r\n", []frame{rep("*nil")}},
		{"empty array", "*0\r\n", []frame{rep("*[]")}},
		{"config get save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n", []frame{rep(`*[$"save" $""]`)}},
		{"mget", "*3\r\n$1\r\na\r\n$-1\r\n$1\r\nc\r\n", []frame{rep(`*[$"a" $nil $"c"]`)}},
		{"scan", "*2\r\n$1\r\n0\r\n*2\r\n$2\r\nk1\r\n$2\r\nk2\r\n", []frame{rep(`*[$"0" *[$"k1" $"k2"]]`)}},
		{"nested mixed", "*3\r\n*1\r\n*0\r\n:1\r\n*2\r\n+a\r\n-b\r\n", []frame{rep(`*[*[*[]] :1 *[+"a" -"b"]]`)}},
		{"nested empty last", "*2\r\n:1\r\n*0\r\n", []frame{rep(`*[:1 *[]]`)}},
		{"pipelined", "+OK\r\n$-1\r\n:3\r\n", []frame{rep(`+"OK"`), rep("$nil"), rep(":3")}},
		{"incomplete", "*2\r\n$1\r\na\r\n", nil},
		{"incomplete line", "+PON", nil},

		{"bad type", "!x\r\n", []frame{fail("Protocol error: unexpected reply type '!'")}},
		{"simple lf only", "+OK\n", []frame{fail("Protocol error: expected CRLF at end of line")}},
		{"cr inside simple", "+O\rK\r\n", []frame{fail("Protocol error: expected CRLF at end of line")}},
		{"cr cr lf", "-\r\r\n", []frame{fail("Protocol error: expected CRLF at end of line")}},
		{"bad integer", ":4x\r\n", []frame{fail("Protocol error: invalid integer")}},
		{"empty integer", ":\r\n", []frame{fail("Protocol error: invalid integer")}},
		{"negative bulk", "$-2\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"bulk not a number", "$a\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"bulk too large", "$536870913\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"bulk without crlf", "$1\r\nab\r\n", []frame{fail("Protocol error: expected CRLF after bulk data")}},
		{"negative array", "*-2\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"array not a number", "*1a\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"array too large", "*1048577\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"error inside array", "*2\r\n:1\r\n%2\r\n", []frame{fail("Protocol error: unexpected reply type '%'")}},
		{"good then bad", "+OK\r\n&\r\n", []frame{rep(`+"OK"`), fail("Protocol error: unexpected reply type '&'")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkReplies(t, Limits{}, tt.in, tt.want)
		})
	}
}

func checkReplies(t *testing.T, lim Limits, in string, want []frame) {
	t.Helper()
	data := []byte(in)
	got := feedReplies(t, NewReplyDecoder(lim), data, feedMode{})
	sameFrames(t, "whole", got, want)
	got = feedReplies(t, NewReplyDecoder(lim), data, feedMode{copyBuf: true}, everyByte(len(data))...)
	sameFrames(t, "byte by byte", got, want)
	got = feedReplies(t, NewReplyDecoder(lim), data, feedMode{ignoreNeed: true}, everyByte(len(data))...)
	sameFrames(t, "byte by byte ignoring Need", got, want)
	for cut := 1; cut < len(data); cut++ {
		got = feedReplies(t, NewReplyDecoder(lim), data, feedMode{copyBuf: true}, cut)
		sameFrames(t, "split", got, want)
	}
}

func TestReplyDecodeLimits(t *testing.T) {
	deep := strings.Repeat("*1\r\n", maxReplyDepth) + ":1\r\n"
	tooDeep := strings.Repeat("*1\r\n", maxReplyDepth+1) + ":1\r\n"
	tests := []struct {
		name string
		lim  Limits
		in   string
		want []frame
	}{
		{"max depth", Limits{}, deep, []frame{rep(strings.Repeat("*[", maxReplyDepth) + ":1" + strings.Repeat("]", maxReplyDepth))}},
		{"too deep", Limits{}, tooDeep, []frame{fail("Protocol error: reply nested too deeply")}},
		{"max elements", Limits{MaxArgs: 3}, "*2\r\n*1\r\n:1\r\n:2\r\n", []frame{rep("*[*[:1] :2]")}},
		{"too many elements", Limits{MaxArgs: 3}, "*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n", []frame{fail("Protocol error: too many elements in reply")}},
		{"array over MaxArgs", Limits{MaxArgs: 3}, "*4\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"bulk over MaxBulk", Limits{MaxBulk: 2}, "$3\r\nabc\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"reply of MaxFrame bytes", Limits{MaxFrame: 9}, "$3\r\nabc\r\n", []frame{rep(`$"abc"`)}},
		{"bulk over MaxFrame", Limits{MaxFrame: 8}, "$3\r\nabc\r\n", []frame{fail("Protocol error: reply too large")}},
		{"line of MaxFrame bytes", Limits{MaxFrame: 6}, "+abc\r\n", []frame{rep(`+"abc"`)}},
		{"line over MaxFrame", Limits{MaxFrame: 6}, "+abcd\r\n", []frame{fail("Protocol error: reply too large")}},
		{"line over MaxFrame without newline", Limits{MaxFrame: 6}, "+abcde", []frame{fail("Protocol error: reply too large")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkReplies(t, tt.lim, tt.in, tt.want)
		})
	}
}

func TestReplyDecodeNeed(t *testing.T) {
	d := NewReplyDecoder(Limits{})
	in := []byte("*2\r\n$5\r\nhello\r\n$100000\r\n")
	if _, n, err := d.Decode(in); n != 0 || err != nil {
		t.Fatalf("Decode = %d, %v", n, err)
	}
	if want := len(in) + 100002; d.Need() != want {
		t.Fatalf("Need() = %d, want %d", d.Need(), want)
	}
	d.Reset()
	if d.Need() != 1 {
		t.Fatalf("Need() after Reset = %d", d.Need())
	}
	r, n, err := d.Decode([]byte("+OK\r\n"))
	if err != nil || n != 5 || string(r.Str) != "OK" {
		t.Fatalf("after Reset: %v, %d, %v", replyString(r), n, err)
	}
}

// TestReplyDecodeReuse checks that decoding a second reply does not
// corrupt the structure of a nested one built in the reused storage.
func TestReplyDecodeReuse(t *testing.T) {
	var d ReplyDecoder
	in := []byte("*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n:3\r\n")
	for range 3 {
		r, n, err := d.Decode(in)
		if err != nil || n != len(in) {
			t.Fatalf("Decode = %d, %v", n, err)
		}
		if got := replyString(r); got != "*[*[:1 :2] *[:3]]" {
			t.Fatalf("reply = %s", got)
		}
	}
}
