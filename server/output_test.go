package server

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// respConn sends RESP commands and decodes their replies.
type respConn struct {
	c   net.Conn
	d   *codec.ReplyDecoder
	buf []byte
}

// do sends one command and returns its reply (valid until the next do).
func (r *respConn) do(t *testing.T, args ...string) codec.Reply {
	t.Helper()
	if _, err := r.c.Write(appendRESP(nil, args...)); err != nil {
		t.Fatal(err)
	}
	r.buf = r.buf[:0]
	chunk := make([]byte, 64<<10)
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if len(r.buf) >= r.d.Need() {
			reply, n, err := r.d.Decode(r.buf)
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				return reply
			}
		}
		m, err := r.c.Read(chunk)
		if err != nil {
			t.Fatalf("%s: %v", args[0], err)
		}
		r.buf = append(r.buf, chunk[:m]...)
	}
}

// frontGatedStore answers GETs of "front" only once released, and GETs of
// anything else at once from another goroutine: replies behind the front
// complete while the front keeps them from being written.
type frontGatedStore struct {
	*slowStore
	release chan struct{}
}

func (f *frontGatedStore) Get(key []byte, done func([]byte, error)) {
	if string(key) == "front" {
		go func() { <-f.release; done([]byte("f"), nil) }()
		return
	}
	f.mu.Lock()
	v := f.data[string(key)]
	f.mu.Unlock()
	go done([]byte(v), nil)
}

// TestAsyncRepliesCountAgainstOutputLimit: replies completed by other
// goroutines but stuck behind an unanswered request count against
// max_output_bytes. 200 GETs of a 1 MiB value pipelined behind a slow one
// (4096 pending reads of a 1 MiB value in cluster mode once held 4 GB)
// neither close the connection nor keep the store busy reading them again
// while the front waits; once it is answered every reply arrives, in order.
func TestAsyncRepliesCountAgainstOutputLimit(t *testing.T) {
	gated := &frontGatedStore{slowStore: newSlowStore(), release: make(chan struct{})}
	st := &countingGets{Store: gated}
	gated.data["big"] = strings.Repeat("v", 1<<20)
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := append([]byte("GET|front\n"), bytes.Repeat([]byte("GET|big\n"), 200)...)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	// The store settles: reads whose replies were dropped over the limit
	// wait for the front instead of being read again and again.
	waitGetsSettle(t, &st.gets, "the front waits")
	close(gated.release)
	br := bufio.NewReaderSize(c, 1<<20)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || line != "VALUE|f\n" {
		t.Fatalf("front reply %q: %v", line, err)
	}
	want := "VALUE|" + gated.data["big"] + "\n"
	for i := 0; i < 200; i++ {
		line, err := br.ReadString('\n')
		if err != nil || line != want {
			t.Fatalf("reply %d: %d bytes, %v", i, len(line), err)
		}
	}
	// Each dropped reply is read again once, give or take the window's
	// first estimate of the reply size.
	if n := st.gets.Load(); n > 3*201 {
		t.Fatalf("%d store reads for 201 GETs", n)
	}
}

// countingGets counts the Gets it passes on.
type countingGets struct {
	store.Store
	gets atomic.Int64
}

func (c *countingGets) Get(key []byte, done func([]byte, error)) {
	c.gets.Add(1)
	c.Store.Get(key, done)
}

