package client

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/certs"
	"github.com/kvstore/kv/certs/certstest"
)

// TestTLS: with Options.TLS the client talks TLS, checks the server's
// certificate against the address it dials, and redials a pooled
// connection the server has closed.
func TestTLS(t *testing.T) {
	s, clientTLS := tlsFake(t)
	c := dialT(t, s, Options{TLS: clientTLS, PoolSize: 1})
	ctx := context.Background()
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	// The server closes the pooled connection (close_notify under TLS):
	// the next request goes on a new one.
	hangUpIdle(s, c)
	if v, err := c.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get after the server closed the connection = %q, %v", v, err)
	}

	// A client that does not trust the server's CA does not get through.
	other := certstest.NewCA(t, t.TempDir())
	opool, err := certs.LoadPool(other.File)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Dial(s.addr(), Options{TLS: &tls.Config{RootCAs: opool}, Timeout: time.Second})
	if err == nil {
		defer c2.Close()
		err = c2.Ping(ctx)
	}
	if err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("client of another CA: %v", err)
	}
}

// tlsFake is a fake server behind TLS with a certificate for 127.0.0.1
// from a new CA, and a client configuration that trusts that CA.
func tlsFake(t *testing.T) (*fakeServer, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "server", 2)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := serveFake(t, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}}), "")
	pool, err := certs.LoadPool(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	return s, &tls.Config{RootCAs: pool}
}
