package bench

import (
	"strconv"
	"strings"
	"testing"

	"github.com/kvstore/kv/codec"
)

func TestWireDecode(t *testing.T) {
	tests := []struct {
		proto Proto
		in    string
		kind  replyKind
		val   string
	}{
		{ProtoPipe, "OK\n", replyOK, ""},
		{ProtoPipe, "OK|10\n", replyCount, ""},
		{ProtoPipe, "VALUE|abc\n", replyValue, "abc"},
		{ProtoPipe, "VALUE|a\\|b\n", replyValue, "a|b"},
		{ProtoPipe, "VALUE|\n", replyValue, ""},
		{ProtoPipe, "NOT_FOUND\r\n", replyNotFound, ""},
		{ProtoPipe, "RANGE|1|k|v\n", replyRange, ""},
		{ProtoPipe, "RANGE|0\n", replyRange, ""},
		{ProtoPipe, "PONG\n", replyPong, ""},
		{ProtoPipe, "ERROR|timeout: outcome unknown\n", replyError, "timeout: outcome unknown"},
		{ProtoPipe, "\n", replySkip, ""},
		{ProtoPipe, "HELLO\n", replyOther, "HELLO"},
		{ProtoPipe, "VALUE\n", replyOther, "VALUE"},
		{ProtoRESP, "+OK\r\n", replyOK, ""},
		{ProtoRESP, "+PONG\r\n", replyPong, ""},
		{ProtoRESP, "+QUEUED\r\n", replyOther, "QUEUED"},
		{ProtoRESP, "-ERR nope\r\n", replyError, "ERR nope"},
		{ProtoRESP, ":1\r\n", replyCount, ""},
		{ProtoRESP, "$3\r\nabc\r\n", replyValue, "abc"},
		{ProtoRESP, "$0\r\n\r\n", replyValue, ""},
		{ProtoRESP, "$-1\r\n", replyNotFound, ""},
		{ProtoRESP, "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n", replyRange, ""},
		{ProtoRESP, "*2\r\n$1\r\n0\r\n*0\r\n", replyRange, ""},
		{ProtoRESP, "*1\r\n$1\r\n0\r\n", replyOther, "(array)"},
		{ProtoRESP, "*-1\r\n", replyOther, "(array)"},
	}
	for _, tt := range tests {
		w := newWire(tt.proto, 10)
		rep, n, err := w.decode([]byte(tt.in))
		if err != nil || n != len(tt.in) {
			t.Errorf("%v %q: n=%d err=%v", tt.proto, tt.in, n, err)
			continue
		}
		if rep.kind != tt.kind || string(rep.val) != tt.val {
			t.Errorf("%v %q: got kind %d val %q, want kind %d val %q", tt.proto, tt.in, rep.kind, rep.val, tt.kind, tt.val)
		}
		// Every strict prefix asks for more bytes.
		w = newWire(tt.proto, 10)
		for i := 1; i < len(tt.in); i++ {
			if _, n, err := w.decode([]byte(tt.in[:i])); n != 0 || err != nil {
				t.Errorf("%v %q: prefix of %d bytes gave n=%d err=%v", tt.proto, tt.in, i, n, err)
				break
			}
		}
	}
	if _, _, err := newWire(ProtoRESP, 10).decode([]byte("?\r\n")); err == nil {
		t.Error("RESP decoder accepted a bad type byte")
	}
}

// TestWireDecodeLargeReply: a reply may exceed the largest request a
// server reads (a RANGE of big values does), so the reply decoders must
// not apply the request limits.
func TestWireDecodeLargeReply(t *testing.T) {
	val := strings.Repeat("v", codec.DefaultMaxFrame/4)
	var pipe, resp strings.Builder
	pipe.WriteString("RANGE|5")
	resp.WriteString("*2\r\n$1\r\n0\r\n*5\r\n")
	for range 5 {
		pipe.WriteString("|k|" + val)
		resp.WriteString("$" + strconv.Itoa(len(val)) + "\r\n" + val + "\r\n")
	}
	pipe.WriteString("\n")
	for _, tt := range []struct {
		proto Proto
		in    string
	}{{ProtoPipe, pipe.String()}, {ProtoRESP, resp.String()}} {
		if len(tt.in) <= codec.DefaultMaxFrame {
			t.Fatalf("%v: reply of %d bytes is within a request's limit", tt.proto, len(tt.in))
		}
		rep, n, err := newWire(tt.proto, 5).decode([]byte(tt.in))
		if err != nil || n != len(tt.in) || rep.kind != replyRange {
			t.Errorf("%v: reply of %d bytes: kind %v, n=%d, err=%v", tt.proto, len(tt.in), rep.kind, n, err)
		}
	}
}

