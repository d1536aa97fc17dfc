package codec

import (
	"bytes"
	"testing"
)

// Seeds shared by f.Add and the committed corpus in testdata/fuzz.
var (
	pipeSeeds = []string{
		"PING\n",
		"PUT|key|value\n",
		"PUT|k|\r\n",
		"GET|key\nGET|key\nGET|key\n",
		"BATCH|k1|v1|k2|v2\n",
		"RANGE|a||10\n",
		`PUT|a\|b|c\\d\ne\rf\0g` + "\n",
		`GET|\q` + "\nPING\n",
		`GET|k\` + "\n",
		"\n\r\n|\n",
		"A|B|C|D|E|F\n",
		"PUT|0123456789|0123456789abcdef\n",
		"GET|partial",
		"CLUSTER_STATUS|mode=standalone|state=healthy|node_id=1\n",
	}
	respSeeds = []string{
		benchSet,
		benchGet,
		benchGet + benchGet + benchGet,
		benchConfig,
		pingMbulk,
		goRedisHello,
		"PING\r\n",
		"PING\r\n" + pingMbulk + "ECHO hi\n",
		`set "a b" 'c\'d' "\x41\n"` + "\r\n",
		`"unbalanced` + "\r\n",
		"*0\r\n*-1\r\n",
		"*-2\r\n",
		"*1\r\n$-1\r\n",
		"*1\r\n+PING\r\n",
		"*2\r\n$3\r\nGET\r\n$2147483647\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123",
		"*1\r\n$4\r\nPINGxx",
		"PING\x00junk\r\n",
	}
	replySeeds = []string{
		"+OK\r\n",
		"-ERR unknown command 'FOO'\r\n",
		":42\r\n:-1\r\n",
		"$5\r\nhello\r\n$-1\r\n$0\r\n\r\n",
		"*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
		"*2\r\n$1\r\n0\r\n*2\r\n$2\r\nk1\r\n$2\r\nk2\r\n",
		"*3\r\n*1\r\n*0\r\n:1\r\n*-1\r\n",
		"*2\r\n:1\r\n",
		"$100\r\nabc",
		"!x\r\n",
		"+OK\n",
	}
	roundTripSeeds = []struct {
		data string
		sep  byte
	}{
		{"PUT,key,value", ','},
		{"GET key", ' '},
		{"PUT|k|a|b\\c\nd\re\x00f", ','},
		{"", ','},
		{",,", ','},
		{"VALUE,\\", ','},
		{"SET\x00key:000000000707\x00VXK", 0},
	}
)

// limitSets are the limits each decoder fuzzer runs under: the defaults,
// and limits small enough for short inputs to reach them.
var limitSets = []Limits{{}, {MaxFrame: 24, MaxArgs: 3, MaxBulk: 8}}

func FuzzPipeDecode(f *testing.F) {
	for _, s := range pipeSeeds {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		c := int(cut) % (len(data) + 1)
		for _, lim := range limitSets {
			want := referencePipe(data, lim)
			got := feed(t, NewPipeDecoder(lim), data, feedMode{})
			sameFrames(t, "whole input against the reference", got, want)
			got = feed(t, NewPipeDecoder(lim), data, feedMode{copyBuf: true, release: true}, c)
			sameFrames(t, "split input", got, want)
			got = feed(t, NewPipeDecoder(lim), data, feedMode{ignoreNeed: true}, everyByte(len(data))...)
			sameFrames(t, "byte by byte", got, want)
		}
	})
}

// referencePipe is PROTOCOL.md §1 written as plainly as possible, one byte
// at a time, to check PipeDecoder against. Errors are reported in the
// order their cause appears in the line.
func referencePipe(data []byte, lim Limits) []frame {
	maxFrame, maxArgs := lim.maxFrame(), lim.maxArgs()
	var out []frame
	for {
		// A line holds at most maxFrame bytes besides its "\n" or "\r\n";
		// without a '\n' yet, a final '\r' may still be the terminator's.
		i := bytes.IndexByte(data, '\n')
		n := i
		if i < 0 {
			n = len(data)
		}
		if n > 0 && data[n-1] == '\r' {
			n--
		}
		if n > maxFrame {
			return append(out, fail("request too large"))
		}
		if i < 0 {
			return out
		}
		line := data[:i]
		data = data[i+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			out = append(out, frame{})
			continue
		}
		out = append(out, referencePipeLine(line, maxArgs))
	}
}

