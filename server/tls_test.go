package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/certs"
	"github.com/kvstore/kv/certs/certstest"
	"github.com/kvstore/kv/conf"
)

// tlsServer is a test server with a TLS port.
type tlsServer struct {
	s       *Server
	plain   string // the plain port
	tlsAddr string
	ca      *certstest.CA
}

// startTLSServer starts a server on a slowStore with a TLS port whose
// certificate ca issued; mutate may change the configuration further.
func startTLSServer(t *testing.T, mutate func(*conf.Server)) *tlsServer {
	t.Helper()
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "server", 2)
	s, addr, done := serveTestServer(t, newSlowStore(), func(c *conf.Server) {
		c.TLSListen, c.TLSCertFile, c.TLSKeyFile = "127.0.0.1:0", cert, key
		if mutate != nil {
			mutate(c)
		}
	}, nil)
	stopAtCleanup(t, s, done)
	return &tlsServer{s: s, plain: addr, tlsAddr: s.TLSAddr().String(), ca: ca}
}

// dial connects to the TLS port trusting the test CA, presenting
// cert/key when given.
func (ts *tlsServer) dial(t *testing.T, certFile, keyFile string) (*tls.Conn, error) {
	t.Helper()
	pool, err := certs.LoadPool(ts.ca.File)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", ts.tlsAddr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	// With TLS 1.3 a refused client certificate shows on the first read.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

func (ts *tlsServer) mustDial(t *testing.T) *tls.Conn {
	t.Helper()
	c, err := ts.dial(t, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exchange writes req and reads n lines of reply.
func exchange(t *testing.T, c net.Conn, r *bufio.Reader, req string, n int) []string {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	out := make([]string, n)
	for i := range out {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d lines %q: %v", i, out[:i], err)
		}
		out[i] = strings.TrimRight(line, "\r\n")
	}
	return out
}

// TestTLSPort: both protocols over TLS, pipelined in order, a value larger
// than a TLS record and than the bridge's buffers, a write seen through
// the plain port and back; a client that speaks plain TCP to the TLS port
// gets no service and the server stays fine.
func TestTLSPort(t *testing.T) {
	ts := startTLSServer(t, nil)
	c := ts.mustDial(t)
	r := bufio.NewReader(c)
	if got := exchange(t, c, r, "PUT|k|v1\nGET|k\n", 2); fmt.Sprint(got) != "[OK VALUE|v1]" {
		t.Fatalf("replies %q", got)
	}
	rc := ts.mustDial(t)
	if got := exchange(t, rc, bufio.NewReader(rc), "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n", 3); fmt.Sprint(got) != "[$2 v1 +PONG]" {
		t.Fatalf("RESP replies %q", got)
	}
	var req strings.Builder
	want := make([]string, 0, 2000)
	for i := range 1000 {
		fmt.Fprintf(&req, "PUT|p%d|%d\nGET|p%d\n", i, i, i)
		want = append(want, "OK", fmt.Sprintf("VALUE|%d", i))
	}
	if got := exchange(t, c, r, req.String(), len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pipelined replies out of order: first %q", got[:4])
	}
	big := bytes.Repeat([]byte("x"), 1<<20)
	if got := exchange(t, c, r, "PUT|big|"+string(big)+"\nGET|big\n", 2); got[0] != "OK" || got[1] != "VALUE|"+string(big) {
		t.Fatalf("1 MiB value: %q, %d bytes", got[0], len(got[1]))
	}

	// The plain port sees the TLS client's write, and the other way round.
	p, err := net.Dial("tcp", ts.plain)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pr := bufio.NewReader(p)
	if got := exchange(t, p, pr, "GET|k\nPUT|k|v2\n", 2); fmt.Sprint(got) != "[VALUE|v1 OK]" {
		t.Fatalf("plain port: %q", got)
	}
	if got := exchange(t, c, r, "GET|k\n", 1); got[0] != "VALUE|v2" {
		t.Fatalf("TLS port after a plain write: %q", got)
	}

	// Plain text on the TLS port: the handshake fails, nothing is served.
	raw, err := net.Dial("tcp", ts.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(raw, "PUT|k|plain\n")
	if b, _ := io.ReadAll(raw); bytes.Contains(b, []byte("OK")) {
		t.Fatalf("plain request on the TLS port answered: %q", b)
	}
	if got := exchange(t, c, r, "GET|k\n", 1); got[0] != "VALUE|v2" {
		t.Fatalf("after plain text on the TLS port: %q", got)
	}
}

// TestTLSClientCertificates: with tls_ca_file, only clients with a
// certificate that CA signed are served.
func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	var ts *tlsServer
	clientCA := certstest.NewCA(t, dir)
	ts = startTLSServer(t, func(c *conf.Server) { c.TLSCAFile = clientCA.File })
	ping := func(c *tls.Conn) error {
		if _, err := io.WriteString(c, "PING\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "PONG\n" {
			err = fmt.Errorf("reply %q", line)
		}
		return err
	}
	check := func(name, cert, key string, served bool) {
		t.Helper()
		c, err := ts.dial(t, cert, key)
		if err == nil {
			err = ping(c)
		}
		if served && err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !served && err == nil {
			t.Fatalf("%s: served", name)
		}
	}
	cert, key := clientCA.Issue(t, dir, "client", 3)
	check("client certificate of the CA", cert, key, true)
	check("no client certificate", "", "", false)
	otherDir := t.TempDir()
	ocert, okey := certstest.NewCA(t, otherDir).Issue(t, otherDir, "client", 3)
	check("client certificate of another CA", ocert, okey, false)
}

// TestTLSCloses: a connection the server closes (QUIT, idle_timeout) ends
// with close_notify after the last reply.
func TestTLSCloses(t *testing.T) {
	ts := startTLSServer(t, func(c *conf.Server) { c.IdleTimeout = conf.Duration(300 * time.Millisecond) })
	c := ts.mustDial(t)
	r := bufio.NewReader(c)
	if got := exchange(t, c, r, "PUT|a|1\nQUIT\n", 2); fmt.Sprint(got) != "[OK OK]" {
		t.Fatalf("replies %q", got)
	}
	// A clean end of the stream (close_notify) reads as io.EOF; a
	// connection cut without it as io.ErrUnexpectedEOF or a reset.
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after QUIT: %v, want io.EOF", err)
	}

	idle := ts.mustDial(t)
	start := time.Now()
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: %v, want io.EOF", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("idle connection closed after %s", time.Since(start))
	}

	waitConns(ts, 0)
}

