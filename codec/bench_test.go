package codec

import (
	"bytes"
	"testing"
)

var (
	benchKey   = []byte("key:000000000707")
	benchValue = bytes.Repeat([]byte("v"), 100)

	pipeGet    = []byte("GET|key:000000000707\n")
	pipePut100 = []byte("PUT|key:000000000707|" + string(benchValue) + "\n")
	pipeEsc100 = []byte(`PUT|key:000000000707|` + string(benchValue[:48]) + `\|\n` + string(benchValue[:48]) + "\n")
	respSet    = []byte("*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000707\r\n$3\r\nVXK\r\n")
	respGet    = []byte("*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000707\r\n")
)

// benchDecode measures one complete frame per iteration, as the server
// decodes a pipelined stream: the buffer starts at a frame boundary.
func benchDecode(b *testing.B, d requestDecoder, frame []byte) {
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, n, err := d.Decode(frame); n != len(frame) || err != nil {
			b.Fatalf("Decode = %d, %v", n, err)
		}
	}
}

func BenchmarkPipeDecodeGet(b *testing.B)     { benchDecode(b, new(PipeDecoder), pipeGet) }
func BenchmarkPipeDecodePut100(b *testing.B)  { benchDecode(b, new(PipeDecoder), pipePut100) }
func BenchmarkPipeDecodeEscaped(b *testing.B) { benchDecode(b, new(PipeDecoder), pipeEsc100) }
func BenchmarkRESPDecodeSet(b *testing.B)     { benchDecode(b, new(RESPDecoder), respSet) }
func BenchmarkRESPDecodeGet(b *testing.B)     { benchDecode(b, new(RESPDecoder), respGet) }
func BenchmarkRESPDecodeInlinePing(b *testing.B) {
	benchDecode(b, new(RESPDecoder), []byte("PING\r\n"))
}

// BenchmarkRESPDecodeLargeBulkChunked feeds a 1 MiB SET in 64 KiB reads,
// as gnet delivers it, and calls Decode only when Need says it can make
// progress.
func BenchmarkRESPDecodeLargeBulkChunked(b *testing.B) {
	value := bytes.Repeat([]byte("x"), 1<<20)
	frame := AppendRESPCommand(nil, []byte("SET"), benchKey, value)
	d := new(RESPDecoder)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		for have := 0; ; {
			have = min(have+64<<10, len(frame))
			if have < d.Need() {
				continue
			}
			if _, n, err := d.Decode(frame[:have]); err != nil {
				b.Fatal(err)
			} else if n > 0 {
				break
			}
		}
	}
}

func BenchmarkReplyDecodeBulk(b *testing.B) {
	frame := AppendBulk(nil, benchValue)
	d := new(ReplyDecoder)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, n, err := d.Decode(frame); n != len(frame) || err != nil {
			b.Fatalf("Decode = %d, %v", n, err)
		}
	}
}

func BenchmarkReplyDecodeArray(b *testing.B) {
	frame := AppendArrayHeader(nil, 10)
	for range 10 {
		frame = AppendBulk(frame, benchKey)
	}
	d := new(ReplyDecoder)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, n, err := d.Decode(frame); n != len(frame) || err != nil {
			b.Fatalf("Decode = %d, %v", n, err)
		}
	}
}

func BenchmarkAppendPipePut100(b *testing.B) {
	buf := make([]byte, 0, 256)
	put := []byte("PUT")
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPipe(buf[:0], put, benchKey, benchValue)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendPipeStringsValue(b *testing.B) {
	buf := make([]byte, 0, 256)
	value := string(benchValue)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPipeStrings(buf[:0], "VALUE", value)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendPipeEscaped(b *testing.B) {
	buf := make([]byte, 0, 256)
	field := []byte("a|b\\c\nd" + string(benchValue))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPipeEscaped(buf[:0], field)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendRESPCommandSet(b *testing.B) {
	buf := make([]byte, 0, 256)
	set := []byte("SET")
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRESPCommand(buf[:0], set, benchKey, benchValue)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendBulk(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBulk(buf[:0], benchValue)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendReplies(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendSimple(buf[:0], "OK")
		buf = AppendInt(buf, 12345)
		buf = AppendNull(buf)
		buf = AppendArrayHeader(buf, 2)
		buf = AppendBulkString(buf, "save")
		buf = AppendError(buf, "ERR unknown command 'FOO'")
		buf = AppendNullArray(buf)
	}
	b.SetBytes(int64(len(buf)))
}
