package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func dialT(t *testing.T, s *fakeServer, opts Options) *Client {
	t.Helper()
	c, err := Dial(s.addr(), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPutGetDelete(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()

	keys := [][]byte{
		[]byte("plain"),
		[]byte("pipe|in|key"),
		[]byte("back\\slash"),
		[]byte("new\nline\r\n"),
		{0, 1, 2, '|', '\\', 0},
		bytes.Repeat([]byte("k"), 1000),
	}
	for i, k := range keys {
		v := append([]byte(fmt.Sprintf("value %d|\\\n\r", i)), 0)
		if err := c.Put(ctx, k, v); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
		got, err := c.Get(ctx, k)
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Get(%q) = %q, %v; want %q", k, got, err, v)
		}
	}
	if err := c.Put(ctx, []byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, []byte("empty")); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Get(empty value) = %#v, %v; want a non-nil empty value", got, err)
	}
	if err := c.Delete(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, keys[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(deleted) err = %v, want ErrNotFound", err)
	}
	if err := c.Delete(ctx, []byte("never-there")); err != nil {
		t.Fatalf("Delete(missing) = %v", err)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("server accepted %d connections for sequential requests, want 1 (reuse)", n)
	}
}

func TestReturnedSlicesAreCopies(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	c.Put(ctx, []byte("a"), []byte("first"))
	c.Put(ctx, []byte("b"), []byte("second"))
	a, _ := c.Get(ctx, []byte("a"))
	if _, err := c.Get(ctx, []byte("b")); err != nil {
		t.Fatal(err)
	}
	if string(a) != "first" {
		t.Fatalf("earlier Get result changed to %q", a)
	}
}

func TestRange(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	for _, k := range []string{"a", "b", "b|x", "c", "d"} {
		if err := c.Put(ctx, []byte(k), []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		start, end string
		limit      int
		want       []string
	}{
		{"b", "d", 0, []string{"b", "b|x", "c"}},
		{"", "", 0, []string{"a", "b", "b|x", "c", "d"}},
		{"b", "", 2, []string{"b", "b|x"}},
		{"x", "", 0, nil},
	}
	for _, tt := range tests {
		kvs, err := c.Range(ctx, []byte(tt.start), []byte(tt.end), tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, string(kv.Key))
			if string(kv.Value) != "v"+string(kv.Key) {
				t.Errorf("value of %q = %q", kv.Key, kv.Value)
			}
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Range(%q, %q, %d) = %q, want %q", tt.start, tt.end, tt.limit, got, tt.want)
		}
	}
	// Appending to a returned key must not overwrite its value.
	kvs, _ := c.Range(ctx, []byte("a"), []byte("b"), 0)
	_ = append(kvs[0].Key, 'Z')
	if string(kvs[0].Value) != "va" {
		t.Fatalf("value clobbered: %q", kvs[0].Value)
	}
}

func TestBatch(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	kvs := []KV{{[]byte("x|1"), []byte("one")}, {[]byte("x\\2"), []byte("")}, {[]byte("x3"), []byte("three\n")}}
	if err := c.Batch(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		got, err := c.Get(ctx, kv.Key)
		if err != nil || !bytes.Equal(got, kv.Value) {
			t.Fatalf("Get(%q) = %q, %v", kv.Key, got, err)
		}
	}
	if err := c.Batch(ctx, nil); err != nil {
		t.Fatalf("empty Batch = %v", err)
	}
}

func TestCluster(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()

	st, err := c.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range st.Fields() {
		names = append(names, f.Name)
	}
	want := []string{"mode", "state", "node_id", "nodes", "nodes_up", "shards", "shards_with_leader", "extra"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("field order %q, want %q", names, want)
	}
	if st.Get("state") != "healthy" || st.Get("extra") != "a=b" || st.Get("missing") != "" {
		t.Errorf("Get: state=%q extra=%q", st.Get("state"), st.Get("extra"))
	}
	if _, ok := st.Lookup("missing"); ok {
		t.Error("Lookup(missing) found something")
	}

	nodes, err := c.ClusterNodes(ctx)
	if err != nil || len(nodes) != 2 || !strings.HasSuffix(nodes[1], "state=down") {
		t.Fatalf("ClusterNodes = %q, %v", nodes, err)
	}

	leader, err := c.ClusterLeader(ctx, nil)
	if err != nil || leader != "id=1,client=127.0.0.1:8080" {
		t.Fatalf("ClusterLeader() = %q, %v", leader, err)
	}
	leader, err = c.ClusterLeader(ctx, []byte("k|1"))
	if err != nil || leader != "id=2,client=127.0.0.1:8081,key=k|1" {
		t.Fatalf("ClusterLeader(key) = %q, %v", leader, err)
	}

	if err := c.ClusterRemove(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if se, ok := errorsAs[*ServerError](c.ClusterRemove(ctx, 0)); !ok || se.Msg != "bad node id" {
		t.Fatalf("ClusterRemove(0) error %v", se)
	}
}

func TestDoAndServerError(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()

	reply, err := c.Do(ctx, []byte("put"), []byte("k"), []byte("v|w"))
	if err != nil || len(reply) != 1 || string(reply[0]) != "OK" {
		t.Fatalf("Do(put) = %q, %v", reply, err)
	}
	reply, err = c.Do(ctx, []byte("GET"), []byte("k"))
	if err != nil || !reflect.DeepEqual(reply, [][]byte{[]byte("VALUE"), []byte("v|w")}) {
		t.Fatalf("Do(GET) = %q, %v", reply, err)
	}
	_, err = c.Do(ctx, []byte("FROB"), []byte("x"))
	se, ok := errorsAs[*ServerError](err)
	if !ok || se.Msg != "unknown command 'FROB'" {
		t.Fatalf("Do(FROB) err = %v, want ServerError", err)
	}
	if _, err := c.Do(ctx); err == nil {
		t.Fatal("Do() with no fields succeeded")
	}
	// A server error leaves the connection in the pool.
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1", n)
	}
}

func TestMalformedReplyDiscardsConnection(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()

	_, err := c.Get(ctx, []byte("x"))
	if !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	for _, cmd := range []string{"BADREPLY", "BADESCAPE"} {
		// Do accepts any reply shape, so send these through Get's parser.
		err := c.roundTrip(ctx, "GET", func(b []byte) []byte { return appendRequest(b, cmd) }, 1,
			func(_ int, f [][]byte) error { _, err := parseGet(f); return err })
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: err = %v, want a reply error", cmd, err)
		}
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.accepted.Load(); n != 3 {
		t.Errorf("accepted %d connections, want 3 (each malformed reply discards one)", n)
	}
	if _, ok := errorsAs[*ReplyError](c.simple(ctx, "BADREPLY", "OK")); !ok {
		t.Error("unexpected reply shape is not a *ReplyError")
	}
}

func TestAuth(t *testing.T) {
	s := newFakeServer(t, "s3cret")
	ctx := context.Background()

	if _, err := Dial(s.addr(), Options{Password: "wrong"}); err == nil {
		t.Fatal("Dial with a wrong password succeeded")
	} else if se, ok := errorsAs[*ServerError](err); !ok || se.Msg != "invalid password" {
		t.Fatalf("Dial(wrong password) = %v", err)
	}

	// PING needs no AUTH, so Dial succeeds; the first real command does not.
	nopw := dialT(t, s, Options{})
	if se, ok := errorsAs[*ServerError](nopw.Put(ctx, []byte("k"), []byte("v"))); !ok || !strings.HasPrefix(se.Msg, "NOAUTH") {
		t.Fatalf("Put without password: %v", se)
	}

	// Auth authenticates the whole pool, connections opened before too.
	late := dialT(t, s, Options{PoolSize: 2})
	if err := late.Auth(ctx, "wrong"); err == nil {
		t.Fatal("Auth with a wrong password succeeded")
	}
	if err := late.Auth(ctx, "s3cret"); err != nil {
		t.Fatal(err)
	}
	var lwg sync.WaitGroup
	for g := range 8 {
		lwg.Go(func() {
			if err := late.Put(ctx, []byte(fmt.Sprint("late", g)), []byte("v")); err != nil {
				t.Errorf("Put after Auth: %v", err)
			}
		})
	}
	lwg.Wait()

	c := dialT(t, s, Options{Password: "s3cret", PoolSize: 4})
	before := s.accepted.Load()
	authsBefore := s.auths.Load()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				k := []byte(fmt.Sprintf("g%d-%d", g, i))
				if err := c.Put(ctx, k, k); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if conns, auths := s.accepted.Load()-before, s.auths.Load()-authsBefore; conns != auths || conns == 0 {
		t.Errorf("%d new connections but %d AUTHs; every new connection must authenticate", conns, auths)
	}
}

func TestPoolBoundsConnections(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{PoolSize: 3})
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for i := range 50 {
				k := []byte(fmt.Sprintf("g%d-%d", g, i))
				if err := c.Put(ctx, k, k); err != nil {
					t.Error(err)
					return
				}
				if v, err := c.Get(ctx, k); err != nil || !bytes.Equal(v, k) {
					t.Errorf("Get(%s) = %q, %v", k, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if m := s.maxOpen.Load(); m > 3 {
		t.Errorf("server saw %d connections open at once, PoolSize is 3", m)
	}
	if n := s.accepted.Load(); n > 3 {
		t.Errorf("server accepted %d connections; healthy connections must be reused", n)
	}
}

func TestPoolWaitRespectsContext(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{PoolSize: 1, Timeout: -1})
	busy := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), []byte("SLEEP"), []byte("1000"))
		busy <- err
	}()
	// Wait until the sleeper holds the only connection.
	for s.open.Load() == 0 || len(c.pool.tokens) == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ping while pool busy = %v, want DeadlineExceeded", err)
	}
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
}

