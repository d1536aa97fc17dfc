package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
)

// startAuthTestServer starts a server with requirepass pw and stops it at
// the end of the test.
func startAuthTestServer(t *testing.T, pw string) string {
	t.Helper()
	return startTestServer(t, newSlowStore(), func(c *conf.Server) { c.RequirePass = pw })
}

// readAll reads what c sends until it closes or stays silent for wait.
func readAll(c net.Conn, wait time.Duration) []byte {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out
		}
	}
}

// TestPreAuthFrameLimit: before AUTH a request may not be long (a client
// without the password could otherwise make the server hold
// max_frame_bytes per connection); after AUTH the configured limit applies,
// even to a long request pipelined behind the AUTH in the same write.
func TestPreAuthFrameLimit(t *testing.T) {
	addr := startAuthTestServer(t, "pw")
	big := strings.Repeat("x", 1<<20)

	t.Run("pipe", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go c.Write([]byte("PUT|k|" + big)) // no newline: an unfinished line
		got := string(readAll(c, 5*time.Second))
		if got != "ERROR|request too large\n" {
			t.Fatalf("unauthenticated 1 MiB line: got %.80q, want the error and a close", got)
		}
	})
	t.Run("resp", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go c.Write(appendRESP(nil, "PING", big))
		got := string(readAll(c, 5*time.Second))
		if !strings.HasPrefix(got, "-ERR Protocol error") {
			t.Fatalf("unauthenticated 1 MiB PING: got %.80q, want a protocol error and a close", got)
		}
	})
	t.Run("resp many args", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("*100000\r\n"))
		got := string(readAll(c, 5*time.Second))
		if !strings.HasPrefix(got, "-ERR Protocol error") {
			t.Fatalf("unauthenticated *100000: got %.80q, want a protocol error and a close", got)
		}
	})
	t.Run("after AUTH", func(t *testing.T) {
		for _, proto := range []string{"pipe", "resp"} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			var req []byte
			want := "OK\nOK\nVALUE|" + big + "\n"
			if proto == "pipe" {
				req = []byte("AUTH|pw\nPUT|k|" + big + "\nGET|k\n")
			} else {
				req = appendRESP(nil, "AUTH", "pw")
				req = appendRESP(req, "SET", "k", big)
				req = appendRESP(req, "GET", "k")
				want = fmt.Sprintf("+OK\r\n+OK\r\n$%d\r\n%s\r\n", len(big), big)
			}
			go c.Write(req)
			r := bufio.NewReader(c)
			got := make([]byte, len(want))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(r, got); err != nil || string(got) != want {
				t.Errorf("%s: AUTH then a 1 MiB write: %v, got %.80q", proto, err, got)
			}
			c.Close()
		}
	})
	t.Run("HELLO AUTH", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := appendRESP(nil, "HELLO", "2", "AUTH", "default", "pw")
		req = appendRESP(req, "SET", "k", big)
		go c.Write(req)
		r := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The HELLO map, then +OK.
		var got []string
		for len(got) == 0 || got[len(got)-1] != "+OK\r\n" {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("HELLO AUTH then a 1 MiB SET: %v after %q", err, got)
			}
			got = append(got, line)
		}
	})
}

// TestPreAuthOutputLimit: a client without the password cannot pile up
// PING echoes it does not read.
func TestPreAuthOutputLimit(t *testing.T) {
	addr := startAuthTestServer(t, "pw")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	msg := strings.Repeat("x", 60<<10)
	var req []byte
	const n = 100 // 6 MiB of echoes
	for range n {
		req = appendRESP(req, "PING", msg)
	}
	go c.Write(req)
	time.Sleep(500 * time.Millisecond) // not reading
	got := readAll(c, 3*time.Second)
	if echoes := bytes.Count(got, []byte(msg)); echoes >= n {
		t.Fatalf("unauthenticated client got all %d echoes: not limited", echoes)
	}
}

// TestHTTPRequestClosesPipeConnection: an HTTP request (what a web page
// can make a browser send to the client port) is recognised on its first
// line and its body is never run.
func TestHTTPRequestClosesPipeConnection(t *testing.T) {
	for _, req := range []string{
		"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nPUT|pwned|yes\n",
		"POST /x|y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPUT|pwned|yes\n", // request line split at a '|'
	} {
		addr := startAuthTestServer(t, "")
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(req))
		got := string(readAll(c, 5*time.Second))
		c.Close()
		if !strings.Contains(got, "HTTP request") {
			t.Errorf("HTTP request: got %q, want an error and a close", got)
		}
		c, err = net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET|pwned\n"))
		r := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		c.Close()
		if err != nil || line != "NOT_FOUND\n" {
			t.Errorf("after an HTTP request with a PUT body: GET|pwned = %q, %v; want NOT_FOUND", line, err)
		}
	}
}

// TestWrongPasswordsCloseConnection: a connection is closed after
// maxAuthFailures wrong passwords (each still answered), so guessing
// costs a connection per few tries; fewer, then the right one, work.
func TestWrongPasswordsCloseConnection(t *testing.T) {
	addr := startAuthTestServer(t, "s3cret")
	var req strings.Builder
	for range maxAuthFailures - 1 {
		req.WriteString("AUTH|guess\n")
	}
	req.WriteString("AUTH|s3cret\nPING\n")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(req.String()))
	got := string(readAll(c, 2*time.Second))
	if strings.Count(got, "ERROR|invalid password\n") != maxAuthFailures-1 || !strings.HasSuffix(got, "OK\nPONG\n") {
		t.Fatalf("%d wrong passwords then the right one: %q", maxAuthFailures-1, got)
	}

	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte(strings.Repeat("AUTH|guess\n", maxAuthFailures+5)))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(c2)
	if err != nil {
		t.Fatalf("connection not closed after %d wrong passwords: %v", maxAuthFailures, err)
	}
	if n := strings.Count(string(all), "ERROR|invalid password\n"); n != maxAuthFailures {
		t.Fatalf("%d refusals before the close, want %d", n, maxAuthFailures)
	}
}

// TestUnauthenticatedConnectionsTimeOut: with requirepass set, a connection
// that has not authenticated within authTimeout is closed, however much it
// trickles; an authenticated one stays.
func TestUnauthenticatedConnectionsTimeOut(t *testing.T) {
	s, addr, done := serveTestServer(t, newSlowStore(), func(c *conf.Server) { c.RequirePass = "s3cret" }, nil)
	s.authTimeout.Store(int64(300 * time.Millisecond))
	stopAtCleanup(t, s, done)
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	authed, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer authed.Close()
	r := bufio.NewReader(authed)
	authed.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(authed, "AUTH|s3cret\n")
	if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
		t.Fatalf("AUTH: %q %v", line, err)
	}
	for range 3 { // trickling keeps a connection busy, not authenticated
		silent.Write([]byte("P"))
		time.Sleep(200 * time.Millisecond)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("unauthenticated connection still open after the deadline: %v", err)
	}
	fmt.Fprint(authed, "PING\n")
	if line, err := r.ReadString('\n'); err != nil || line != "PONG\n" {
		t.Fatalf("authenticated connection: %q %v", line, err)
	}
}