// TestPipelinedAsyncReadsOfBigValues: a client that pipelines far more
// reads of a big value than max_output_bytes holds, and reads its replies,
// gets them all when the store answers asynchronously (cluster mode, disk
// reads), as it does when reads are answered on the loop; it used to be
// closed at the limit because every read was handed to the store at once.
// Both protocols.
func TestPipelinedAsyncReadsOfBigValues(t *testing.T) {
	st := newSlowStore()
	st.data["big"] = strings.Repeat("v", 256<<10)
	counted := &countingStore{slowStore: st}
	addr := startTestServer(t, counted, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20 })
	const n = 600 // 150 MiB of replies
	for _, proto := range []string{"pipe", "resp"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		var req, reply []byte
		if proto == "pipe" {
			req = bytes.Repeat([]byte("GET|big\n"), n)
			reply = []byte("VALUE|" + st.data["big"] + "\n")
		} else {
			req = bytes.Repeat(respReq([]string{"GET", "big"}), n)
			reply = []byte("$262144\r\n" + st.data["big"] + "\r\n")
		}
		go c.Write(req)
		c.SetReadDeadline(time.Now().Add(workloadDeadline))
		got := make([]byte, len(reply))
		for i := 0; i < n; i++ {
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("%s: reply %d: %v", proto, i, err)
			}
			if !bytes.Equal(got, reply) {
				t.Fatalf("%s: reply %d differs", proto, i)
			}
		}
		c.Close()
	}
	if most := counted.most.Load(); most > maxAsyncReads {
		t.Fatalf("%d reads in flight at once, want at most %d", most, maxAsyncReads)
	}
}

// countingStore counts the Gets in flight and records the most at once;
// its answers come from other goroutines.
type countingStore struct {
	*slowStore
	inflight, most atomic.Int64
}