func TestTimeoutDiscardsConnection(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{Timeout: 50 * time.Millisecond})
	ctx := context.Background()
	_, err := c.Do(ctx, []byte("SLEEP"), []byte("5000"))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a net.Error with Timeout()", err)
	}
	// The late OK must not be read as the reply to the next request.
	if _, err := c.Get(ctx, []byte("nothing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after timeout = %v, want ErrNotFound", err)
	}
	if n := s.accepted.Load(); n != 2 {
		t.Errorf("accepted %d connections, want 2 (the timed-out one discarded)", n)
	}
}

func TestContextDeadlineAndCancel(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{Timeout: time.Minute})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := c.Do(ctx, []byte("SLEEP"), []byte("5000")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: err = %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		for s.open.Load() < 2 { // the new connection is open: the request is in flight
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
		cancel()
	}()
	if _, err := c.Do(ctx, []byte("SLEEP"), []byte("5000")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: err = %v", err)
	}
	if err := c.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping with a cancelled context = %v", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestServerHangsUp(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	_, err := c.Do(ctx, []byte("HANGUP"))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want unexpected EOF", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after hang-up: %v", err)
	}
}

// Some ERROR replies come just before the server closes the connection.
func TestErrorThenClose(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()

	// "request too large" always closes: the connection is dropped at once.
	_, err := c.Do(ctx, []byte("TOOLARGE"))
	if se, ok := errorsAs[*ServerError](err); !ok || se.Msg != "request too large" {
		t.Fatalf("err = %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after request too large: %v", err)
	}

	// Other errors leave the connection suspect: probed before reuse.
	_, err = c.Do(ctx, []byte("ERRCLOSE"))
	if _, ok := errorsAs[*ServerError](err); !ok {
		t.Fatalf("err = %v", err)
	}
	for s.open.Load() > 0 { // wait for the server side of the close
		time.Sleep(time.Millisecond)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after ERROR and close: %v", err)
	}

	// The same inside a pipeline, which keeps the ERROR as a result.
	one := dialT(t, s, Options{PoolSize: 1})
	for _, cmd := range []string{"TOOLARGE", "ERRCLOSE"} {
		p := one.Pipeline()
		p.Do([]byte(cmd))
		res, err := p.Exec(ctx)
		if _, ok := errorsAs[*ServerError](err); !ok || len(res) != 1 {
			t.Fatalf("pipeline of %s: %v %v", cmd, res, err)
		}
		for s.open.Load() > 1 { // the other client's connection stays
			time.Sleep(time.Millisecond)
		}
		if err := one.Ping(ctx); err != nil {
			t.Fatalf("Ping after a pipelined %s: %v", cmd, err)
		}
	}
}

