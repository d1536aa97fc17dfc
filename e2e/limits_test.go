package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOversizeFrame: a line over max_frame_bytes gets an error and the
// connection is closed; the server keeps serving others.
func TestOversizeFrame(t *testing.T) {
	n := startNode(t, `max_frame_bytes = "64KiB"`+"\n"+`max_key_bytes = "1KiB"`, "")
	p := dialPipe(t, n.addr)
	p.send("PUT|k|" + strings.Repeat("x", 200*1024))
	if got := p.recv(); got != "ERROR|request too large" {
		t.Fatalf("oversize: %q", got)
	}
	p.expectClosed()
	q := dialPipe(t, n.addr)
	if got := q.do("PING"); got != "PONG" {
		t.Fatalf("server after oversize frame: %q", got)
	}
}

// TestBinaryGarbage: random bytes never crash the server.
func TestBinaryGarbage(t *testing.T) {
	n := startNode(t, `max_frame_bytes = "64KiB"`, "")
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 40; i++ {
		c, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, rng.Intn(100000)+1)
		rng.Read(buf)
		if i%2 == 0 {
			buf[0] = '*' // the RESP parser too
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(buf)
		c.Close()
	}
	p := dialPipe(t, n.addr)
	if got := p.do("PING"); got != "PONG" {
		t.Fatalf("after garbage: %q", got)
	}
	r := newRedis(t, n.addr)
	if err := r.Ping(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestRESPProtocolError: malformed RESP gets "-ERR Protocol error" and a close.
func TestRESPProtocolError(t *testing.T) {
	n := startNode(t, "", "")
	ping := "*1\r\n$4\r\nPING\r\n"
	for _, in := range []string{"*1\r\n$-5\r\n", "*2\r\n+x\r\n", "*99999999999\r\n", ping + "+PING\r\n", ping + "$4\r\nPING\r\n"} {
		c, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(in))
		r := bufio.NewReader(c)
		line, _ := r.ReadString('\n')
		if strings.HasPrefix(in, ping) && line == "+PONG\r\n" {
			line, _ = r.ReadString('\n') // the request before the bad one
		}
		if !strings.HasPrefix(line, "-ERR Protocol error") {
			t.Errorf("%q: got %q", in, line)
		}
		if _, err := r.ReadByte(); err == nil {
			t.Errorf("%q: connection left open", in)
		}
		c.Close()
	}
}

// TestOpenFileLimit: with fewer file descriptors than max_connections, the
// server lowers its connection limit to fit, refuses the connections over
// it like any others, and keeps serving (gnet would stop its engine when an
// accept failed with EMFILE).
func TestOpenFileLimit(t *testing.T) {
	n := startNodeLimited(t, 400, "", "")
	if !strings.Contains(n.logText(), "max_connections reduced") {
		t.Errorf("no warning about the reduced limit in the log:\n%s", n.logText())
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	refused := 0
	for range 450 {
		c, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatalf("dial: %v\n%s", err, n.logText())
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "PING\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		switch {
		case line == "PONG\n":
		case strings.Contains(line, "max number of clients reached"):
			refused++
		default:
			t.Fatalf("connection %d: %q %v\n%s", len(conns), line, err, n.logText())
		}
	}
	if refused == 0 {
		t.Fatal("450 connections with 400 file descriptors: none refused")
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	select {
	case err := <-n.exitedOnce():
		t.Fatalf("kvserver exited: %v\n%s", err, n.logText())
	case <-time.After(200 * time.Millisecond):
	}
	p := dialPipe(t, n.addr)
	if got := p.do("PING"); got != "PONG" {
		t.Fatalf("PING after the flood: %q", got)
	}
}

// TestMaxConnections: connections over the limit get an error line and are
// closed; the ones inside it keep working.
func TestMaxConnections(t *testing.T) {
	n := startNode(t, "max_connections = 5", "")
	var held []*pipeConn
	for i := 0; i < 5; i++ {
		p := dialPipe(t, n.addr)
		if got := p.do("PING"); got != "PONG" {
			t.Fatalf("conn %d: %q", i, got)
		}
		held = append(held, p)
	}
	for i := 0; i < 20; i++ {
		p := dialPipe(t, n.addr)
		if got := p.recv(); got != "ERROR|max number of clients reached" {
			t.Fatalf("excess conn: %q", got)
		}
		p.expectClosed()
	}
	for _, p := range held {
		if got := p.do("PING"); got != "PONG" {
			t.Fatalf("held conn: %q", got)
		}
	}
}

// TestIdleTimeout: idle connections are closed after idle_timeout, busy
// ones are not.
func TestIdleTimeout(t *testing.T) {
	// The busy connection pings far more often than the timeout, so that a
	// pause of the (race-built) test or server on a loaded machine cannot
	// make it look idle.
	n := startNode(t, `idle_timeout = "1s"`, "")
	idle := dialPipe(t, n.addr)
	busy := dialPipe(t, n.addr)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if got := busy.do("PING"); got != "PONG" {
			t.Fatalf("busy conn: %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	idle.expectClosed()
}

// TestSlowReaderIsClosed: a client that pipelines 100k GETs of a 1 MiB
// value and never reads is closed (its parsing stops at half of
// max_output_bytes; a backlog that does not shrink for 5 s closes it), and
// the server's memory stays bounded.
func TestSlowReaderIsClosed(t *testing.T) {
	n := startNode(t, `max_output_bytes = "32MiB"`, "")
	p := dialPipe(t, n.addr)
	if got := p.do("PUT|big|" + strings.Repeat("v", 1<<20)); got != "OK" {
		t.Fatal(got)
	}
	c, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	req := bytes.Repeat([]byte("GET|big\n"), 1000)
	closed := false
	c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	for i := 0; i < 100; i++ {
		if _, err := c.Write(req); err != nil {
			closed = true
			break
		}
	}
	if !closed {
		// The writes may all fit in kernel buffers. A client that reads
		// gets its replies as it reads (its requests wait meanwhile); one
		// that reads nothing for 5 s (the server's outputStall) is closed:
		// reading then yields EOF after the buffered replies.
		time.Sleep(7 * time.Second)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 1<<20)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("slow reader was not closed")
				}
				break
			}
		}
	}
	// The peak, not just what is left: replies must not pile up far past
	// max_output_bytes on their way to being refused.
	t.Logf("server peak RSS %d MiB", procStatus(t, n.cmd.Process.Pid, "VmHWM")>>20)
	if rss := procStatus(t, n.cmd.Process.Pid, "VmHWM"); rss > 140<<20 {
		t.Fatalf("server peak RSS %d MiB with a slow reader and max_output_bytes = 32MiB", rss>>20)
	}
	if got := dialPipe(t, n.addr).do("PING"); got != "PONG" {
		t.Fatalf("server after slow reader: %q", got)
	}
}

