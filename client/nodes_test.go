package client

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestSeveralNodes: given a cluster's nodes, new connections go to each in
// turn, and once one dies new connections pass it over, so requests that
// follow go to the others with no error.
func TestSeveralNodes(t *testing.T) {
	s := []*fakeServer{newFakeServer(t, ""), newFakeServer(t, ""), newFakeServer(t, "")}
	addr := s[0].addr() + ", " + s[1].addr() + "," + s[2].addr()
	c, err := Dial(addr, Options{PoolSize: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Addr() != addr {
		t.Fatalf("Addr() = %q, want %q", c.Addr(), addr)
	}
	// takeAll holds every connection of the pool at once, then returns them.
	takeAll := func() []string {
		var held []*conn
		var addrs []string
		for range 6 {
			cn, err := c.pool.get(context.Background(), time.Now().Add(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, cn)
			addrs = append(addrs, cn.addr)
		}
		for _, cn := range held {
			c.pool.put(cn, true)
		}
		return addrs
	}
	takeAll()
	// The kernel completes a connection before the server's Accept returns.
	for deadline := time.Now().Add(5 * time.Second); s[0].accepted.Load()+s[1].accepted.Load()+s[2].accepted.Load() < 6 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	for i, srv := range s {
		if got := srv.accepted.Load(); got != 2 {
			t.Errorf("node %d accepted %d of 6 connections, want 2", i, got)
		}
	}

	s[1].close()
	time.Sleep(2 * livenessAfter) // idle connections are probed before reuse
	for _, a := range takeAll() {
		if a == s[1].addr() {
			t.Fatalf("a connection went to the dead node %s", a)
		}
	}
	for i := range 50 {
		if err := c.Put(context.Background(), []byte{'k', byte(i)}, []byte("v")); err != nil {
			t.Fatalf("put %d with a node down: %v", i, err)
		}
	}
}

// TestDialPassesOverDeadNodes: Dial succeeds while one node of the list is
// down; with every node down, the error names the failure and matches no
// outcome-unknown (nothing was sent).
func TestDialPassesOverDeadNodes(t *testing.T) {
	s := newFakeServer(t, "")
	c, err := Dial(deadAddr(t)+","+s.addr(), Options{})
	if err != nil {
		t.Fatalf("Dial with one node down: %v", err)
	}
	for range 10 {
		if err := c.Put(context.Background(), []byte("k"), []byte("v")); err != nil {
			t.Fatalf("put with one node down: %v", err)
		}
	}
	c.Close()

	_, err = Dial(deadAddr(t)+","+deadAddr(t), Options{})
	if err == nil || !strings.Contains(err.Error(), "no node reachable") || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Dial with every node down = %v", err)
	}
	if _, err := Dial(" , ", Options{}); err == nil {
		t.Fatal("Dial with no address succeeded")
	}
}

// TestOutcomeUnknown: errors.Is(err, ErrOutcomeUnknown) is true exactly when a
// request may have taken effect: the server said so, or the exchange broke
// after the request was sent; false for an answer (an error reply that
// refuses, a miss) and for a request never sent.
func TestOutcomeUnknown(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()

	_, err := c.Do(ctx, []byte("TIMEOUT"))
	if se, ok := errorsAs[*ServerError](err); !ok || !errors.Is(err, ErrOutcomeUnknown) || se.Msg != "timeout: outcome unknown" {
		t.Errorf("server's outcome-unknown reply: %v", err)
	}
	if _, err := c.Do(ctx, []byte("NOSUCH")); err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("refusal: %v, want a ServerError that is not outcome unknown", err)
	}
	if _, err := c.Get(ctx, []byte("missing")); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("miss: %v", err)
	}
	_, err = c.Do(ctx, []byte("HANGUP"))
	var ne net.Error
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("connection lost after the request was sent: %v, want outcome unknown", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = c.Do(cctx, []byte("SLEEP"), []byte("1000"))
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) {
		t.Errorf("deadline after the request was sent: %v, want outcome unknown, the context's error and the net.Error", err)
	}
	p := c.Pipeline()
	p.Put([]byte("a"), []byte("1"))
	p.Do([]byte("HANGUP"))
	if _, err := p.Exec(ctx); !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("pipeline cut off: %v, want outcome unknown", err)
	}
	s.close()
	if err := c.Put(ctx, []byte("k"), []byte("v")); err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("put with the server gone: %v, want a dial error (nothing sent)", err)
	}
}

// TestShutdownRefusalGoesToAnotherNode: a node that is shutting down
// refuses requests unread ("server is shutting down": nothing done), so
// the client sends the request to another node instead of failing it, and
// drops its other connections to that node unused rather than collecting
// the same refusal on each. With one address there is nowhere else to go:
// the refusal is the answer.
func TestShutdownRefusalGoesToAnotherNode(t *testing.T) {
	s := []*fakeServer{newFakeServer(t, ""), newFakeServer(t, "")}
	c, err := Dial(s[0].addr()+","+s[1].addr(), Options{PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	// Open connections to both nodes and leave them idle in the pool.
	var held []*conn
	for range 4 {
		cn, err := c.pool.get(ctx, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, cn)
	}
	for _, cn := range held {
		c.pool.put(cn, true)
	}
	s[0].stopping.Store(true)
	for i := range 20 {
		if err := c.Put(ctx, []byte("k"), []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("put %d while node 1 shuts down: %v", i, err)
		}
	}
	if got, err := c.Get(ctx, []byte("k")); err != nil || string(got) != "19" {
		t.Fatalf("get = %q, %v; want 19", got, err)
	}
	if n := s[0].refused.Load(); n > 1 {
		t.Errorf("node 1 refused %d requests; want at most 1 (its other connections dropped unused)", n)
	}

	one, err := Dial(s[1].addr(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	s[1].stopping.Store(true)
	var se *ServerError
	if err := one.Put(ctx, []byte("k"), []byte("v")); !errors.As(err, &se) || se.Msg != "server is shutting down" || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("single-node put = %v; want the definite refusal", err)
	}
}