func TestQuitDoesNotPoisonPool(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	if reply, err := c.Do(ctx, []byte("quit")); err != nil || string(reply[0]) != "OK" {
		t.Fatalf("QUIT = %q, %v", reply, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after QUIT: %v", err)
	}
}

// hangUpIdle has the server close every connection and marks c's idle
// ones as idle long enough to be probed before reuse.
func hangUpIdle(s *fakeServer, c *Client) {
	s.hangUpAll()
	for s.open.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	c.pool.mu.Lock()
	for _, cn := range c.pool.idle {
		cn.lastUsed = time.Time{}
	}
	c.pool.mu.Unlock()
}

// A connection the server closed while idle (idle_timeout, restart) is
// noticed before reuse instead of failing the next request.
func TestIdleConnectionClosedByServer(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	hangUpIdle(s, c)
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after the server closed the idle connection: %v", err)
	}
}

func TestLargeValues(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	v := bytes.Repeat([]byte("0123456789|\\\n"), 100_000) // ~1.3 MiB, escapes throughout
	if err := c.Put(ctx, []byte("big"), v); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, []byte("big"))
	if err != nil || !bytes.Equal(got, v) {
		t.Fatalf("Get(big): %d bytes, %v", len(got), err)
	}
}

// TestReplyOverMaxReplyBytes: a reply longer than Options.MaxReplyBytes
// fails with an error naming that option and its value, not the codec's
// "request too large", which reads as the server's limit; the connection,
// with the rest of the reply unread, is closed.
func TestReplyOverMaxReplyBytes(t *testing.T) {
	s := newFakeServer(t, "")
	small := dialT(t, s, Options{MaxReplyBytes: 1 << 20})
	ctx := context.Background()
	_, err := small.Do(ctx, []byte("BIG"), []byte("2000000"))
	if err == nil || !strings.Contains(err.Error(), "Options.MaxReplyBytes (1048576 bytes)") || strings.Contains(err.Error(), "request too large") {
		t.Fatalf("reply over MaxReplyBytes: %v; want an error naming Options.MaxReplyBytes and its value", err)
	}
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("reply over MaxReplyBytes: %v; want ErrOutcomeUnknown (the request was sent)", err)
	}
	if reply, err := small.Do(ctx, []byte("BIG"), []byte("1000")); err != nil || len(reply[1]) != 1000 {
		t.Fatalf("after oversize reply: %v", err)
	}
	if n := s.accepted.Load(); n != 2 {
		t.Errorf("accepted %d connections, want 2 (the one with the oversize reply closed)", n)
	}
}

