//go:build !race

// The race detector's instrumentation allocates, so these run without it.

package codec

import (
	"testing"
)

// TestZeroAllocs pins the zero-allocation claims of the benchmarks as
// tests: once a decoder is warm, escape-free frames and the encoders
// allocate nothing.
func TestZeroAllocs(t *testing.T) {
	pipe, resp, reply := new(PipeDecoder), new(RESPDecoder), new(ReplyDecoder)
	bulkReply := AppendBulk(nil, benchValue)
	arrayReply := AppendRESPCommand(nil, benchKey, benchKey, benchValue)
	buf := make([]byte, 0, 1024)
	set := []byte("SET")
	inlinePing := []byte("PING\r\n")
	badEscape := []byte(`GET|\q` + "\n")
	cases := []struct {
		name string
		f    func()
	}{
		{"pipe get", func() { pipe.Decode(pipeGet) }},
		{"pipe put", func() { pipe.Decode(pipePut100) }},
		{"pipe escaped", func() { pipe.Decode(pipeEsc100) }},
		{"pipe partial", func() { pipe.Decode(pipePut100[:50]); pipe.Decode(pipePut100) }},
		{"resp set", func() { resp.Decode(respSet) }},
		{"resp get", func() { resp.Decode(respGet) }},
		{"resp partial", func() { resp.Decode(respSet[:30]); resp.Decode(respSet) }},
		{"resp inline", func() { resp.Decode(inlinePing) }},
		{"pipe bad escape", func() { pipe.Decode(badEscape) }},
		{"reply bulk", func() { reply.Decode(bulkReply) }},
		{"reply array", func() { reply.Decode(arrayReply) }},
		{"append pipe", func() { buf = AppendPipe(buf[:0], set, benchKey, benchValue) }},
		{"append pipe strings", func() { buf = AppendPipeStrings(buf[:0], "VALUE", "a|b") }},
		{"append resp command", func() { buf = AppendRESPCommand(buf[:0], set, benchKey, benchValue) }},
		{"append replies", func() {
			buf = AppendSimple(buf[:0], "OK")
			buf = AppendError(buf, "ERR x\ny")
			buf = AppendInt(buf, -1)
			buf = AppendBulk(buf, benchValue)
			buf = AppendBulkString(buf, "v")
			buf = AppendNull(buf)
			buf = AppendArrayHeader(buf, 3)
			buf = AppendNullArray(buf)
		}},
	}
	for _, c := range cases {
		c.f() // warm up reused buffers
		if n := testing.AllocsPerRun(100, c.f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", c.name, n)
		}
	}

	// A header announcing 2 GiB is accepted under huge limits but sizes
	// nothing.
	big := NewRESPDecoder(Limits{MaxFrame: 1 << 40, MaxBulk: 1 << 40})
	hdr := []byte("*2\r\n$3\r\nGET\r\n$2147483647\r\n")
	big.Decode(hdr)
	if n := testing.AllocsPerRun(100, func() { big.Reset(); big.Decode(hdr) }); n != 0 {
		t.Errorf("2 GiB bulk header: %v allocations per run", n)
	}
}
