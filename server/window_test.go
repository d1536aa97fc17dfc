package server

import (
	"bufio"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// TestIdleCloseReturnsItsInput: connections closed for idleness with
// partial requests buffered give their share of the server-wide input
// back (it used to stay counted, and max_input_bytes then refused every
// long request until a restart).
func TestIdleCloseReturnsItsInput(t *testing.T) {
	st := newSlowStore()
	s, addr, _ := serveTestServer(t, st, func(c *conf.Server) {
		c.EventLoops = 1
		c.MaxFrameBytes = 1 << 20
		c.MaxInputBytes = 2 << 20
		c.IdleTimeout = conf.Duration(300 * time.Millisecond)
	}, nil)
	// 5 clients each send 500 KB of an unfinished pipe line, then go quiet.
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("PUT|k|" + strings.Repeat("x", 500000)))
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // idle sweep closes them
	if n := s.input.Load(); n != 0 {
		t.Errorf("after the idle closes: %d bytes of input still counted", n)
	}
	// A fresh client now sends a 200 KB PUT in pieces.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("PUT|k2|" + strings.Repeat("y", 200000) + "\n")
	go writeInPieces(c, req, time.Millisecond)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if line != "OK\n" {
		t.Errorf("fresh 200 KB PUT got %q (%v), want OK", line, err)
	}
}

// syncGated: a SyncReader whose "slow" key would block (its async read
// takes 2 s) and whose "big" key is in memory.
type syncGated struct {
	*slowStore
	release chan struct{}
}

func (f *syncGated) GetSync(key []byte) ([]byte, error) {
	if string(key) == "slow" {
		return nil, store.ErrWouldBlock
	}
	return f.lookup(key)
}

func (f *syncGated) Get(key []byte, done func([]byte, error)) {
	if string(key) == "slow" {
		go func() { <-f.release; done([]byte("s"), nil) }()
		return
	}
	f.slowStore.Get(key, done)
}

// TestRepliesQueuedOnTheLoopAreBounded: replies answered from memory but
// queued behind a read that waits on the disk count against
// max_output_bytes (4000 pipelined GETs of 256 KiB grew the heap by a
// gigabyte): the connection stops parsing until the front is answered,
// and then every reply arrives.
func TestRepliesQueuedOnTheLoopAreBounded(t *testing.T) {
	st := &syncGated{slowStore: newSlowStore(), release: make(chan struct{})}
	st.data["big"] = strings.Repeat("v", 256<<10)
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20 })
	heap0 := liveHeap()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET|slow\n" + strings.Repeat("GET|big\n", 1000)
	go c.Write([]byte(req))
	time.Sleep(time.Second)
	checkHeapGrowth(t, heap0)
	close(st.release)
	readReplies(t, c, append([]string{"VALUE|s\n"}, repeat("VALUE|"+st.data["big"]+"\n", 1000)...))
}

// readReplies reads one line from c for each of want and checks it.
func readReplies(t *testing.T, c net.Conn, want []string) {
	t.Helper()
	br := bufio.NewReaderSize(c, 1<<20)
	c.SetReadDeadline(time.Now().Add(workloadDeadline))
	for i, w := range want {
		if line, err := br.ReadString('\n'); err != nil || line != w {
			t.Fatalf("reply %d: %d bytes (%.20q), want %d: %v", i, len(line), line, len(w), err)
		}
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// warmStore: "big" would block until some read completed (the cache is
// warm then); "slow" is answered only on release.
type warmStore struct {
	*slowStore
	release chan struct{}
	warm    atomic.Bool
	gets    atomic.Int64
}

func (f *warmStore) GetSync(key []byte) ([]byte, error) {
	if string(key) == "slow" || !f.warm.Load() {
		return nil, store.ErrWouldBlock
	}
	return f.lookup(key)
}

func (f *warmStore) Get(key []byte, done func([]byte, error)) {
	f.gets.Add(1)
	if string(key) == "slow" {
		go func() { <-f.release; done([]byte("s"), nil) }()
		return
	}
	f.mu.Lock()
	v := f.data[string(key)]
	f.mu.Unlock()
	time.AfterFunc(500*time.Millisecond, func() { done([]byte(v), nil) })
}

// TestHeldReadsAnsweredOnTheLoopAreBounded: reads held for the read window
// that are answered on the loop when they start (the cache warmed up
// meanwhile) count against the window, which stops starting them (it used
// to start all 2000: 516 MiB for one connection).
func TestHeldReadsAnsweredOnTheLoopAreBounded(t *testing.T) {
	st := &warmStore{slowStore: newSlowStore(), release: make(chan struct{})}
	st.data["big"] = strings.Repeat("v", 256<<10)
	st.data["small"] = "s"
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20; c.EventLoops = 1 })
	heap0 := liveHeap()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET|slow\n" + strings.Repeat("GET|small\n", 200) + strings.Repeat("GET|big\n", 600)
	go c.Write([]byte(req))
	time.Sleep(200 * time.Millisecond)
	st.warm.Store(true)
	time.Sleep(time.Second)
	t.Logf("store Gets %d", st.gets.Load())
	checkHeapGrowth(t, heap0)
	close(st.release)
	want := append([]string{"VALUE|s\n"}, repeat("VALUE|s\n", 200)...)
	readReplies(t, c, append(want, repeat("VALUE|"+st.data["big"]+"\n", 600)...))
}

