package client

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// isTimeout is the test the package documentation gives callers.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestTimeoutErrors checks the package documentation's claim: whichever
// bound fired, a timeout's error satisfies net.Error with Timeout() true,
// and also matches context.DeadlineExceeded when the context's deadline
// fired; a cancellation is not a timeout.
func TestTimeoutErrors(t *testing.T) {
	t.Run("Timeout", func(t *testing.T) {
		s := newFakeServer(t, "")
		c := dialT(t, s, Options{Timeout: 50 * time.Millisecond})
		_, err := c.Do(context.Background(), []byte("SLEEP"), []byte("5000"))
		if !isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a net.Error timeout, not the context's", err)
		}
	})

	t.Run("context deadline", func(t *testing.T) {
		s := newFakeServer(t, "")
		c := dialT(t, s, Options{Timeout: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Do(ctx, []byte("SLEEP"), []byte("5000"))
		if !isTimeout(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a net.Error timeout matching context.DeadlineExceeded", err)
		}
	})

	t.Run("context deadline waiting for a connection", func(t *testing.T) {
		s := newFakeServer(t, "")
		c := dialT(t, s, Options{PoolSize: 1, Timeout: -1})
		held, err := c.pool.get(context.Background(), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.pool.put(held, true)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := c.Ping(ctx); !isTimeout(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a net.Error timeout matching context.DeadlineExceeded", err)
		}
	})

	t.Run("DialTimeout connecting", func(t *testing.T) {
		ln, fill := stalledListener(t)
		fill()
		_, err := Dial(ln.Addr().String(), Options{DialTimeout: 100 * time.Millisecond})
		if !isTimeout(err) {
			t.Fatalf("Dial = %v, want a net.Error timeout", err)
		}
	})

	t.Run("DialTimeout authenticating", func(t *testing.T) {
		_, err := Dial(silentServer(t), Options{Password: "pw", DialTimeout: 100 * time.Millisecond})
		if !isTimeout(err) {
			t.Fatalf("Dial = %v, want a net.Error timeout", err)
		}
	})

	t.Run("context deadline connecting", func(t *testing.T) {
		// The first connection is accepted and answers PING; once the
		// queue is full, the next one hangs in the handshake.
		ln, fill := stalledListener(t)
		accepted := make(chan net.Conn, 1)
		go func() {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- nc
			buf := make([]byte, 64)
			for {
				if _, err := nc.Read(buf); err != nil {
					return
				}
				nc.Write([]byte("PONG\n"))
			}
		}()
		c, err := Dial(ln.Addr().String(), Options{PoolSize: 2, Timeout: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		nc := <-accepted
		defer nc.Close()
		fill()
		err = pingBesideHeldConn(t, c)
		if !isTimeout(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a net.Error timeout matching context.DeadlineExceeded", err)
		}
		if errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("err = %v matches ErrOutcomeUnknown; nothing was sent", err)
		}
	})

	t.Run("context deadline authenticating", func(t *testing.T) {
		// The first connection answers; later ones accept and stay silent.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for first := true; ; first = false {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				defer nc.Close()
				if !first {
					continue
				}
				go func() {
					sc := bufio.NewScanner(nc)
					for sc.Scan() {
						if strings.HasPrefix(sc.Text(), "AUTH") {
							nc.Write([]byte("OK\n"))
						} else {
							nc.Write([]byte("PONG\n"))
						}
					}
				}()
			}
		}()
		c, err := Dial(ln.Addr().String(), Options{Password: "pw", PoolSize: 2, Timeout: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = pingBesideHeldConn(t, c)
		if !isTimeout(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a net.Error timeout matching context.DeadlineExceeded", err)
		}
	})

	t.Run("cancelled is not a timeout", func(t *testing.T) {
		s := newFakeServer(t, "")
		c := dialT(t, s, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-s.sleeping // the request is in flight
			cancel()
		}()
		_, err := c.Do(ctx, []byte("SLEEP"), []byte("5000"))
		if !errors.Is(err, context.Canceled) || isTimeout(err) {
			t.Fatalf("err = %v, want context.Canceled and no net.Error timeout", err)
		}
	})
}

// lateContext is a context whose deadline has passed but whose timer has
// not fired yet: Done is not closed and Err is nil, as for a moment after
// any context's deadline.
type lateContext struct{ context.Context }

func (lateContext) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestDeadlinePassedWhileWaitingForConnection: a call whose deadline has
// passed by the time it gets a pooled connection (it waited for a busy
// pool) fails without sending anything: the error is a timeout that does
// not match ErrOutcomeUnknown, and the healthy connection goes back to the
// pool instead of being closed by a write that fails on the deadline.
func TestDeadlinePassedWhileWaitingForConnection(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{PoolSize: 1})
	check := func(what string, err error, want error) {
		t.Helper()
		if !errors.Is(err, want) || !isTimeout(err) || !strings.Contains(err.Error(), "not sent") {
			t.Errorf("%s: err = %v, want %v, not sent", what, err, want)
		}
		if errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("%s: err = %v matches ErrOutcomeUnknown; nothing was sent", what, err)
		}
		if err := c.Ping(context.Background()); err != nil {
			t.Fatalf("%s: Ping after: %v", what, err)
		}
		if n := s.accepted.Load(); n != 1 {
			t.Errorf("%s: accepted %d connections, want 1 (the idle one kept)", what, n)
		}
	}

	// A Timeout so short that the deadline, taken when the call starts,
	// has passed by the time pool.get returns, as after a long wait.
	c.opts.Timeout = time.Nanosecond
	err := c.Ping(context.Background())
	c.opts.Timeout = time.Minute
	check("Timeout", err, os.ErrDeadlineExceeded)

	check("context deadline", c.Ping(lateContext{context.Background()}), context.DeadlineExceeded)
}

// TestTimeoutBoundsWaitForConnection: a call that finds every pooled
// connection busy waits for one no longer than its Timeout, and fails
// unsent; before, only its context ended the wait, so with the default
// context a call behind slow requests waited as long as they took.
func TestTimeoutBoundsWaitForConnection(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{PoolSize: 1})
	held, err := c.pool.get(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.pool.put(held, true)
	got := make(chan error, 1)
	go func() {
		_, err := c.pool.get(context.Background(), time.Now().Add(50*time.Millisecond))
		got <- err
	}()
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
			t.Fatalf("wait for a busy pool = %v, want a deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the wait for a busy pool outlived its deadline")
	}
}

// pingBesideHeldConn holds c's idle connection, so that a Ping must open
// another, and returns the error of that Ping under a 100 ms context.
func pingBesideHeldConn(t *testing.T, c *Client) error {
	t.Helper()
	held, err := c.pool.get(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.pool.put(held, true)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	return c.Ping(ctx)
}