func referencePipeLine(line []byte, maxArgs int) frame {
	var fields []string
	var cur []byte
	endField := func() bool {
		if len(fields) == maxArgs {
			return false
		}
		fields = append(fields, string(cur))
		cur = nil
		return true
	}
	for k := 0; k < len(line); k++ {
		switch c := line[k]; c {
		case '|':
			if !endField() {
				return fail("too many fields")
			}
		case '\\':
			k++
			if k == len(line) {
				return fail("bad escape sequence")
			}
			switch line[k] {
			case '|', '\\':
				cur = append(cur, line[k])
			case 'n':
				cur = append(cur, '\n')
			case 'r':
				cur = append(cur, '\r')
			case '0':
				cur = append(cur, 0)
			default:
				return fail("bad escape sequence")
			}
		default:
			cur = append(cur, c)
		}
	}
	if !endField() {
		return fail("too many fields")
	}
	return frame{fields: fields}
}

func FuzzRESPDecode(f *testing.F) {
	for _, s := range respSeeds {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		c := int(cut) % (len(data) + 1)
		for _, lim := range limitSets {
			want := feed(t, NewRESPDecoder(lim), data, feedMode{})
			got := feed(t, NewRESPDecoder(lim), data, feedMode{copyBuf: true, release: true}, c)
			sameFrames(t, "split input", got, want)
			got = feed(t, NewRESPDecoder(lim), data, feedMode{ignoreNeed: true}, everyByte(len(data))...)
			sameFrames(t, "byte by byte", got, want)
			checkCanonicalArrays(t, NewRESPDecoder(lim), data)
		}
	})
}

// checkCanonicalArrays checks that every array request decoded from data
// re-encodes to exactly the bytes it was decoded from: the decoder accepts
// only canonical lengths, so nothing it skips or misreads goes unnoticed.
func checkCanonicalArrays(t *testing.T, d *RESPDecoder, data []byte) {
	for off := 0; off < len(data); {
		args, n, err := d.Decode(data[off:])
		if err != nil || n == 0 {
			return
		}
		if data[off] == '*' && len(args) > 0 {
			if enc := AppendRESPCommand(nil, args...); !bytes.Equal(enc, data[off:off+n]) {
				t.Fatalf("decoded %q from %q, which encodes as %q", args, data[off:off+n], enc)
			}
		}
		off += n
	}
}

func FuzzReplyDecode(f *testing.F) {
	for _, s := range replySeeds {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		c := int(cut) % (len(data) + 1)
		for _, lim := range limitSets {
			want := feedReplies(t, NewReplyDecoder(lim), data, feedMode{})
			got := feedReplies(t, NewReplyDecoder(lim), data, feedMode{copyBuf: true}, c)
			sameFrames(t, "split input", got, want)
			got = feedReplies(t, NewReplyDecoder(lim), data, feedMode{ignoreNeed: true}, everyByte(len(data))...)
			sameFrames(t, "byte by byte", got, want)

			// Every reply re-encodes to the bytes it came from.
			d := NewReplyDecoder(lim)
			for off := 0; off < len(data); {
				r, n, err := d.Decode(data[off:])
				if err != nil || n == 0 {
					break
				}
				if enc := appendReply(nil, r); !bytes.Equal(enc, data[off:off+n]) {
					t.Fatalf("decoded %s from %q, which encodes as %q", replyString(r), data[off:off+n], enc)
				}
				off += n
			}
		}
	})
}