// frontThenWrite: "front" is answered on release, and right after it, on
// the same goroutine, the pending write completes.
type frontThenWrite struct {
	*slowStore
	release   chan struct{}
	writeDone atomic.Value
}

func (f *frontThenWrite) Get(key []byte, done func([]byte, error)) {
	f.mu.Lock()
	v := f.data[string(key)]
	f.mu.Unlock()
	if string(key) == "front" {
		go func() {
			<-f.release
			done([]byte(v), nil)
			if wd, ok := f.writeDone.Load().(func(error)); ok {
				wd(nil)
			}
		}()
		return
	}
	go done([]byte(v), nil)
}

// TestFrontReplyDoesNotCloseAReader: the front's reply, kept whatever its
// size, does not count against the replies owed behind it: a RANGE reply
// completing right after it used to find the limit passed and close the
// connection of a client that reads everything.
func TestFrontReplyDoesNotCloseAReader(t *testing.T) {
	base := newSlowStore()
	base.data["front"] = strings.Repeat("f", 1<<20)
	base.data["big"] = strings.Repeat("v", 1<<20)
	st := &frontThenWriteStore{frontThenWrite{slowStore: base, release: make(chan struct{})}}
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20; c.EventLoops = 1 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 20
	req := "GET|front\n" + strings.Repeat("GET|big\n", n) + "RANGE|a|b\n"
	c.Write([]byte(req))
	time.Sleep(500 * time.Millisecond) // the bigs completed: owed is near the limit
	close(st.release)
	br := bufio.NewReaderSize(c, 2<<20)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n+2; i++ {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d of %d: %v (the client reads everything)", i, n+2, err)
		}
		_ = line
	}
}

type frontThenWriteStore struct{ frontThenWrite }

func (f *frontThenWriteStore) Write(b *lsm.Batch, done func(error)) {
	f.mu.Lock()
	_ = b.Each(func(del bool, k, v []byte) error { f.data[string(k)] = string(v); return nil })
	f.mu.Unlock()
	f.writeDone.Store(done)
}

func (f *frontThenWriteStore) Range(start, end []byte, limit int, done func([]store.KV, error)) {
	f.writeDone.Store(func(error) { done(nil, nil) })
}

type rangeAfterReads struct{ *frontGatedStore }

func (f *rangeAfterReads) Range(start, end []byte, limit int, done func([]store.KV, error)) {
	kv := []store.KV{{Key: []byte("a1"), Value: []byte(strings.Repeat("r", 1500<<10))}}
	time.AfterFunc(100*time.Millisecond, func() { done(kv, nil) })
}

// TestReadsLeaveRoomForOtherReplies: single-key reads behind a waiting
// front take at most half of max_output_bytes (they can be read again), so
// a RANGE reply behind them, which cannot, does not find the limit passed
// and close a client that reads everything.
func TestReadsLeaveRoomForOtherReplies(t *testing.T) {
	gated := &frontGatedStore{slowStore: newSlowStore(), release: make(chan struct{})}
	gated.data["big"] = strings.Repeat("v", 1<<20)
	st := &rangeAfterReads{gated}
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 20
	c.Write([]byte("GET|front\n" + strings.Repeat("GET|big\n", n) + "RANGE|a|b\n"))
	time.Sleep(500 * time.Millisecond)
	close(gated.release)
	br := bufio.NewReaderSize(c, 2<<20)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n+2; i++ {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("reply %d of %d: %v (the client reads everything)", i, n+2, err)
		}
	}
}

// lookup reads key from f's data, as a store read that never waits.
func (f *slowStore) lookup(key []byte) ([]byte, error) {
	f.mu.Lock()
	v, ok := f.data[string(key)]
	f.mu.Unlock()
	if !ok {
		return nil, store.ErrNotFound
	}
	return []byte(v), nil
}

// liveHeap is the heap in use after a collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// checkHeapGrowth fails t if the live heap grew by more than 64 MiB since
// before: the replies one connection holds with max_output_bytes 8 MiB.
func checkHeapGrowth(t *testing.T, before int64) {
	t.Helper()
	grew := liveHeap() - before
	t.Logf("heap grew by %d MiB with max_output_bytes 8 MiB", grew>>20)
	if grew > 64<<20 {
		t.Errorf("heap grew %d MiB holding replies of one connection (max_output_bytes 8 MiB)", grew>>20)
	}
}