func TestClose(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	c.Close()
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
	for s.open.Load() > 0 {
		time.Sleep(time.Millisecond) // the idle connection was closed
	}
}

func TestDialFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Dial(addr, Options{DialTimeout: time.Second}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Dial(closed port) = %v, want an error naming %s", err, addr)
	}
}

// TestDialTimeoutBoundsAuth: a server that accepts but never answers makes
// Dial fail after DialTimeout, AUTH included, not after the request timeout.
func TestDialTimeoutBoundsAuth(t *testing.T) {
	start := time.Now()
	_, err := Dial(silentServer(t), Options{Password: "pw", DialTimeout: 100 * time.Millisecond, Timeout: 5 * time.Second})
	if err == nil {
		t.Fatal("Dial of a silent server succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Dial took %v with DialTimeout 100ms: %v", d, err)
	}
}

// TestOversizeRequestIsServerError: kvserver answers a request longer than
// max_frame_bytes with ERROR|request too large and closes before reading
// the rest, so the client's write fails (connection reset). The reply
// already received is the answer: a *ServerError saying the request was
// refused, not a network error whose outcome would be unknown.
func TestOversizeRequestIsServerError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close() // with unread input: the kernel resets
				buf := make([]byte, 64<<10)
				var got []byte
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					got = append(got, buf[:n]...)
					if bytes.Equal(got, []byte("PING\n")) {
						c.Write([]byte("PONG\n"))
						got = got[:0]
						continue
					}
					if len(got) > 1<<20 {
						c.Write([]byte("ERROR|request too large\n"))
						return
					}
				}
			}(c)
		}
	}()
	c, err := Dial(ln.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Put(context.Background(), []byte("k"), bytes.Repeat([]byte("x"), 64<<20))
	if se, ok := errorsAs[*ServerError](err); !ok || se.Msg != "request too large" {
		t.Fatalf("Put of a value over the server's frame limit = %v, want the server's ERROR", err)
	}
}