// TestPipelinedBigRepliesToAReader: a client that pipelines more replies
// than max_output_bytes holds but reads them as they come is slowed down,
// not closed (redis-benchmark -d 262144 -P 300 used to fail with "Server
// closed the connection"): its requests wait while its backlog drains.
func TestPipelinedBigRepliesToAReader(t *testing.T) {
	n := startNode(t, `max_output_bytes = "8MiB"`, "")
	p := dialPipe(t, n.addr)
	value := strings.Repeat("v", 256<<10)
	if got := p.do("PUT|big|" + value); got != "OK" {
		t.Fatal(got)
	}
	const gets = 200 // 50 MiB of replies, six times the limit
	for round := 0; round < 2; round++ {
		p.send(strings.Repeat("GET|big\n", gets))
		for i := 0; i < gets; i++ {
			if got := p.recv(); got != "VALUE|"+value {
				t.Fatalf("round %d, reply %d: %.40q", round, i, got)
			}
		}
	}
	if got := p.do("PING"); got != "PONG" {
		t.Fatalf("after the pipelines: %q", got)
	}
}

// procStatus returns a size field (VmRSS, VmHWM) of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s", field)
	return 0
}

// TestRangeOverByteBound: a RANGE whose pairs add up to more than 64 MiB
// is refused with a hint instead of built (1000 pairs of 32 MiB values
// would be 32 GB); SCAN over the same keys returns fewer keys per call and
// still pages through all of them.
func TestRangeOverByteBound(t *testing.T) {
	n := startNode(t, "", "")
	p := dialPipe(t, n.addr)
	value := strings.Repeat("v", 1<<20)
	for i := 0; i < 70; i++ {
		if got := p.do(fmt.Sprintf("PUT|big%02d|%s", i, value)); got != "OK" {
			t.Fatalf("PUT: %q", got)
		}
	}
	if got := p.do("RANGE|big|"); !strings.HasPrefix(got, "ERROR|range reply too large") {
		t.Fatalf("RANGE over 64 MiB: %.80q", got)
	}
	if got := p.do("RANGE|big|big10"); !strings.HasPrefix(got, "RANGE|10|big00|") {
		t.Fatalf("RANGE of 10 MiB: %.80q", got)
	}
	ctx := ctxT(t)
	r := newRedis(t, n.addr)
	seen := map[string]bool{}
	calls := 0
	for cursor := uint64(0); ; calls++ {
		keys, next, err := r.Scan(ctx, cursor, "big*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			seen[k] = true
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(seen) != 70 || calls < 1 {
		t.Fatalf("SCAN paged through %d of 70 keys in %d calls", len(seen), calls+1)
	}
}