// appendReply encodes r with the package's encoders.
func appendReply(dst []byte, r Reply) []byte {
	switch r.Type {
	case '+':
		return AppendSimple(dst, string(r.Str))
	case '-':
		return AppendError(dst, string(r.Str))
	case ':':
		return AppendInt(dst, r.Int)
	case '$':
		if r.Null {
			return AppendNull(dst)
		}
		return AppendBulk(dst, r.Str)
	case '*':
		if r.Null {
			return AppendNullArray(dst)
		}
		dst = AppendArrayHeader(dst, len(r.Elems))
		for _, e := range r.Elems {
			dst = appendReply(dst, e)
		}
	}
	return dst
}

func FuzzPipeRoundTrip(f *testing.F) {
	for _, s := range roundTripSeeds {
		f.Add([]byte(s.data), s.sep)
	}
	f.Fuzz(func(t *testing.T, data []byte, sep byte) {
		fields := bytes.Split(data, []byte{sep})
		want := fieldStrings(fields)
		if len(fields) == 1 && len(fields[0]) == 0 {
			want = nil // a lone empty field is an empty line
		}
		line := AppendPipe(nil, fields...)
		if i := bytes.IndexAny(line, "\r\n"); i != len(line)-1 {
			t.Fatalf("AppendPipe(%q) = %q has a raw CR or LF inside", fields, line)
		}
		if s := AppendPipeStrings(nil, want...); len(want) > 0 && !bytes.Equal(s, line) {
			t.Fatalf("AppendPipeStrings = %q, AppendPipe = %q", s, line)
		}
		var pieces []byte
		for i, fl := range fields {
			if i > 0 {
				pieces = append(pieces, '|')
			}
			pieces = AppendPipeEscaped(pieces, fl)
		}
		if !bytes.Equal(append(pieces, '\n'), line) {
			t.Fatalf("AppendPipeEscaped pieces = %q, AppendPipe = %q", pieces, line)
		}

		// Twice, pipelined, in one buffer and split in the middle.
		stream := append(append([]byte(nil), line...), line...)
		wantFrames := []frame{{fields: want}, {fields: want}}
		sameFrames(t, "round trip", feed(t, new(PipeDecoder), stream, feedMode{}), wantFrames)
		sameFrames(t, "split round trip", feed(t, new(PipeDecoder), stream, feedMode{copyBuf: true}, len(stream)/2), wantFrames)
	})
}

func FuzzRESPRoundTrip(f *testing.F) {
	for _, s := range roundTripSeeds {
		f.Add([]byte(s.data), s.sep)
	}
	f.Fuzz(func(t *testing.T, data []byte, sep byte) {
		args := bytes.Split(data, []byte{sep})
		cmd := AppendRESPCommand(nil, args...)
		stream := append(append([]byte(nil), cmd...), cmd...)
		want := []frame{{fields: fieldStrings(args)}, {fields: fieldStrings(args)}}
		sameFrames(t, "request round trip", feed(t, new(RESPDecoder), stream, feedMode{}), want)
		sameFrames(t, "split request round trip", feed(t, new(RESPDecoder), stream, feedMode{copyBuf: true}, len(stream)/2), want)

		// The same bytes read as a reply: an array of bulk strings.
		var reply []byte
		reply = AppendArrayHeader(reply, len(args))
		for _, a := range args {
			reply = AppendBulk(reply, a)
		}
		if !bytes.Equal(reply, cmd) {
			t.Fatalf("array of bulks %q differs from command %q", reply, cmd)
		}
		r, n, err := new(ReplyDecoder).Decode(reply)
		if err != nil || n != len(reply) || r.Type != '*' || len(r.Elems) != len(args) {
			t.Fatalf("ReplyDecoder.Decode(%q) = %s, %d, %v", reply, replyString(r), n, err)
		}
		for i, e := range r.Elems {
			if e.Type != '$' || !bytes.Equal(e.Str, args[i]) {
				t.Fatalf("element %d = %s, want %q", i, replyString(e), args[i])
			}
		}
	})
}
