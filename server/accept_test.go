package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/internal/logtest"
)

// exhaustDescriptors lowers the process's open-file limit to a little
// above what it uses and opens /dev/null until no descriptor is left but
// free of them. release closes those files and restores the limit; it
// also runs at the end of the test. No test using it may run in parallel:
// the limit is the whole process's.
func exhaustDescriptors(t *testing.T, free int) (release func()) {
	t.Helper()
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Skip(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	lim := orig
	lim.Cur = uint64(len(fds) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip(err)
	}
	var fillers []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fillers = append(fillers, f)
	}
	for range free {
		fillers[len(fillers)-1].Close()
		fillers = fillers[:len(fillers)-1]
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, f := range fillers {
				f.Close()
			}
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
		})
	}
	t.Cleanup(release)
	return release
}

// TestAcceptSurvivesDescriptorExhaustion: with one descriptor free for the
// server, the accept succeeds and handing the connection to a loop (a
// duplicate of its descriptor) fails with EMFILE: the connection must
// wait, not be dropped, and be served once descriptors free up; the server
// must not stop either (gnet's own acceptor stopped the whole engine on
// EMFILE, and kvserver exited). With none free, see
// TestAcceptRefusesWhenOutOfDescriptors.
func TestAcceptSurvivesDescriptorExhaustion(t *testing.T) {
	addr := startTestServer(t, newSlowStore(), nil)
	release := exhaustDescriptors(t, 2) // the client's socket and the server's
	c, dialErr := net.DialTimeout("tcp", addr, 2*time.Second)
	time.Sleep(300 * time.Millisecond) // the server meets EMFILE meanwhile
	release()
	if dialErr != nil {
		t.Fatalf("dial: %v", dialErr)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("PING\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || line != "PONG\n" {
		t.Fatalf("PING once descriptors are free again: %q, %v", line, err)
	}
	checkServes(t, addr)
}

// checkServes checks that a new connection to addr is served.
func checkServes(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("PING\n"))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "PONG\n" {
		t.Fatalf("PING on a new connection: %q, %v", line, err)
	}
}

// TestAcceptRefusesWhenOutOfDescriptors: with no descriptor left, accept
// fails with EMFILE; clients used to connect (the kernel completes the
// handshake) and then hear nothing, for as long as descriptors were
// short. Each must get the max_connections refusal line at once, while
// descriptors are still short, counted in rejected_connections and
// logged (rate-limited, with the limit and the count); once descriptors
// free up, connections are served again.
func TestAcceptRefusesWhenOutOfDescriptors(t *testing.T) {
	logger, rec := logtest.New()
	s, addr := startLoggingServer(t, logger)
	release := exhaustDescriptors(t, 1) // the client's socket
	limit := openFileLimit()
	const clients = 3
	for i := range clients {
		// One client at a time: each takes the descriptor the previous
		// one freed, so the server never has one but its reserve.
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("client %d: dial: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if line != refusedFull {
			t.Fatalf("client %d, out of descriptors: got %q, %v; want %q", i, line, err, refusedFull)
		}
	}
	release()
	if got := s.rejected.Load(); got != clients {
		t.Errorf("rejected_connections = %d, want %d", got, clients)
	}
	checkServes(t, addr)

	all := rec.Records()
	warned := logtest.Matching(all, "out of file descriptors; refusing new connections")
	if len(warned) != 1 || !strings.Contains(warned[0], fmt.Sprintf(" limit=%d ", limit)) || !strings.Contains(warned[0], " refused=1") {
		t.Errorf("refusals logged as %q, want one warning with limit=%d refused=1", warned, limit)
	}
	recovered := logtest.Matching(all, "file descriptors available again")
	if len(recovered) != 1 || !strings.Contains(recovered[0], fmt.Sprintf(" refused=%d", clients-1)) {
		t.Errorf("recovery logged as %q, want one record with the %d refusals not logged yet", recovered, clients-1)
	}
}

// startLoggingServer is startTestServer with the server logging to logger.
func startLoggingServer(t *testing.T, logger *slog.Logger) (*Server, string) {
	t.Helper()
	s, addr, done := serveLoggingTestServer(t, newSlowStore(), nil, nil, logger)
	stopAtCleanup(t, s, done)
	return s, addr
}

