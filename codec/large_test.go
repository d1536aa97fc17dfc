package codec

import (
	"bytes"
	"fmt"
	"testing"
)

// feedInReads hands frame to decode the way an event loop does: the
// buffered prefix grows by one read at a time, and decode is called again
// only once Need bytes are there. It returns what the final call consumed.
func feedInReads(t *testing.T, frame []byte, read int, need func() int, decode func([]byte) (int, error)) int {
	t.Helper()
	for end := min(read, len(frame)); ; end = min(end+read, len(frame)) {
		if end < need() && end < len(frame) {
			continue
		}
		n, err := decode(frame[:end])
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", end, len(frame), err)
		}
		if n > 0 || end == len(frame) {
			return n
		}
	}
}

// TestLargeArraysArriveInPieces: arrays of more arguments (or elements)
// than a decoder keeps storage for between frames decode when they arrive
// in many reads. The decoders used to drop that storage at the start of
// every call, progress included, so such a request never completed.
func TestLargeArraysArriveInPieces(t *testing.T) {
	for _, count := range []int{1000, 60000, 3 * maxRetainedFields} {
		var req, reply bytes.Buffer
		fmt.Fprintf(&req, "*%d\r\n$4\r\nMGET\r\n", count)
		fmt.Fprintf(&reply, "*%d\r\n", count)
		for i := 1; i < count; i++ {
			fmt.Fprintf(&req, "$1\r\nk\r\n")
		}
		for i := 0; i < count; i++ {
			fmt.Fprintf(&reply, "$1\r\nv\r\n")
		}
		t.Run(fmt.Sprint(count), func(t *testing.T) {
			rd := NewRESPDecoder(Limits{})
			var args [][]byte
			n := feedInReads(t, req.Bytes(), 64<<10, rd.Need, func(b []byte) (n int, err error) {
				args, n, err = rd.Decode(b)
				return n, err
			})
			if n != req.Len() || len(args) != count || string(args[0]) != "MGET" || string(args[count-1]) != "k" {
				t.Fatalf("request: consumed %d of %d bytes, %d arguments", n, req.Len(), len(args))
			}
			pd := NewReplyDecoder(Limits{})
			var r Reply
			n = feedInReads(t, reply.Bytes(), 64<<10, pd.Need, func(b []byte) (n int, err error) {
				r, n, err = pd.Decode(b)
				return n, err
			})
			if n != reply.Len() || len(r.Elems) != count || string(r.Elems[count-1].Str) != "v" {
				t.Fatalf("reply: consumed %d of %d bytes, %d elements", n, reply.Len(), len(r.Elems))
			}
		})
	}
}

// TestReleaseKeepsNoInput: once Release runs, a decoder holds no slice of
// a buffer it decoded from, the entries left over from an earlier, longer
// request included, nor a scratch buffer grown for a big escaped line. A
// server calls it when a connection's input runs out: the arguments the
// decoder kept for reuse pinned the connection's last request (40 idle
// connections that had each sent a 30 MiB SET held 960 MB).
func TestReleaseKeepsNoInput(t *testing.T) {
	big := bytes.Repeat([]byte("v"), 1<<20)
	rd := NewRESPDecoder(Limits{})
	for _, req := range [][]byte{
		appendTestRESP("MSET", "a", string(big), "b", "c"),
		appendTestRESP("SET", "k", string(big)),
		[]byte("PING \"x y\"\r\n"), // inline, with scratch
	} {
		if _, n, err := rd.Decode(req); err != nil || n != len(req) {
			t.Fatalf("RESP %.20q: consumed %d of %d: %v", req, n, len(req), err)
		}
	}
	rd.Release()
	for i, a := range rd.args[:cap(rd.args)] {
		if a != nil {
			t.Fatalf("RESP: argument slot %d still holds %d bytes of the input after Release", i, len(a))
		}
	}

	pd := NewPipeDecoder(Limits{})
	escaped := append(append([]byte("PUT|k|"), bytes.Repeat([]byte(`\|`), 1<<19)...), '\n')
	for _, req := range [][]byte{
		append(append([]byte("BATCH|a|"), big...), "|b|c\n"...),
		escaped,
		append(append([]byte("PUT|k|"), big...), '\n'),
	} {
		if _, n, err := pd.Decode(req); err != nil || n != len(req) {
			t.Fatalf("pipe %.20q: consumed %d of %d: %v", req, n, len(req), err)
		}
	}
	pd.Release()
	for i, f := range pd.fields[:cap(pd.fields)] {
		if f != nil {
			t.Fatalf("pipe: field slot %d still holds %d bytes of the input after Release", i, len(f))
		}
	}
	if cap(pd.scratch) > maxRetainedScratch {
		t.Fatalf("pipe: scratch of %d bytes kept after Release (max %d)", cap(pd.scratch), maxRetainedScratch)
	}
}

// appendTestRESP encodes args as a RESP array of bulk strings.
func appendTestRESP(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}