// TestTLSMaxConnections: TLS connections count in max_connections with
// plain ones, and one over it gets the refusal line over TLS.
func TestTLSMaxConnections(t *testing.T) {
	ts := startTLSServer(t, func(c *conf.Server) { c.MaxConnections = 2 })
	a, b := ts.mustDial(t), ts.mustDial(t)
	for _, x := range []*tls.Conn{a, b} {
		if got := exchange(t, x, bufio.NewReader(x), "PING\n", 1); got[0] != "PONG" {
			t.Fatalf("PING: %q", got)
		}
	}
	waitConns(ts, 2)
	third := ts.mustDial(t)
	io.WriteString(third, "PING\n")
	if b, _ := io.ReadAll(third); string(b) != refusedFull {
		t.Fatalf("over max_connections: %q", b)
	}
	a.Close()
	b.Close()
	waitConns(ts, 0)
	if c := ts.mustDial(t); exchange(t, c, bufio.NewReader(c), "PING\n", 1)[0] != "PONG" {
		t.Fatal("no service once the others closed")
	}
}

// TestMaxConnectionsNotEarly: a connection handed to a loop counted
// once in max_connections, not both as being handed over and as open, so
// a client dialing right after another, at exactly the limit, is served
// (TestTLSMaxConnections refused its second client now and then).
func TestMaxConnectionsNotEarly(t *testing.T) {
	ts := startTLSServer(t, func(c *conf.Server) { c.MaxConnections = 2 })
	for i := range 50 {
		var cs []net.Conn
		for range 2 {
			c, err := net.DialTimeout("tcp", ts.plain, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			cs = append(cs, c)
		}
		for _, c := range cs {
			if got := exchange(t, c, bufio.NewReader(c), "PING\n", 1); got[0] != "PONG" {
				t.Fatalf("round %d: PING: %q", i, got)
			}
		}
		for _, c := range cs {
			c.Close()
		}
		waitConns(ts, 0)
	}
}

// waitConns waits until the server counts n connections.
func waitConns(ts *tlsServer, n int64) {
	deadline := time.Now().Add(5 * time.Second)
	for ts.s.conns.Load() != n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := ts.s.conns.Load(); got != n {
		panic(fmt.Sprintf("%d connections, want %d", got, n))
	}
}

// TestTLSNonReadingClient: a client that pipelines large GETs and never
// reads is closed (max_output_bytes in the loop, the write stall in the
// bridge), and its bridge goes away.
func TestTLSNonReadingClient(t *testing.T) {
	ts := startTLSServer(t, nil)
	ts.s.tlsStall.Store(int64(500 * time.Millisecond))
	// A small receive buffer, so that the bridge's writes to the client
	// block soon after the client stops reading.
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	raw, err := d.Dial("tcp", ts.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := certs.LoadPool(ts.ca.File)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	defer c.Close()
	r := bufio.NewReader(c)
	val := strings.Repeat("v", 256<<10)
	if got := exchange(t, c, r, "PUT|big|"+val+"\n", 1); got[0] != "OK" {
		t.Fatalf("PUT: %q", got)
	}
	// The server stops reading once half of max_output_bytes is queued;
	// the writes then block until the connection is closed.
	go func() {
		for {
			if _, err := io.WriteString(c, strings.Repeat("GET|big\n", 64)); err != nil {
				return
			}
		}
	}()
	// The bridge gives up on the client after tlsStall without progress
	// (the loop alone would wait 5 s for the backlog to shrink).
	start := time.Now()
	for ts.s.conns.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	deadline := time.Now().Add(4 * time.Second)
	for ts.s.conns.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("non-reading TLS client still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("closed after %s", time.Since(start))
	if !waitBridges(&ts.s.bridges, time.After(10*time.Second)) {
		t.Fatal("bridge of the closed connection still running")
	}
	// The client finds its connection closed once it reads.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Logf("reading the closed connection: %v", err)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "broken pipe")
}

// TestTLSBadFiles: Serve fails at once, naming the key, when the
// certificate cannot be loaded.
func TestTLSBadFiles(t *testing.T) {
	cfg := conf.Default().Server
	cfg.Listen, cfg.TLSListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCertFile, cfg.TLSKeyFile = "/nonexistent/server.pem", "/nonexistent/server-key.pem"
	s := New(cfg, newSlowStore(), Info{}, nil, nil)
	if err := s.Serve(); err == nil || !strings.Contains(err.Error(), "server.tls_cert_file") {
		t.Fatalf("Serve: %v", err)
	}
}

// TestTLSShutdownWithSilentClient: a client that connects to the TLS port
// and sends nothing does not hold up Shutdown for the handshake timeout.
func TestTLSShutdownWithSilentClient(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "server", 2)
	s, _, done := serveTestServer(t, newSlowStore(), func(c *conf.Server) {
		c.TLSListen, c.TLSCertFile, c.TLSKeyFile = "127.0.0.1:0", cert, key
	}, nil)
	silent, err := net.Dial("tcp", s.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for s.enrolling.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if d := time.Since(start); d > tlsHandshakeTimeout/2 {
		t.Fatalf("Shutdown took %s with a silent client mid-handshake", d)
	}
}

// TestAdminTLS: with admin_tls the admin endpoint speaks HTTPS only, and
// with tls_ca_file it serves only clients with a certificate of that CA.
func TestAdminTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "server", 2)
	clientCert, clientKey := ca.Issue(t, dir, "prometheus", 3)
	pool, err := certs.LoadPool(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	get := func(url string, certs ...tls.Certificate) (int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs},
		}}
		resp, err := c.Get(url)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, mutual := range []bool{false, true} {
		cfg := conf.Server{TLSCertFile: cert, TLSKeyFile: key}
		if mutual {
			cfg.TLSCAFile = ca.File
		}
		tlsCfg, err := TLSConfig(cfg, "admin", nil)
		if err != nil {
			t.Fatal(err)
		}
		a, err := StartAdmin("127.0.0.1:0", "", tlsCfg, newSlowStore(), prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(context.Background())
		if code, err := get("http://" + a.Addr() + "/healthz"); err == nil && code == http.StatusOK {
			t.Fatal("plain HTTP served")
		}
		pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
		if err != nil {
			t.Fatal(err)
		}
		if code, err := get("https://"+a.Addr()+"/metrics", pair); err != nil || code != http.StatusOK {
			t.Fatalf("mutual %v: HTTPS with a client certificate: %d %v", mutual, code, err)
		}
		code, err := get("https://" + a.Addr() + "/healthz")
		if served := err == nil && code == http.StatusOK; served == mutual {
			t.Fatalf("mutual %v: HTTPS without a client certificate: %d %v", mutual, code, err)
		}
	}
}
