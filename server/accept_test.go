package server

import (
	"bufio"
	"context"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/kvstore/kv/conf"
)

// TestAcceptSurvivesDescriptorExhaustion: with every descriptor of the
// process in use, accepting fails with EMFILE; the server must wait and
// accept the connection once descriptors free up, not stop (gnet's own
// acceptor stopped the whole engine on it, and kvserver exited). With one
// descriptor free for the server, the accept succeeds and handing the
// connection to a loop (a duplicate of its descriptor) fails: the
// connection must wait too, not be dropped.
func TestAcceptSurvivesDescriptorExhaustion(t *testing.T) {
	for _, serverFree := range []int{0, 1} {
		addr := startTestServer(t, newSlowStore(), nil)
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
		restore := func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) }

		// Take every descriptor but the client's socket and serverFree.
		var fillers []*os.File
		for {
			f, err := os.Open(os.DevNull)
			if err != nil {
				break
			}
			fillers = append(fillers, f)
		}
		for range 1 + serverFree {
			fillers[len(fillers)-1].Close()
			fillers = fillers[:len(fillers)-1]
		}
		c, dialErr := net.DialTimeout("tcp", addr, 2*time.Second)
		time.Sleep(300 * time.Millisecond) // the server meets EMFILE meanwhile
		for _, f := range fillers {
			f.Close()
		}
		restore()
		if dialErr != nil {
			t.Fatalf("%d free: dial: %v", serverFree, dialErr)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("PING\n")); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || line != "PONG\n" {
			t.Fatalf("%d free for the server: PING once descriptors are free again: %q, %v", serverFree, line, err)
		}
		c2, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c2.SetDeadline(time.Now().Add(5 * time.Second))
		c2.Write([]byte("PING\n"))
		if line, err := bufio.NewReader(c2).ReadString('\n'); err != nil || line != "PONG\n" {
			t.Fatalf("PING on a new connection: %q, %v", line, err)
		}
		c2.Close()
	}
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