// TestBusyLoopDoesNotStopAccepting: while one of two loops is stuck in a
// callback, new connections handed to the other are served (accepting
// used to wait for each connection's loop in turn, so one stuck loop
// stopped it, and gnet's choice of loop sent it every new connection).
func TestBusyLoopDoesNotStopAccepting(t *testing.T) {
	st := &gatedStore{slowStore: newSlowStore(), entered: make(chan struct{}), release: make(chan struct{})}
	s, addr, served := serveTestServer(t, st, nil, nil)
	a, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Write([]byte("GET|k\n"))
	<-st.entered // a's loop is stuck in store.Get
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 6 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write([]byte("PING\n"))
	}
	pongs := make(chan bool, len(conns))
	for _, c := range conns {
		go func(c net.Conn) {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			pongs <- line == "PONG\n"
		}(c)
	}
	ok := 0
	for range conns {
		if <-pongs {
			ok++
		}
	}
	if ok < 3 {
		t.Errorf("%d of 6 new connections served with one of two loops stuck", ok)
	}
	close(st.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-served
}

// TestShutdownTwice: a second Shutdown returns the first one's result
// instead of stopping the loops again.
func TestShutdownTwice(t *testing.T) {
	s, addr, done := serveTestServer(t, newSlowStore(), nil, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown %d: %v", i+1, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("listening after Shutdown")
	}
}

// TestListenNetwork: an IPv4 address listens on IPv4 only, an IPv6 one
// on IPv6 only (Go's "tcp" on 0.0.0.0 is a dual-stack socket that takes
// IPv6 connections too, which gnet's listener did not).
func TestListenNetwork(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:8080":   "tcp4",
		"127.0.0.1:8080": "tcp4",
		"[::]:8080":      "tcp6",
		"[::1]:8080":     "tcp6",
		"localhost:8080": "tcp",
		":8080":          "tcp",
	} {
		if got := listenNetwork(addr); got != want {
			t.Errorf("listenNetwork(%q) = %q, want %q", addr, got, want)
		}
	}
}

// TestConnectionsSpreadOverLoops: 50 connections made at once are spread
// over the loops (handed over concurrently, they all went to the first).
func TestConnectionsSpreadOverLoops(t *testing.T) {
	s, addr, _ := serveTestServer(t, newSlowStore(), func(c *conf.Server) { c.EventLoops = 2 }, nil)
	conns := dialN(t, addr, 50)
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("PING\n"))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "PONG\n" {
			t.Fatalf("conn %d: %q %v", i, line, err)
		}
	}
	s.loopsMu.Lock()
	loops := make([]*loop, 0, len(s.loops))
	for _, l := range s.loops {
		loops = append(loops, l)
	}
	s.loopsMu.Unlock()
	if len(loops) != 2 {
		t.Fatalf("%d loops have had connections, want 2", len(loops))
	}
	for _, l := range loops {
		n := make(chan int, 1)
		l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error { n <- len(l.conns); return nil }))
		if got := <-n; got < 15 {
			t.Errorf("a loop has %d of 50 connections", got)
		}
	}
}

// TestRefusalSpeaksTheClientsProtocol: a connection over max_connections
// is refused in the protocol of its first command (a Redis client cannot
// read the pipe line), in the pipe protocol when it sends nothing, and is
// closed after the line (a clean end of stream, not a reset).
func TestRefusalSpeaksTheClientsProtocol(t *testing.T) {
	addr := startTestServer(t, newSlowStore(), func(c *conf.Server) { c.MaxConnections = 1 })
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write([]byte("PING\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(held).ReadString('\n'); err != nil || line != "PONG\n" {
		t.Fatalf("held connection: %q %v", line, err)
	}
	for _, c := range []struct{ name, send, want string }{
		{"resp", "*1\r\n$4\r\nPING\r\n", "-ERR max number of clients reached\r\n"},
		{"pipe", "PING\n", refusedFull},
		{"silent", "", refusedFull},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if c.send != "" {
				if _, err := conn.Write([]byte(c.send)); err != nil {
					t.Fatal(err)
				}
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(conn)
			if err != nil || string(got) != c.want {
				t.Fatalf("got %q, %v; want %q then the end of the stream", got, err, c.want)
			}
		})
	}
}