func (c *countingStore) Get(key []byte, done func([]byte, error)) {
	n := c.inflight.Add(1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
	c.slowStore.Get(key, func(v []byte, err error) {
		c.inflight.Add(-1)
		done(v, err)
	})
}

// TestMultiKeyReadsAreBounded: MGET, EXISTS and DEL of many keys keep at
// most multiGetWindow reads in flight, and an MGET whose values add up to
// more than max_output_bytes is refused instead of assembled.
func TestMultiKeyReadsAreBounded(t *testing.T) {
	st := &countingStore{slowStore: newSlowStore()}
	st.data["big"] = strings.Repeat("v", 1<<20)
	st.data["small"] = "s"
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 4 << 20 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &respConn{c: c, d: codec.NewReplyDecoder(codec.Limits{MaxFrame: 64 << 20})}
	args := []string{"MGET"}
	for i := 0; i < 2000; i++ {
		args = append(args, "small", "missing")
	}
	reply := r.do(t, args...)
	if len(reply.Elems) != 4000 || string(reply.Elems[3998].Str) != "s" || !reply.Elems[3999].Null {
		t.Fatalf("MGET of 4000 keys: %d elements", len(reply.Elems))
	}
	args[0] = "EXISTS"
	if reply := r.do(t, args...); reply.Int != 2000 {
		t.Fatalf("EXISTS: %+v", reply)
	}
	if most := st.most.Load(); most > multiGetWindow {
		t.Fatalf("%d reads in flight at once for one command, want at most %d", most, multiGetWindow)
	}
	big := []string{"MGET"}
	for i := 0; i < 5; i++ {
		big = append(big, "big")
	}
	if reply := r.do(t, big...); reply.Type != '-' || !strings.Contains(string(reply.Str), "reply too large") {
		t.Fatalf("MGET of 5 MiB with max_output_bytes 4 MiB: %c %q", reply.Type, reply.Str)
	}
	if reply := r.do(t, "MGET", "big", "big", "small"); len(reply.Elems) != 3 || len(reply.Elems[1].Str) != 1<<20 {
		t.Fatalf("MGET of 2 MiB after the refusal: %c %d elements", reply.Type, len(reply.Elems))
	}
}

// heldWritesStore holds every write's acknowledgement until released, as
// a stalled engine does, and counts the bytes it was handed.
type heldWritesStore struct {
	*slowStore
	mu      sync.Mutex
	bytes   int64
	release chan struct{}
}

func (h *heldWritesStore) Write(b *lsm.Batch, done func(error)) {
	h.mu.Lock()
	h.bytes += int64(b.Size())
	h.mu.Unlock()
	go func() { <-h.release; done(nil) }()
}

// TestPendingWriteBytesAreBounded: a client pipelining big writes into a
// store that does not acknowledge them is parked once 64 MiB of its writes
// wait (the count limit alone let 4096 writes of up to 32 MiB each wait);
// once the store catches up, every write is answered.
func TestPendingWriteBytesAreBounded(t *testing.T) {
	st := &heldWritesStore{slowStore: newSlowStore(), release: make(chan struct{})}
	addr := startTestServer(t, st, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100
	put := []byte("PUT|k|" + strings.Repeat("v", 1<<20) + "\n")
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if _, err := c.Write(put); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	last := st.settledBytes()
	if limit := int64(maxPendingWriteBytes + 2<<20); last > limit {
		t.Fatalf("%d MiB of writes handed to a store that acknowledged none, want at most %d MiB", last>>20, limit>>20)
	}
	close(st.release)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := 0; i < n; i++ {
		if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
			t.Fatalf("reply %d: %q, %v", i, line, err)
		}
	}
}

// heldWriteLocal is a standalone store whose next write is acknowledged
// only once released; reads are the engine's, in place.
type heldWriteLocal struct {
	*store.Local
	hold    atomic.Bool
	release chan struct{}
}

func (h *heldWriteLocal) Write(b *lsm.Batch, done func(error)) {
	if !h.hold.CompareAndSwap(true, false) {
		h.Local.Write(b, done)
		return
	}
	h.Local.Write(b, func(err error) { go func() { <-h.release; done(err) }() })
}

// TestDeferredReadsDrainUnderBackPressure: GETs pipelined behind a pending
// write wait in the reply queue and run when it completes; their replies
// (200 x 256 KiB, six times max_output_bytes) are handed out as the client
// reads them instead of assembled at once past the limit, which closed the
// connection.
func TestDeferredReadsDrainUnderBackPressure(t *testing.T) {
	dir := t.TempDir()
	db, err := lsm.Open(dir, lsm.Options{Sync: lsm.SyncNone})
	if err != nil {
		t.Fatal(err)
	}
	st := &heldWriteLocal{Local: store.NewLocal(db, "x"), release: make(chan struct{})}
	t.Cleanup(func() { st.Close() })
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReaderSize(c, 1<<20)
	value := strings.Repeat("v", 256<<10)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("PUT|big|" + value + "\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
		t.Fatalf("PUT: %q, %v", line, err)
	}
	st.hold.Store(true)
	const gets = 200
	if _, err := c.Write([]byte("PUT|other|x\n" + strings.Repeat("GET|big\n", gets))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the GETs are queued behind the PUT
	close(st.release)
	if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
		t.Fatalf("held PUT: %q, %v", line, err)
	}
	for i := 0; i < gets; i++ {
		line, err := r.ReadString('\n')
		if err != nil || line != "VALUE|"+value+"\n" {
			t.Fatalf("GET %d: %.30q, %v", i, line, err)
		}
	}
}

// overlapStore answers ranges from another goroutine a little later, and
// records how many of them were in flight at once.
type overlapStore struct {
	*slowStore
	inFlight, most atomic.Int64
}

func (f *overlapStore) Range(start, end []byte, limit int, done func([]store.KV, error)) {
	n := f.inFlight.Add(1)
	for m := f.most.Load(); n > m && !f.most.CompareAndSwap(m, n); m = f.most.Load() {
	}
	f.slowStore.Range(start, end, limit, func(kvs []store.KV, err error) {
		f.inFlight.Add(-1)
		done(kvs, err)
	})
}

// TestOneRangeInFlight: a connection's ranges reach the store one at a
// time. A range the store answers later (a cluster fans it out to every
// shard) holds its pairs until it completes, and its reply counts against
// max_output_bytes only then: a client pipelining 300 RANGEs of 3 MB and
// reading nothing held 5.7 GB in a cluster node when they all ran at once.
// Every reply still arrives, in order, on both protocols.
func TestOneRangeInFlight(t *testing.T) {
	st := &overlapStore{slowStore: newSlowStore()}
	st.data["k"] = "v"
	addr := startTestServer(t, st, nil)
	for _, proto := range []struct {
		name, req, reply string
	}{
		{"pipe", "RANGE|a|z\n", "RANGE|1|k|v\n"},
		{"resp", "*2\r\n$4\r\nSCAN\r\n$1\r\n0\r\n", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n"},
	} {
		t.Run(proto.name, func(t *testing.T) {
			st.most.Store(0)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const n = 50
			if _, err := c.Write([]byte(strings.Repeat(proto.req, n))); err != nil {
				t.Fatal(err)
			}
			want := strings.Repeat(proto.reply, n)
			got := make([]byte, len(want))
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
				t.Fatalf("replies %q, %v; want %d of %q", got, err, n, proto.reply)
			}
			if m := st.most.Load(); m != 1 {
				t.Fatalf("%d ranges of one connection were in the store at once, want 1", m)
			}
		})
	}
}

// TestWritesOfAllClientsAreBounded: clients pipelining big writes into a
// store that acknowledges none (a stalled engine) are parked once the
// writes waiting for it, all clients together, reach max_input_bytes;
// each client's own bound (64 MiB) let every connection queue that much
// (200 connections pipelining 1 MiB SETs held 6.3 GB). Once the store
// catches up, every write is answered. (What the parked clients send
// meanwhile waits unparsed, within max_input_bytes too: here less than
// that, so none is closed.)
func TestWritesOfAllClientsAreBounded(t *testing.T) {
	st := &heldWritesStore{slowStore: newSlowStore(), release: make(chan struct{})}
	const budget = 16 << 20
	addr := startTestServer(t, st, func(c *conf.Server) {
		// A parked connection may hold 2 x max_frame_bytes of input: more
		// than its whole pipeline.
		c.MaxFrameBytes, c.MaxInputBytes = 4<<20, budget
	})
	const conns, n, size = 6, 5, 1 << 20
	put := []byte("PUT|k|" + strings.Repeat("v", size) + "\n")
	set := appendRESP(nil, "SET", "k", strings.Repeat("v", size))
	cs := make([]net.Conn, conns)
	sent := make(chan error, conns)
	for i := range cs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
		req := put
		if i%2 == 1 {
			req = set
		}
		go func() {
			for range n {
				if _, err := c.Write(req); err != nil {
					sent <- err
					return
				}
			}
			sent <- nil
		}()
	}
	for range cs {
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	}
	last := st.settledBytes()
	// Over the budget by at most about a write per connection, and well
	// under the conns*n MiB sent.
	if limit := int64(budget + (conns+2)*size); last > limit {
		t.Fatalf("%d MiB of writes handed to a store that acknowledged none, want at most %d MiB (max_input_bytes %d MiB)", last>>20, limit>>20, budget>>20)
	}
	close(st.release)
	for i, c := range cs {
		r := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for j := range n {
			if line, err := r.ReadString('\n'); err != nil || (line != "OK\n" && line != "+OK\r\n") {
				t.Fatalf("conn %d reply %d: %q, %v", i, j, line, err)
			}
		}
	}
}

// settledBytes waits until the bytes handed over to st stop growing (at
// most 10 s) and returns them.
func (st *heldWritesStore) settledBytes() int64 {
	var last int64 = -1
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		st.mu.Lock()
		b := st.bytes
		st.mu.Unlock()
		if b == last && b > 0 {
			break
		}
		last = b
	}
	return last
}

// waitGetsSettle waits until gets stops growing (two readings 200 ms
// apart agree, after at least one get) and returns it; it fails the test
// if the store is still read after 10 s while what says.
func waitGetsSettle(t *testing.T, gets *atomic.Int64, what string) int64 {
	t.Helper()
	var settled int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		n := gets.Load()
		if n == settled && n > 0 {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store is still read while %s: %d gets", what, n)
		}
		settled = n
	}
}
