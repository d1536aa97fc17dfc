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
