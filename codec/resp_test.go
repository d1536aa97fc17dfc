package codec

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Frames exactly as the clients in notes/gnet.md §5 send them.
const (
	benchSet     = "*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nVXK\r\n"
	benchGet     = "*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"
	benchConfig  = "*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nappendonly\r\n"
	pingMbulk    = "*1\r\n$4\r\nPING\r\n"
	goRedisHello = "*2\r\n$5\r\nhello\r\n$1\r\n3\r\n"
)

func TestRESPDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []frame
	}{
		{"benchmark set", benchSet, []frame{ok("SET", "key:__rand_int__", "VXK")}},
		{"benchmark get", benchGet, []frame{ok("GET", "key:__rand_int__")}},
		{"benchmark config", benchConfig, []frame{ok("CONFIG", "GET", "save"), ok("CONFIG", "GET", "appendonly")}},
		{"benchmark -P 3", benchGet + benchGet + benchGet, []frame{
			ok("GET", "key:__rand_int__"), ok("GET", "key:__rand_int__"), ok("GET", "key:__rand_int__")}},
		{"ping mbulk", pingMbulk, []frame{ok("PING")}},
		{"go-redis hello", goRedisHello, []frame{ok("hello", "3")}},
		{"redis-cli lower case", "*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n", []frame{ok("set", "a", "b")}},
		{"empty bulk", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", []frame{ok("SET", "k", "")}},
		{"binary bulk", "*2\r\n$3\r\nGET\r\n$4\r\n\r\n\x00|\r\n", []frame{ok("GET", "\r\n\x00|")}},
		{"star zero", "*0\r\n", []frame{ok()}},
		{"star minus one", "*-1\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"star zero then command", "*0\r\n" + pingMbulk, []frame{ok(), ok("PING")}},
		{"incomplete header", "*3\r", nil},
		{"incomplete bulk", "*1\r\n$4\r\nPI", nil},
		{"complete then incomplete", pingMbulk + "*1\r\n$4", []frame{ok("PING")}},

		{"negative count", "*-2\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count not a number", "*x\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count empty", "*\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count leading zero", "*01\r\n$1\r\na\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count plus sign", "*+1\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count minus zero", "*-0\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count lf only", "*1\n$1\r\na\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count overflow", "*99999999999999999999\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count line never ends", "*1111111111111111111111111", []frame{fail("Protocol error: invalid multibulk length")}},
		{"count too large", "*1048577\r\n", []frame{fail("Protocol error: invalid multibulk length")}},
		{"negative bulk", "*1\r\n$-1\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"negative bulk -5", "*1\r\n$-5\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"bulk not a number", "*1\r\n$x\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"bulk too large", "*1\r\n$536870913\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"bulk 2 GiB", "*2\r\n$3\r\nGET\r\n$2147483647\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"bulk header never ends", "*1\r\n$1111111111111111111111", []frame{fail("Protocol error: invalid bulk length")}},
		{"missing dollar", "*1\r\n+PING\r\n", []frame{fail("Protocol error: expected '$', got '+'")}},
		{"missing dollar after args", "*2\r\n$3\r\nGET\r\nkey\r\n", []frame{fail("Protocol error: expected '$', got 'k'")}},
		{"bulk without crlf", "*1\r\n$4\r\nPINGxx", []frame{fail("Protocol error: expected CRLF after bulk data")}},
		{"bulk too long", "*1\r\n$3\r\nPING\r\n", []frame{fail("Protocol error: expected CRLF after bulk data")}},
		{"good then bad", pingMbulk + "*1\r\n:1\r\n" + pingMbulk, []frame{ok("PING"), fail("Protocol error: expected '$', got ':'")}},
		{"simple string request", pingMbulk + "+PING\r\n" + pingMbulk, []frame{ok("PING"), fail("Protocol error: expected '*', got '+'")}},
		{"bulk request", "$4\r\nPING\r\n", []frame{fail("Protocol error: expected '*', got '$'")}},
		{"integer request", ":1\r\n", []frame{fail("Protocol error: expected '*', got ':'")}},
		{"resp3 null request", "_\r\n", []frame{fail("Protocol error: expected '*', got '_'")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRESP(t, Limits{}, tt.in, tt.want)
		})
	}
}

func checkRESP(t *testing.T, lim Limits, in string, want []frame) {
	t.Helper()
	data := []byte(in)
	got := feed(t, NewRESPDecoder(lim), data, feedMode{})
	sameFrames(t, "whole", got, want)
	got = feed(t, NewRESPDecoder(lim), data, feedMode{copyBuf: true, release: true}, everyByte(len(data))...)
	sameFrames(t, "byte by byte", got, want)
	got = feed(t, NewRESPDecoder(lim), data, feedMode{ignoreNeed: true}, everyByte(len(data))...)
	sameFrames(t, "byte by byte ignoring Need", got, want)
	for cut := 1; cut < len(data); cut++ {
		got = feed(t, NewRESPDecoder(lim), data, feedMode{copyBuf: true, release: true}, cut)
		sameFrames(t, "split", got, want)
	}
}

func TestRESPDecodeInline(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []frame
	}{
		{"ping inline", "PING\r\n", []frame{ok("PING")}},
		{"lf only", "PING\n", []frame{ok("PING")}},
		{"args", "set a b\r\n", []frame{ok("set", "a", "b")}},
		{"runs of blanks", "  set \t \v\fa  b  \r\n", []frame{ok("set", "a", "b")}},
		{"vertical tab inside word", "a\vb c\r\n", []frame{ok("a\vb", "c")}},
		{"cr inside line ends word", "a\rb\r\n", []frame{ok("a", "b")}},
		{"empty line", "\r\n", []frame{ok()}},
		{"blank line", " \t \r\n", []frame{ok()}},
		{"empty then command", "\nPING\r\n", []frame{ok(), ok("PING")}},
		{"pipe line is one word", "GET|k\r\n", []frame{ok("GET|k")}},
		{"double quotes", `set "a b" c` + "\r\n", []frame{ok("set", "a b", "c")}},
		{"single quotes", `set 'a b' c` + "\r\n", []frame{ok("set", "a b", "c")}},
		{"empty quotes", `set "" ''` + "\r\n", []frame{ok("set", "", "")}},
		{"double quote escapes", `"\n\r\t\b\a\\\"\q"` + "\n", []frame{ok("\n\r\t\b\a\\\"q")}},
		{"hex escapes", `"\x41\x7a\xFF\x0"` + "\n", []frame{ok("Az\xffx0")}},
		{"single quote escape", `'it\'s \n'` + "\n", []frame{ok(`it's \n`)}},
		{"quote inside word", `ab"c d"` + "\n", []frame{ok("abc d")}},
		{"quotes then plain word", `"a" b` + "\n", []frame{ok("a", "b")}},
		{"plain, quoted, plain", `x "y" z` + "\n", []frame{ok("x", "y", "z")}},
		{"text after closing quote", `"a"b` + "\n", []frame{fail("Protocol error: unbalanced quotes in request")}},
		{"text after closing single quote", `'a'b` + "\n", []frame{fail("Protocol error: unbalanced quotes in request")}},
		{"unclosed double quote", `set "a b` + "\r\n", []frame{fail("Protocol error: unbalanced quotes in request")}},
		{"unclosed single quote", `set 'a` + "\n", []frame{fail("Protocol error: unbalanced quotes in request")}},
		{"backslash at end in quotes", `"a\` + "\n", []frame{fail("Protocol error: unbalanced quotes in request")}},
		{"nul ends the line", "PING\x00junk \"\r\n", []frame{ok("PING")}},
		{"nul first", "\x00PING\r\n", []frame{ok()}},
		{"inline then mbulk", "PING\r\n" + pingMbulk + "ECHO hi\n", []frame{ok("PING"), ok("PING"), ok("ECHO", "hi")}},
		{"incomplete inline", "PIN", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRESP(t, Limits{}, tt.in, tt.want)
		})
	}
}

func TestRESPDecodeLimits(t *testing.T) {
	const tooBigInline = "Protocol error: too big inline request"
	long := strings.Repeat("a", maxInline)
	tests := []struct {
		name string
		lim  Limits
		in   string
		want []frame
	}{
		{"max args", Limits{MaxArgs: 2}, benchGet, []frame{ok("GET", "key:__rand_int__")}},
		{"too many args", Limits{MaxArgs: 2}, benchSet, []frame{fail("Protocol error: invalid multibulk length")}},
		{"max bulk", Limits{MaxBulk: 3}, benchSet[:4] + "$3\r\nSET\r\n$3\r\nabc\r\n$3\r\nVXK\r\n", []frame{ok("SET", "abc", "VXK")}},
		{"bulk over max bulk", Limits{MaxBulk: 3}, benchSet, []frame{fail("Protocol error: invalid bulk length")}},
		{"frame of MaxFrame bytes", Limits{MaxFrame: len(benchGet)}, benchGet, []frame{ok("GET", "key:__rand_int__")}},
		{"frame over MaxFrame", Limits{MaxFrame: len(benchGet) - 1}, benchGet, []frame{fail("Protocol error: invalid bulk length")}},
		{"empty bulks over MaxFrame", Limits{MaxFrame: 20}, "*4\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n", []frame{fail("Protocol error: invalid bulk length")}},
		{"inline too many args", Limits{MaxArgs: 2}, "a b c\r\n", []frame{fail("Protocol error: too many arguments in inline request")}},
		{"inline too many quoted args", Limits{MaxArgs: 2}, `"a" "b" "c"` + "\r\n", []frame{fail("Protocol error: too many arguments in inline request")}},
		{"inline max args", Limits{MaxArgs: 2}, "a b\r\n", []frame{ok("a", "b")}},
		{"inline of 64 KiB", Limits{}, long + "\n", []frame{ok(long)}},
		{"inline of 64 KiB with crlf", Limits{}, long[1:] + "\r\n", []frame{ok(long[1:])}},
		{"inline of 64 KiB and a cr", Limits{}, long + "\r\n", []frame{fail(tooBigInline)}},
		{"inline over 64 KiB", Limits{}, long + "a\r\n", []frame{fail(tooBigInline)}},
		{"inline over 64 KiB without newline", Limits{}, long + "a", []frame{fail(tooBigInline)}},
		{"inline over MaxFrame", Limits{MaxFrame: 4}, "PING\r\n", []frame{fail(tooBigInline)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.in)
			got := feed(t, NewRESPDecoder(tt.lim), data, feedMode{})
			sameFrames(t, "whole", got, tt.want)
			if len(data) < 1000 {
				checkRESP(t, tt.lim, tt.in, tt.want)
			} else {
				got = feed(t, NewRESPDecoder(tt.lim), data, feedMode{copyBuf: true}, len(data)/2, len(data)-1)
				sameFrames(t, "split", got, tt.want)
			}
		})
	}
}

func TestRESPDecodeErrorsAreFatal(t *testing.T) {
	for _, in := range []string{"*-2\r\n", "*1\r\n$-1\r\n", "*1\r\n+x\r\n", `"a` + "\n", strings.Repeat("x", maxInline+1)} {
		_, n, err := new(RESPDecoder).Decode([]byte(in))
		var pe *ProtocolError
		if !errors.As(err, &pe) || !pe.Fatal || n != 0 {
			t.Errorf("Decode(%.20q) = n %d, err %#v; want a fatal ProtocolError", in, n, err)
		}
	}
}

// TestRESPDecodeNeed checks that a large partial bulk is waited for, not
// rescanned, and that its header alone allocates nothing whatever length
// it announces.
func TestRESPDecodeNeed(t *testing.T) {
	d := NewRESPDecoder(Limits{})
	head := []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n")
	if _, n, err := d.Decode(head); n != 0 || err != nil {
		t.Fatalf("Decode(head) = %d, %v", n, err)
	}
	if want := len(head) + 100000 + 2; d.Need() != want {
		t.Fatalf("Need() = %d, want %d", d.Need(), want)
	}
	value := bytes.Repeat([]byte("v"), 100000)
	full := append(append(append([]byte(nil), head...), value...), "\r\n"...)
	// Fewer bytes than Need: no progress, and Need is unchanged.
	if _, n, err := d.Decode(full[:len(full)-1]); n != 0 || err != nil || d.Need() != len(full) {
		t.Fatalf("Decode(short) = %d, %v, Need %d", n, err, d.Need())
	}
	args, n, err := d.Decode(full)
	if n != len(full) || err != nil || len(args) != 3 || !bytes.Equal(args[2], value) {
		t.Fatalf("Decode(full) = %d args, n %d, %v", len(args), n, err)
	}
	if d.Need() != 1 {
		t.Fatalf("Need() after a frame = %d", d.Need())
	}

	// The brief's example, with the bulk's header only.
	d = NewRESPDecoder(Limits{})
	if _, n, _ := d.Decode([]byte("*3\r\n$100000\r\n")); n != 0 || d.Need() != 13+100002 {
		t.Fatalf("Need() = %d, want %d", d.Need(), 13+100002)
	}

	// Huge announced lengths: checked against limits, never allocated.
	big := Limits{MaxFrame: 1 << 40, MaxBulk: 1 << 40}
	d = NewRESPDecoder(big)
	hdr := []byte("*2\r\n$3\r\nGET\r\n$2147483647\r\n")
	if _, n, err := d.Decode(hdr); n != 0 || err != nil || d.Need() != len(hdr)+2147483647+2 {
		t.Fatalf("Decode(2 GiB header) = %d, %v, Need %d", n, err, d.Need())
	}
}

func TestRESPDecodeAliasing(t *testing.T) {
	var d RESPDecoder
	buf := []byte(benchSet)
	args, _, err := d.Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range args {
		if !inside(a, buf) || cap(a) != len(a) {
			t.Errorf("arg %d %q: aliases input %v, spare capacity %d", i, a, inside(a, buf), cap(a)-len(a))
		}
	}
	buf = []byte(`set "k e y" value` + "\r\n")
	args, _, err = d.Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !inside(args[0], buf) || inside(args[1], buf) || !inside(args[2], buf) {
		t.Errorf("inline args: only the quoted one should be a copy")
	}
	for i, a := range args {
		if cap(a) != len(a) {
			t.Errorf("inline arg %d has spare capacity", i)
		}
	}
}

// TestRESPDecodeRestart checks that a caller that starts over with a
// shorter buffer (a new frame boundary) is not confused by stale state.
func TestRESPDecodeRestart(t *testing.T) {
	var d RESPDecoder
	if _, n, _ := d.Decode([]byte("*2\r\n$3\r\nGET\r\n$10\r\nabc")); n != 0 {
		t.Fatal("partial frame consumed")
	}
	args, n, err := d.Decode([]byte(pingMbulk))
	if err != nil || n != len(pingMbulk) || len(args) != 1 || string(args[0]) != "PING" {
		t.Fatalf("after restart: %q, %d, %v", args, n, err)
	}
	d.Decode([]byte("PIN"))
	d.Reset()
	if d.Need() != 1 {
		t.Fatalf("Need() after Reset = %d", d.Need())
	}
	if args, _, err := d.Decode([]byte("*1\r\n$2\r\nhi\r\n")); err != nil || string(args[0]) != "hi" {
		t.Fatalf("after Reset: %q, %v", args, err)
	}
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"-1", -1, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"-9223372036854775808", -1 << 63, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false},
		{"99999999999999999999", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"-0", 0, false},
		{"00", 0, false},
		{"01", 0, false},
		{"+1", 0, false},
		{"1a", 0, false},
		{" 1", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseInt([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseInt(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
