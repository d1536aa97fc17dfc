package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/conf"
)

// TestLongFramesArriveInPieces: requests far longer than partialBytes,
// written a few KiB at a time (so that they are parsed from the
// connection's own buffer), pipelined between small ones, in both
// protocols, come out whole and in order; one over max_frame_bytes still
// closes the connection with "request too large".
func TestLongFramesArriveInPieces(t *testing.T) {
	st := newSlowStore()
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxFrameBytes = 4 << 20 })
	big := strings.Repeat("ab|c\\\n", 300<<10/6) // escaped on the pipe protocol
	escaped := strings.NewReplacer("\\", "\\\\", "|", "\\|", "\n", "\\n").Replace(big)

	var pipeReq bytes.Buffer
	var resp bytes.Buffer
	args := []string{"MSET"}
	for i := 0; i < 3; i++ {
		fmt.Fprintf(&pipeReq, "PUT|p%d|%s\nGET|p%d\nPING\n", i, escaped, i)
		args = append(args, fmt.Sprintf("r%d", i), big)
	}
	// A RESP command of many arguments: its length is not known up front.
	for i := 0; i < 20000; i++ {
		args = append(args, fmt.Sprintf("m%d", i), "v")
	}
	resp.Write(appendRESP(nil, args...))
	resp.Write(appendRESP(nil, "GET", "r2"))
	resp.Write(appendRESP(nil, "GET", "m19999"))

	send := func(req []byte) *bufio.Reader {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go writeInPieces(c, req, 0)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		return bufio.NewReaderSize(c, 1<<20)
	}
	r := send(pipeReq.Bytes())
	for i := 0; i < 3; i++ {
		for _, want := range []string{"OK\n", "VALUE|" + escaped + "\n", "PONG\n"} {
			line, err := r.ReadString('\n')
			if err != nil || line != want {
				t.Fatalf("pipe %d: got %d bytes (%.40q), want %d: %v", i, len(line), line, len(want), err)
			}
		}
	}
	r = send(resp.Bytes())
	for _, want := range []string{"+OK\r\n", fmt.Sprintf("$%d\r\n%s\r\n", len(big), big), "$1\r\nv\r\n"} {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil || string(got) != want {
			t.Fatalf("resp: got %.40q, want %.40q: %v", got, want, err)
		}
	}

	over := []byte("PUT|k|" + strings.Repeat("x", 5<<20) + "\n")
	r = send(over)
	if line, _ := r.ReadString('\n'); line != "ERROR|request too large\n" {
		t.Fatalf("line over max_frame_bytes: %q", line)
	}
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("connection open after a line over max_frame_bytes")
	}
}