// TestClosedClientFailsAtOnce: a call on a closed client returns ErrClosed
// at once, even while every pooled connection is busy with a slow request.
func TestClosedClientFailsAtOnce(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{PoolSize: 1})
	busy := make(chan struct{})
	go func() {
		close(busy)
		c.Do(context.Background(), []byte("SLEEP"), []byte("2000"))
	}()
	<-busy
	for len(c.pool.tokens) == 0 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	start := time.Now()
	err := c.Ping(context.Background())
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Ping after Close waited %v for the busy connection", d)
	}
}

// TestIdleConnectionOutlivesItsDeadline: an idle connection whose last
// request's deadline has passed is reused, not taken for dead. The
// liveness probe is a raw read, which fails at once on a socket whose
// deadline has passed, so every connection idle for longer than Timeout
// was closed and redialed (and re-authenticated).
func TestIdleConnectionOutlivesItsDeadline(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	c.pool.mu.Lock()
	for _, cn := range c.pool.idle {
		cn.lastUsed = time.Time{} // idle long enough to be probed
		cn.nc.SetDeadline(pastDeadline)
	}
	c.pool.mu.Unlock()
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1 (the idle one reused)", n)
	}
}

// TestServerRestartFailsOneRequest: when a connection turns out to be
// closed by the server (a restart), the other idle ones, possibly closed
// by the same restart, are probed before reuse even if used a moment ago,
// so the restart fails the one request that found out, not one request
// per pooled connection.
func TestServerRestartFailsOneRequest(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{PoolSize: 3})
	var held []*conn
	for range 3 {
		cn, err := c.pool.get(context.Background(), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		// A round trip, so that the server has taken the connection in
		// (hangUpAll closes only those).
		if _, err := cn.exchange(context.Background(), time.Time{}, func(b []byte) []byte { return appendRequest(b, "PING") }, 1,
			func(_ int, f [][]byte) error { return expect("PING", f, "PONG") }); err != nil {
			t.Fatal(err)
		}
		held = append(held, cn)
	}
	for _, cn := range held {
		c.pool.put(cn, true) // used just now: not probed before reuse
	}
	s.hangUpAll()
	for s.open.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	ctx := context.Background()
	if err := c.Ping(ctx); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("first Ping after the restart = %v, want a broken connection", err)
	}
	for i := range 2 {
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("Ping %d after the restart: %v", i+2, err)
		}
	}
}

// TestAuthAfterPasswordChange: after the server's password changed (a
// restart with a new requirepass), Auth with the new one succeeds even
// when it has to open a connection: that connection authenticates with
// the new password, not the old one the server now refuses.
func TestAuthAfterPasswordChange(t *testing.T) {
	old := newFakeServer(t, "old")
	addr := old.addr()
	c := dialT(t, old, Options{Password: "old"})
	old.close()
	s := newFakeServerAt(t, addr, "new")
	ctx := context.Background()
	if err := c.Put(ctx, []byte("k"), []byte("v")); err == nil {
		t.Fatal("Put with the old password succeeded")
	}
	if err := c.Auth(ctx, "new"); err != nil {
		t.Fatalf("Auth with the new password: %v", err)
	}
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("Put after Auth: %v", err)
	}
	if err := c.Auth(ctx, "wrong"); err == nil {
		t.Fatal("Auth with a wrong password succeeded")
	}
	// A failed Auth changes nothing: new connections still use "new".
	hangUpIdle(s, c)
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("Put after a failed Auth: %v", err)
	}
}
