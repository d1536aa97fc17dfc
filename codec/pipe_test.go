package codec

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func ok(fields ...string) frame { return frame{fields: fields} }
func fail(msg string) frame     { return frame{err: msg} }

func TestPipeDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []frame
	}{
		// Every request and reply shape of PROTOCOL.md §1.
		{"ping", "PING\n", []frame{ok("PING")}},
		{"put", "PUT|key|value\n", []frame{ok("PUT", "key", "value")}},
		{"put empty value", "PUT|k|\n", []frame{ok("PUT", "k", "")}},
		{"get", "GET|key\n", []frame{ok("GET", "key")}},
		{"delete", "DELETE|key\n", []frame{ok("DELETE", "key")}},
		{"range", "RANGE|a|z\n", []frame{ok("RANGE", "a", "z")}},
		{"range open end", "RANGE|a|\n", []frame{ok("RANGE", "a", "")}},
		{"range limit", "RANGE|a||10\n", []frame{ok("RANGE", "a", "", "10")}},
		{"batch", "BATCH|k1|v1|k2|v2\n", []frame{ok("BATCH", "k1", "v1", "k2", "v2")}},
		{"auth", "AUTH|password\n", []frame{ok("AUTH", "password")}},
		{"cluster status", "CLUSTER_STATUS\n", []frame{ok("CLUSTER_STATUS")}},
		{"cluster nodes", "CLUSTER_NODES\n", []frame{ok("CLUSTER_NODES")}},
		{"cluster leader", "CLUSTER_LEADER|key\n", []frame{ok("CLUSTER_LEADER", "key")}},
		{"cluster join", "CLUSTER_JOIN|4|127.0.0.1:7004|127.0.0.1:8083\n",
			[]frame{ok("CLUSTER_JOIN", "4", "127.0.0.1:7004", "127.0.0.1:8083")}},
		{"cluster remove", "CLUSTER_REMOVE|4\n", []frame{ok("CLUSTER_REMOVE", "4")}},
		{"quit", "QUIT\n", []frame{ok("QUIT")}},
		{"reply pong", "PONG\n", []frame{ok("PONG")}},
		{"reply ok", "OK\n", []frame{ok("OK")}},
		{"reply value", "VALUE|value\n", []frame{ok("VALUE", "value")}},
		{"reply empty value", "VALUE|\n", []frame{ok("VALUE", "")}},
		{"reply not found", "NOT_FOUND\n", []frame{ok("NOT_FOUND")}},
		{"reply range", "RANGE|2|k1|v1|k2|v2\n", []frame{ok("RANGE", "2", "k1", "v1", "k2", "v2")}},
		{"reply batch", "OK|2\n", []frame{ok("OK", "2")}},
		{"reply error", "ERROR|unknown command 'FOO'\n", []frame{ok("ERROR", "unknown command 'FOO'")}},
		{"reply status", "CLUSTER_STATUS|mode=standalone|state=healthy|node_id=1|nodes=1|nodes_up=1|shards=1|shards_with_leader=1\n",
			[]frame{ok("CLUSTER_STATUS", "mode=standalone", "state=healthy", "node_id=1", "nodes=1", "nodes_up=1", "shards=1", "shards_with_leader=1")}},
		{"reply nodes", "CLUSTER_NODES|1|id=1,client=127.0.0.1:8080,raft=127.0.0.1:7001,state=up\n",
			[]frame{ok("CLUSTER_NODES", "1", "id=1,client=127.0.0.1:8080,raft=127.0.0.1:7001,state=up")}},
		{"reply leader", "CLUSTER_LEADER|id=2,client=127.0.0.1:8081\n", []frame{ok("CLUSTER_LEADER", "id=2,client=127.0.0.1:8081")}},

		// Escapes.
		{"escaped pipe", `PUT|a\|b|c` + "\n", []frame{ok("PUT", "a|b", "c")}},
		{"escaped backslash", `PUT|a\\b|c` + "\n", []frame{ok("PUT", `a\b`, "c")}},
		{"escaped newline", `PUT|k|line1\nline2` + "\n", []frame{ok("PUT", "k", "line1\nline2")}},
		{"escaped cr", `PUT|k|a\rb` + "\n", []frame{ok("PUT", "k", "a\rb")}},
		{"escaped nul", `PUT|k|a\0b` + "\n", []frame{ok("PUT", "k", "a\x00b")}},
		{"only escapes", `\|\\\n\r\0` + "\n", []frame{ok("|\\\n\r\x00")}},
		{"escaped backslash before pipe", `a\\|b` + "\n", []frame{ok(`a\`, "b")}},
		{"escaped cr at end before crlf", `a\r` + "\r\n", []frame{ok("a\r")}},
		{"escapes in every field", `\||\\|\n` + "\n", []frame{ok("|", `\`, "\n")}},
		{"escaped empty fields around", `|\||` + "\n", []frame{ok("", "|", "")}},
		{"bad escape", `PUT|k|a\xb` + "\n", []frame{fail("bad escape sequence")}},
		{"bad escape t", `GET|\t` + "\n", []frame{fail("bad escape sequence")}},
		{"lone backslash at end", `GET|k\` + "\n", []frame{fail("bad escape sequence")}},
		{"lone backslash before crlf", `GET|k\` + "\r\n", []frame{fail("bad escape sequence")}},
		{"lone backslash field", `GET|\` + "\n", []frame{fail("bad escape sequence")}},
		{"bad escape then good line", `GET|\q` + "\nPING\n", []frame{fail("bad escape sequence"), ok("PING")}},

		// Raw bytes that are not special stay as they are.
		{"raw nul and cr inside", "PUT|k|a\x00b\rc\n", []frame{ok("PUT", "k", "a\x00b\rc")}},
		{"high bytes", "PUT|\xff\xfe|\x80\n", []frame{ok("PUT", "\xff\xfe", "\x80")}},

		// Framing.
		{"crlf", "GET|key\r\n", []frame{ok("GET", "key")}},
		{"only the last cr is dropped", "GET|key\r\r\n", []frame{ok("GET", "key\r")}},
		{"empty line", "\n", []frame{ok()}},
		{"empty crlf line", "\r\n", []frame{ok()}},
		{"lone pipe", "|\n", []frame{ok("", "")}},
		{"empty lines between", "\nPING\n\r\nGET|a\n", []frame{ok(), ok("PING"), ok(), ok("GET", "a")}},
		{"pipelined", "PUT|a|1\nGET|a\nDELETE|a\n", []frame{ok("PUT", "a", "1"), ok("GET", "a"), ok("DELETE", "a")}},
		{"incomplete", "GET|key", nil},
		{"incomplete after complete", "PING\nGET|ke", []frame{ok("PING")}},
		{"cr without lf is data", "GET|a\rb\n", []frame{ok("GET", "a\rb")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.in)
			got := feed(t, new(PipeDecoder), data, feedMode{})
			sameFrames(t, "whole", got, tt.want)
			got = feed(t, new(PipeDecoder), data, feedMode{copyBuf: true, release: true}, everyByte(len(data))...)
			sameFrames(t, "byte by byte", got, tt.want)
		})
	}
}

func TestPipeDecodeLimits(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		in   string
		want []frame
	}{
		{"line of MaxFrame bytes", Limits{MaxFrame: 8}, "GET|abcd\n", []frame{ok("GET", "abcd")}},
		{"line over MaxFrame", Limits{MaxFrame: 8}, "GET|abcde\n", []frame{fail("request too large")}},
		{"over MaxFrame without newline", Limits{MaxFrame: 8}, "GET|abcde", []frame{fail("request too large")}},
		{"MaxFrame buffered without newline is incomplete", Limits{MaxFrame: 8}, "GET|abcd", nil},
		{"line of MaxFrame bytes ended by CRLF", Limits{MaxFrame: 8}, "GET|abcd\r\nPING\n", []frame{ok("GET", "abcd"), ok("PING")}},
		{"MaxFrame bytes and a CR is incomplete", Limits{MaxFrame: 8}, "GET|abcd\r", nil},
		{"CR after MaxFrame bytes, then more", Limits{MaxFrame: 8}, "GET|abcd\rx\n", []frame{fail("request too large")}},
		{"line over MaxFrame ended by CRLF", Limits{MaxFrame: 8}, "GET|abcde\r\n", []frame{fail("request too large")}},
		{"too large after good line", Limits{MaxFrame: 8}, "PING\nGET|abcdefgh", []frame{ok("PING"), fail("request too large")}},
		{"max fields", Limits{MaxArgs: 3}, "A|B|C\n", []frame{ok("A", "B", "C")}},
		{"too many fields", Limits{MaxArgs: 3}, "A|B|C|D\nPING\n", []frame{fail("too many fields"), ok("PING")}},
		{"too many escaped fields", Limits{MaxArgs: 3}, `A|\||C|D` + "\nPING\n", []frame{fail("too many fields"), ok("PING")}},
		{"max escaped fields", Limits{MaxArgs: 3}, `A|\||C` + "\n", []frame{ok("A", "|", "C")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.in)
			got := feed(t, NewPipeDecoder(tt.lim), data, feedMode{})
			sameFrames(t, "whole", got, tt.want)
			got = feed(t, NewPipeDecoder(tt.lim), data, feedMode{copyBuf: true, ignoreNeed: true}, everyByte(len(data))...)
			sameFrames(t, "byte by byte", got, tt.want)
		})
	}
}

func TestPipeDecodeErrorKinds(t *testing.T) {
	tests := []struct {
		in    string
		lim   Limits
		msg   string
		fatal bool
		n     int
	}{
		{"GET|\\q\nPING\n", Limits{}, "bad escape sequence", false, 7},
		{"A|B|C\n", Limits{MaxArgs: 2}, "too many fields", false, 6},
		{"AAAAAAAAA", Limits{MaxFrame: 8}, "request too large", true, 0},
	}
	for _, tt := range tests {
		_, n, err := NewPipeDecoder(tt.lim).Decode([]byte(tt.in))
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Msg != tt.msg || pe.Fatal != tt.fatal || err.Error() != tt.msg || n != tt.n {
			t.Errorf("Decode(%q) = n %d, err %#v; want n %d, %q fatal=%v", tt.in, n, err, tt.n, tt.msg, tt.fatal)
		}
	}
}

// TestPipeDecodeDefaultFrameLimit checks the 32 MiB default on the zero
// value: one byte more without a newline is fatal at once.
func TestPipeDecodeDefaultFrameLimit(t *testing.T) {
	var d PipeDecoder
	buf := bytes.Repeat([]byte("a"), DefaultMaxFrame)
	if _, n, err := d.Decode(buf); n != 0 || err != nil {
		t.Fatalf("Decode(32 MiB) = %d, %v; want incomplete", n, err)
	}
	buf = append(buf, 'a')
	if _, _, err := d.Decode(buf); err != errTooLarge {
		t.Fatalf("Decode(32 MiB + 1) = %v; want %v", err, errTooLarge)
	}
}

func TestPipeDecodeAliasing(t *testing.T) {
	var d PipeDecoder
	buf := []byte("PUT|key|value\n")
	fields, _, err := d.Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range fields {
		if len(f) > 0 && !inside(f, buf) {
			t.Errorf("field %d %q does not alias the input", i, f)
		}
		if cap(f) != len(f) {
			t.Errorf("field %d has spare capacity %d: appending to it would overwrite the next", i, cap(f)-len(f))
		}
	}

	buf = []byte(`PUT|k\|ey|va\nlue|x` + "\n")
	fields, _, err = d.Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := fieldStrings(fields); strings.Join(got, ",") != "PUT,k|ey,va\nlue,x" {
		t.Fatalf("fields = %q", got)
	}
	for i, f := range fields {
		if cap(f) != len(f) {
			t.Errorf("escaped field %d has spare capacity %d", i, cap(f)-len(f))
		}
	}
	// Appending to one field must not disturb its neighbour.
	_ = append(fields[1], "XXXX"...)
	if string(fields[2]) != "va\nlue" {
		t.Errorf("appending to field 1 changed field 2 to %q", fields[2])
	}
}

func inside(sub, buf []byte) bool {
	if len(sub) == 0 {
		return false
	}
	for i := range buf {
		if &buf[i] == &sub[0] {
			return true
		}
	}
	return false
}

// TestPipeDecodeNeed checks that a partial line is never rescanned: Need
// grows with what was buffered, and a decoder told to start over (a
// shorter buffer) does so.
func TestPipeDecodeNeed(t *testing.T) {
	var d PipeDecoder
	if d.Need() != 1 {
		t.Fatalf("fresh Need() = %d, want 1", d.Need())
	}
	data := []byte("PUT|key|value\n")
	for i := 1; i < len(data); i++ {
		if _, n, err := d.Decode(data[:i]); n != 0 || err != nil {
			t.Fatalf("Decode(%q) = %d, %v", data[:i], n, err)
		}
		if d.Need() != i+1 {
			t.Fatalf("after %d bytes Need() = %d, want %d", i, d.Need(), i+1)
		}
	}
	if _, n, err := d.Decode(data); n != len(data) || err != nil {
		t.Fatalf("Decode(all) = %d, %v", n, err)
	}
	if d.Need() != 1 {
		t.Fatalf("Need() after a frame = %d, want 1", d.Need())
	}

	// A shorter buffer than already scanned means a new frame boundary.
	if _, n, _ := d.Decode([]byte("GET|abcdef")); n != 0 {
		t.Fatal("partial line consumed")
	}
	if fields, n, err := d.Decode([]byte("PING\n")); n != 5 || err != nil || string(fields[0]) != "PING" {
		t.Fatalf("after restart Decode = %q, %d, %v", fields, n, err)
	}
	d.Decode([]byte("GET|abcdef"))
	d.Reset()
	if d.Need() != 1 {
		t.Fatalf("Need() after Reset = %d", d.Need())
	}
}

func TestAppendPipe(t *testing.T) {
	tests := []struct {
		fields []string
		want   string
	}{
		{nil, "\n"},
		{[]string{""}, "\n"},
		{[]string{"PING"}, "PING\n"},
		{[]string{"PUT", "k", ""}, "PUT|k|\n"},
		{[]string{"PUT", "k", "v"}, "PUT|k|v\n"},
		{[]string{"a|b"}, `a\|b` + "\n"},
		{[]string{`a\b`}, `a\\b` + "\n"},
		{[]string{"a\nb"}, `a\nb` + "\n"},
		{[]string{"a\rb"}, `a\rb` + "\n"},
		{[]string{"a\x00b"}, `a\0b` + "\n"},
		{[]string{"|\\\n\r\x00"}, `\|\\\n\r\0` + "\n"},
		{[]string{"", ""}, "|\n"},
		{[]string{"VALUE", "x\xffy"}, "VALUE|x\xffy\n"},
	}
	for _, tt := range tests {
		bs := make([][]byte, len(tt.fields))
		for i, f := range tt.fields {
			bs[i] = []byte(f)
		}
		if got := string(AppendPipe([]byte("pre:"), bs...)); got != "pre:"+tt.want {
			t.Errorf("AppendPipe(%q) = %q, want %q", tt.fields, got, "pre:"+tt.want)
		}
		if got := string(AppendPipeStrings([]byte("pre:"), tt.fields...)); got != "pre:"+tt.want {
			t.Errorf("AppendPipeStrings(%q) = %q, want %q", tt.fields, got, "pre:"+tt.want)
		}
	}
	if got := string(AppendPipeEscaped([]byte("x"), []byte("a|b\n"))); got != `xa\|b\n` {
		t.Errorf("AppendPipeEscaped = %q", got)
	}
}
