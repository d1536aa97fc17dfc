package codec

import (
	"math"
	"testing"
)

func TestRESPEncoders(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"command", AppendRESPCommand(nil, []byte("SET"), []byte("k"), []byte("")), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"},
		{"command no args", AppendRESPCommand(nil), "*0\r\n"},
		{"command binary", AppendRESPCommand(nil, []byte("GET"), []byte("a\r\nb")), "*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n"},
		{"simple", AppendSimple(nil, "OK"), "+OK\r\n"},
		{"simple newline", AppendSimple(nil, "a\r\nb"), "+a  b\r\n"},
		{"error", AppendError(nil, "ERR unknown command 'FOO'"), "-ERR unknown command 'FOO'\r\n"},
		{"error newlines", AppendError(nil, "ERR a\nb\rc\r\n"), "-ERR a b c  \r\n"},
		{"int", AppendInt(nil, 42), ":42\r\n"},
		{"int zero", AppendInt(nil, 0), ":0\r\n"},
		{"int min", AppendInt(nil, math.MinInt64), ":-9223372036854775808\r\n"},
		{"bulk", AppendBulk(nil, []byte("hello")), "$5\r\nhello\r\n"},
		{"bulk nil is empty", AppendBulk(nil, nil), "$0\r\n\r\n"},
		{"bulk string", AppendBulkString(nil, "a\x00b"), "$3\r\na\x00b\r\n"},
		{"null", AppendNull(nil), "$-1\r\n"},
		{"array header", AppendArrayHeader(nil, 2), "*2\r\n"},
		{"null array", AppendNullArray(nil), "*-1\r\n"},
		{"appends", AppendInt(AppendSimple([]byte("x"), "OK"), 1), "x+OK\r\n:1\r\n"},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestRESPEncodersDecode checks that every encoder's output is read back
// by the ReplyDecoder as what was encoded.
func TestRESPEncodersDecode(t *testing.T) {
	var b []byte
	b = AppendArrayHeader(b, 6)
	b = AppendSimple(b, "OK")
	b = AppendError(b, "ERR x\ny")
	b = AppendInt(b, -5)
	b = AppendBulkString(b, "v")
	b = AppendNull(b)
	b = AppendNullArray(b)
	b = AppendRESPCommand(b, []byte("GET"), []byte("k"))
	checkReplies(t, Limits{}, string(b), []frame{
		rep(`*[+"OK" -"ERR x y" :-5 $"v" $nil *nil]`),
		rep(`*[$"GET" $"k"]`),
	})
}