// TestInputBudgetClosesTheBiggest: partial requests that each stay within
// max_frame_bytes but together pass max_input_bytes close connections,
// the largest first, until the total is back under the budget; the rest
// complete their requests, and new clients are served.
func TestInputBudgetClosesTheBiggest(t *testing.T) {
	st := newSlowStore()
	addr := startTestServer(t, st, func(c *conf.Server) {
		c.EventLoops = 1
		c.MaxFrameBytes = 1 << 20
		c.MaxInputBytes = 4 << 20
	})
	const clients, size, sent = 8, 1000000, 900 << 10
	head := fmt.Sprintf("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n", size)
	body := strings.Repeat("v", size) + "\r\n"
	conns := dialN(t, addr, clients)
	for _, c := range conns {
		if _, err := c.Write([]byte(head + body[:sent])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var open []net.Conn
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		reply, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() && len(reply) == 0 {
			open = append(open, c)
			continue
		}
		if want := "-ERR server input buffers full (max_input_bytes)\r\n"; string(reply) != want {
			t.Fatalf("client %d: %q, %v; want %q and the close", i, reply, err, want)
		}
	}
	if len(open) == 0 || len(open)*sent > 4<<20 {
		t.Fatalf("%d of %d clients still open with %d bytes each, budget %d", len(open), clients, sent, 4<<20)
	}
	ic, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	info := string((&respConn{c: ic, d: codec.NewReplyDecoder(codec.Limits{})}).do(t, "INFO", "clients").Str)
	want := fmt.Sprintf("input_buffered_bytes:%d\r\nmax_input_bytes:%d\r\n", len(open)*(len(head)+sent), 4<<20)
	if !strings.Contains(info, want) {
		t.Errorf("INFO clients %q lacks %q", info, want)
	}
	for i, c := range open {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(body[sent:])); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "+OK\r\n" {
			t.Fatalf("open client %d: %q, %v", i, got, err)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &respConn{c: c, d: codec.NewReplyDecoder(codec.Limits{})}
	if reply := r.do(t, "PING"); string(reply.Str) != "PONG" {
		t.Fatalf("PING after the closes: %+v", reply)
	}
}

// writeInPieces writes b to c 3000 bytes at a time, pausing between
// writes, until done or a write fails.
func writeInPieces(c net.Conn, b []byte, pause time.Duration) {
	for len(b) > 0 {
		n := min(len(b), 3000)
		if _, err := c.Write(b[:n]); err != nil {
			return
		}
		b = b[n:]
		time.Sleep(pause)
	}
}

// dialN opens n connections to addr, closed when the test ends.
func dialN(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	return conns
}

// TestOversizeRequestErrorReachesClient: a client sending a value over
// max_frame_bytes finishes sending it and then reads the error and a clean
// end of stream, in both protocols. (Closed with the rest of the value
// unread, the connection was reset: the client's write failed with
// "broken pipe" or "connection reset" and it never saw why.)
func TestOversizeRequestErrorReachesClient(t *testing.T) {
	addr := startTestServer(t, newSlowStore(), func(c *conf.Server) { c.MaxFrameBytes = 1 << 20 })
	value := strings.Repeat("x", 6<<20)
	for _, c := range []struct {
		name string
		req  []byte
		want string
	}{
		{"pipe", []byte("PUT|k|" + value + "\n"), "ERROR|request too large\n"},
		{"resp", appendRESP(nil, "SET", "k", value), "-ERR Protocol error: invalid bulk length\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			// Send the whole request before reading, as a client library
			// does.
			if _, err := conn.Write(c.req); err != nil {
				t.Fatalf("writing the request: %v", err)
			}
			got, err := io.ReadAll(conn)
			if err != nil || string(got) != c.want {
				t.Fatalf("got %q, %v; want %q and the end of the stream", got, err, c.want)
			}
		})
	}
}

// TestIdleConnectionsPinNoRequest: connections that each sent one big
// request (RESP, pipe, and a pipe line with escapes) and went idle keep
// none of it. The decoder kept the arguments of the last request for reuse,
// and they aliased the input buffer: 40 idle connections that had each sent
// one 30 MiB SET held 960 MB, counted in no limit.
func TestIdleConnectionsPinNoRequest(t *testing.T) {
	st := &heldWritesStore{slowStore: newSlowStore(), release: make(chan struct{})}
	close(st.release) // writes are acknowledged and dropped
	addr := startTestServer(t, st, nil)
	const conns, size = 9, 8 << 20
	value := strings.Repeat("v", size)
	requests := [][]byte{
		appendRESP(nil, "SET", "k", value),
		[]byte("PUT|k|" + value + "\n"),
		[]byte("PUT|k|" + strings.Repeat(`\|`, size/2) + "\n"),
	}
	before := settledHeap()
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := requests[i%len(requests)]
		go writeInPieces(c, req, 0)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || (line != "+OK\r\n" && line != "OK\n") {
			t.Fatalf("conn %d: %q, %v", i, line, err)
		}
	}
	grew := settledHeap() - before
	t.Logf("heap grew by %d MiB with %d idle connections that each sent %d MiB", grew>>20, conns, size>>20)
	if grew > conns*size/4 {
		t.Errorf("%d idle connections hold %d MiB after sending %d MiB each", conns, grew>>20, size>>20)
	}
}

// settledHeap is the live heap once what sync.Pools hold (gnet pools its
// input buffers) has been dropped: a pooled object outlives two collections.
func settledHeap() int64 {
	runtime.GC()
	runtime.GC()
	return liveHeap()
}