func TestWireEncode(t *testing.T) {
	key, val := []byte("key:000000000001"), []byte("v|1")
	kvs := [][]byte{key, val, []byte("k2"), []byte("v2")}
	tests := []struct {
		proto Proto
		enc   func(w wire) []byte
		want  string
	}{
		{ProtoPipe, func(w wire) []byte { return w.appendPut(nil, key, val) }, "PUT|key:000000000001|v\\|1\n"},
		{ProtoPipe, func(w wire) []byte { return w.appendGet(nil, key) }, "GET|key:000000000001\n"},
		{ProtoPipe, func(w wire) []byte { return w.appendDelete(nil, key) }, "DELETE|key:000000000001\n"},
		{ProtoPipe, func(w wire) []byte { return w.appendRange(nil, key) }, "RANGE|key:000000000001||10\n"},
		{ProtoPipe, func(w wire) []byte { return w.appendBatch(nil, kvs) }, "BATCH|key:000000000001|v\\|1|k2|v2\n"},
		{ProtoPipe, func(w wire) []byte { return w.appendPing(nil) }, "PING\n"},
		{ProtoPipe, func(w wire) []byte { return w.appendAuth(nil, "pw") }, "AUTH|pw\n"},
		{ProtoRESP, func(w wire) []byte { return w.appendPut(nil, key, val) }, "*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000001\r\n$3\r\nv|1\r\n"},
		{ProtoRESP, func(w wire) []byte { return w.appendGet(nil, key) }, "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000001\r\n"},
		{ProtoRESP, func(w wire) []byte { return w.appendDelete(nil, key) }, "*2\r\n$3\r\nDEL\r\n$16\r\nkey:000000000001\r\n"},
		{ProtoRESP, func(w wire) []byte { return w.appendRange(nil, key) }, "*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nCOUNT\r\n$2\r\n10\r\n"},
		{ProtoRESP, func(w wire) []byte { return w.appendBatch(nil, kvs) }, "*5\r\n$4\r\nMSET\r\n$16\r\nkey:000000000001\r\n$3\r\nv|1\r\n$2\r\nk2\r\n$2\r\nv2\r\n"},
		{ProtoRESP, func(w wire) []byte { return w.appendPing(nil) }, "*1\r\n$4\r\nPING\r\n"},
	}
	for _, tt := range tests {
		if got := string(tt.enc(newWire(tt.proto, 10))); got != tt.want {
			t.Errorf("%v: got %q, want %q", tt.proto, got, tt.want)
		}
	}
}

func TestAccepts(t *testing.T) {
	ok := map[Op][]replyKind{
		OpPut:    {replyOK},
		OpGet:    {replyValue, replyNotFound},
		OpDelete: {replyOK, replyCount},
		OpRange:  {replyRange},
		OpBatch:  {replyOK, replyCount},
		OpPing:   {replyPong},
	}
	for _, op := range Ops() {
		for k := replySkip; k <= replyOther; k++ {
			want := false
			for _, a := range ok[op] {
				want = want || a == k
			}
			if got := accepts(op, k); got != want {
				t.Errorf("accepts(%v, %d) = %v", op, k, got)
			}
		}
	}
	if msg := describeReply(OpPut, reply{kind: replyError, val: []byte("NOAUTH")}); msg != "put: server error: NOAUTH" {
		t.Errorf("describeReply: %q", msg)
	}
	if msg := describeReply(OpGet, reply{kind: replyOK}); msg != `get: unexpected reply OK ""` {
		t.Errorf("describeReply: %q", msg)
	}
}
