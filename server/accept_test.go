package server

import (
	"bufio"
	"context"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestAcceptSurvivesDescriptorExhaustion: with every descriptor of the
// process in use, accepting fails with EMFILE; the server must wait and
// accept the connection once descriptors free up, not stop (gnet's own
// acceptor stopped the whole engine on it, and kvserver exited).
func TestAcceptSurvivesDescriptorExhaustion(t *testing.T) {
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
	defer restore()

	// Take every descriptor but one, which the client's socket takes:
	// the connection is established in the kernel, and the server's
	// accept of it fails with EMFILE.
	var fillers []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fillers = append(fillers, f)
	}
	fillers[len(fillers)-1].Close()
	fillers = fillers[:len(fillers)-1]
	c, dialErr := net.DialTimeout("tcp", addr, 2*time.Second)
	time.Sleep(300 * time.Millisecond) // the server meets EMFILE meanwhile
	for _, f := range fillers {
		f.Close()
	}
	restore()
	if dialErr != nil {
		t.Fatalf("dial with one descriptor left: %v", dialErr)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("PING\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "PONG\n" {
		t.Fatalf("PING once descriptors are free again: %q, %v", line, err)
	}
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	c2.Write([]byte("PING\n"))
	if line, err := bufio.NewReader(c2).ReadString('\n'); err != nil || line != "PONG\n" {
		t.Fatalf("PING on a new connection: %q, %v", line, err)
	}
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
