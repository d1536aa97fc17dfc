package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// slowStore is a map-backed store.Store whose completions arrive later, on
// other goroutines, after random delays, and so out of order. It lets the
// tests check reply ordering and read-your-writes independently of the
// engine. Writes apply in submission order (as the engine's commit queue
// does) but are acknowledged in random order. With inlineOneIn > 0, one
// completion in that many runs before the call returns instead, as the
// engine's does when its commit pipeline is idle.
type slowStore struct {
	mu          sync.Mutex
	data        map[string]string
	rng         *rand.Rand
	inlineOneIn int
}

func newSlowStore() *slowStore {
	return &slowStore{data: map[string]string{}, rng: rand.New(rand.NewSource(1))}
}

func (f *slowStore) later(fn func()) {
	f.mu.Lock()
	d := time.Duration(f.rng.Intn(300)) * time.Microsecond
	inline := f.inlineOneIn > 0 && f.rng.Intn(f.inlineOneIn) == 0
	f.mu.Unlock()
	if inline {
		fn()
		return
	}
	time.AfterFunc(d, fn)
}

// orderingStores are the stores the ordering tests run against.
func orderingStores() map[string]func() *slowStore {
	return map[string]func() *slowStore{
		"async": newSlowStore,
		"mixed inline and async": func() *slowStore {
			f := newSlowStore()
			f.inlineOneIn = 2
			return f
		},
	}
}

func (f *slowStore) Get(key []byte, done func([]byte, error)) {
	f.mu.Lock()
	v, ok := f.data[string(key)]
	f.mu.Unlock()
	f.later(func() {
		if !ok {
			done(nil, store.ErrNotFound)
			return
		}
		done([]byte(v), nil)
	})
}

func (f *slowStore) Write(b *lsm.Batch, done func(error)) {
	f.mu.Lock()
	_ = b.Each(func(del bool, k, v []byte) error {
		if del {
			delete(f.data, string(k))
		} else {
			f.data[string(k)] = string(v)
		}
		return nil
	})
	f.mu.Unlock()
	f.later(func() { done(nil) })
}

func (f *slowStore) Range(start, end []byte, limit int, done func([]store.KV, error)) {
	f.mu.Lock()
	var kvs []store.KV
	for k, v := range f.data {
		if k >= string(start) && (len(end) == 0 || k < string(end)) {
			kvs = append(kvs, store.KV{Key: []byte(k), Value: []byte(v)})
		}
	}
	f.mu.Unlock()
	sort.Slice(kvs, func(i, j int) bool { return string(kvs[i].Key) < string(kvs[j].Key) })
	if len(kvs) > limit {
		kvs = kvs[:limit]
	}
	f.later(func() { done(kvs, nil) })
}

func (f *slowStore) Clear(done func(error)) {
	f.mu.Lock()
	f.data = map[string]string{}
	f.mu.Unlock()
	f.later(func() { done(nil) })
}

func (f *slowStore) ApproxKeys() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.data))
}
func (f *slowStore) Status() store.Status {
	return store.Status{Mode: "standalone", State: "healthy", NodeID: 1, Nodes: 1, NodesUp: 1, Shards: 1, ShardsWithLeader: 1}
}
func (f *slowStore) Nodes() []store.Node                          { return []store.Node{{ID: 1, Client: "x", Up: true}} }
func (f *slowStore) Leader([]byte) (store.Node, error)            { return store.Node{ID: 1, Client: "x"}, nil }
func (f *slowStore) Join(_ uint64, _, _ string, done func(error)) { done(store.ErrStandalone) }
func (f *slowStore) Remove(_ uint64, done func(error))            { done(store.ErrStandalone) }
func (f *slowStore) Deployment() uint64                           { return 0 }
func (f *slowStore) Close() error                                 { return nil }

var lastServer *Server

func startTestServer(t *testing.T, st store.Store, mutate func(*conf.Server)) string {
	t.Helper()
	return startTestServerWith(t, st, mutate, nil)
}

// startTestServerWith starts a server on a free loopback port, reporting
// into m (nil: unregistered metrics), and stops it at the end of the test.
func startTestServerWith(t *testing.T, st store.Store, mutate func(*conf.Server), m *Metrics) string {
	t.Helper()
	s, addr, done := serveTestServer(t, st, mutate, m)
	lastServer = s
	stopAtCleanup(t, s, done)
	return addr
}

// stopAtCleanup shuts s down at the end of the test and waits for its
// Serve to return (done).
func stopAtCleanup(t *testing.T, s *Server, done <-chan error) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-done
	})
}

// serveTestServer starts a server on a free loopback port and returns it,
// its address and the result of its Serve; stopping it is the caller's.
func serveTestServer(t *testing.T, st store.Store, mutate func(*conf.Server), m *Metrics) (*Server, string, <-chan error) {
	t.Helper()
	return serveLoggingTestServer(t, st, mutate, m, nil)
}

// serveLoggingTestServer is serveTestServer with the server logging to
// logger (nil: discarded).
func serveLoggingTestServer(t *testing.T, st store.Store, mutate func(*conf.Server), m *Metrics, logger *slog.Logger) (*Server, string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := conf.Default().Server
	cfg.Listen = addr
	cfg.EventLoops = 2
	if mutate != nil {
		mutate(&cfg)
	}
	s := New(cfg, st, Info{Version: "test", Mode: "standalone", Sync: "always"}, logger, m)
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitStarted(ctx); err != nil {
		t.Fatal(err)
	}
	return s, addr, done
}

// TestOrderingWithAsyncStore pipelines mixed commands from several
// connections against a store that completes out of order, and checks
// every reply against a per-connection model.
func TestOrderingWithAsyncStore(t *testing.T) {
	for name, newStore := range orderingStores() {
		t.Run(name, func(t *testing.T) {
			runClients(t, startTestServer(t, newStore(), nil), checkPipelinedModel)
		})
	}
}

// runClients runs check for clients 0 to 3 at once against addr and
// reports each failure with the state of the server's connections.
func runClients(t *testing.T, addr string, check func(addr string, c int) error) {
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			if err := check(addr, c); err != nil {
				t.Error(err)
				t.Log(lastServer.dumpState())
			}
		}(c)
	}
	wg.Wait()
}

// TestInputLimitErrorKeepsOrder pipelines more small requests than the
// input limit holds while the connection waits on its store: the error
// that closes the connection must come after the replies owed before it.
func TestInputLimitErrorKeepsOrder(t *testing.T) {
	addr := startTestServer(t, newSlowStore(), func(c *conf.Server) { c.MaxFrameBytes = 1024 })
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req strings.Builder
	var want []string
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&req, "PUT|k%d|v\nRANGE|k%d|k%d\x00|1\n", i, i, i)
		want = append(want, "OK", fmt.Sprintf("RANGE|1|k%d|v", i))
	}
	if _, err := conn.Write([]byte(req.String())); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		got = append(got, sc.Text())
	}
	if len(got) == 0 || got[len(got)-1] != "ERROR|request too large" {
		t.Fatalf("want the connection closed after ERROR|request too large, got %d lines ending %q", len(got), got[max(0, len(got)-3):])
	}
	for i, line := range got[:len(got)-1] {
		if line != want[i] {
			t.Fatalf("reply %d: %q, want %q (the error overtook a pending reply?)", i, line, want[i])
		}
	}
}

// pipeModel makes random pipe-protocol requests (PUT, DELETE, PING, GET)
// over a few keys of one connection, and knows the reply to each.
type pipeModel struct {
	rng  *rand.Rand
	c    int
	keys int
	seq  int
	pad  string // appended to every value
	gets bool   // GETs only
	data map[string]string
}

func newPipeModel(c, keys int) *pipeModel {
	return &pipeModel{rng: rand.New(rand.NewSource(int64(c))), c: c, keys: keys, data: map[string]string{}}
}

// add appends one request to req and returns the reply it must get.
func (m *pipeModel) add(req *strings.Builder) string {
	m.seq++
	k := fmt.Sprintf("c%d-k%d", m.c, m.rng.Intn(m.keys))
	op := m.rng.Intn(6)
	if m.gets {
		op = 5
	}
	switch op {
	case 0, 1:
		v := fmt.Sprint(m.seq) + m.pad
		fmt.Fprintf(req, "PUT|%s|%s\n", k, v)
		m.data[k] = v
		return "OK"
	case 2:
		fmt.Fprintf(req, "DELETE|%s\n", k)
		delete(m.data, k)
		return "OK"
	case 3:
		req.WriteString("PING\n")
		return "PONG"
	default:
		fmt.Fprintf(req, "GET|%s\n", k)
		if v, ok := m.data[k]; ok {
			return "VALUE|" + v
		}
		return "NOT_FOUND"
	}
}

func checkPipelinedModel(addr string, c int) error {
	return checkPipelined(addr, newPipeModel(c, 20), 3000)
}

// workloadDeadline bounds a test client's whole workload: a hang detector,
// not a speed check. On a slow 2-core machine running other packages'
// tests beside it under the race detector, a pipeline that takes 9 s alone
// took over 30 s.
const workloadDeadline = 3 * time.Minute

// checkPipelined sends n requests of m in one pipeline and checks every
// reply.
func checkPipelined(addr string, m *pipeModel, n int) error {
	c := m.c
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	var req strings.Builder
	var want []string
	for i := 0; i < n; i++ {
		want = append(want, m.add(&req))
	}
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write([]byte(req.String()))
		errc <- err
	}()
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(workloadDeadline))
	for i, w := range want {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("conn %d reply %d: %v", c, i, err)
		}
		if got := strings.TrimSuffix(line, "\n"); got != w {
			return fmt.Errorf("conn %d reply %d: got %q want %q", c, i, got, w)
		}
	}
	return <-errc
}

// TestOrderingThroughTheReadWindow does the same with values big enough
// for a small max_output_bytes to hold only a few replies: reads wait for
// the read window, and replies dropped over the limit are read again,
// interleaved with the connection's writes.
func TestOrderingThroughTheReadWindow(t *testing.T) {
	for name, newStore := range orderingStores() {
		t.Run(name, func(t *testing.T) {
			addr := startTestServer(t, newStore(), func(c *conf.Server) { c.MaxOutputBytes = 256 << 10 })
			runClients(t, addr, func(addr string, c int) error {
				m := newPipeModel(c, 8)
				m.pad = strings.Repeat("x", 24<<10)
				if err := checkPipelined(addr, m, 1000); err != nil {
					return err
				}
				// Reads only, on a new connection: more are started
				// before the first reply is seen than the limit holds.
				m.gets = true
				return checkPipelined(addr, m, 400)
			})
		})
	}
}

// TestRESPOrderingWithAsyncStore does the same over RESP, with MGET/DEL
// fan-out commands in the mix.
func TestRESPOrderingWithAsyncStore(t *testing.T) {
	for name, newStore := range orderingStores() {
		t.Run(name, func(t *testing.T) { testRESPOrdering(t, newStore()) })
	}
}

func testRESPOrdering(t *testing.T, st *slowStore) {
	addr := startTestServer(t, st, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req []byte
	cmd := func(args ...string) { req = appendRESP(req, args...) }
	cmd("SET", "a", "1")
	cmd("SET", "b", "2")
	cmd("MGET", "a", "b", "c")
	cmd("DEL", "a", "c")
	cmd("EXISTS", "a", "b")
	cmd("GET", "a")
	cmd("PING")
	cmd("SET", "d", "4")
	cmd("DEL", "d")
	cmd("SET", "e", "5")
	cmd("GET", "e")
	cmd("SET", "e", "6")
	cmd("GET", "e")
	cmd("GET", "d")
	want := "+OK\r\n+OK\r\n*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n:1\r\n:1\r\n$-1\r\n+PONG\r\n" +
		"+OK\r\n:1\r\n+OK\r\n$1\r\n5\r\n+OK\r\n$1\r\n6\r\n$-1\r\n"
	conn.Write(req)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 0, len(want))
	buf := make([]byte, 4096)
	for len(got) < len(want) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// appendRESP appends a command as a client sends it: a RESP array of bulk
// strings.
func appendRESP(dst []byte, args ...string) []byte {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	return codec.AppendRESPCommand(dst, b...)
}

func TestCursorTableIsBounded(t *testing.T) {
	ct := newCursorTable(3, 10)
	var ids []uint64
	for i := 0; i < 5; i++ {
		ids = append(ids, ct.put(0, []byte{byte(i)}))
	}
	if _, ok := ct.get(ids[0]); ok {
		t.Fatal("oldest cursor kept past the bound")
	}
	if k, ok := ct.get(ids[4]); !ok || k[0] != 4 {
		t.Fatal("newest cursor lost")
	}
	if len(ct.cursors) != 3 {
		t.Fatalf("table holds %d cursors", len(ct.cursors))
	}
	// The byte bound: an 8-byte key leaves room for two 1-byte keys.
	big := ct.put(0, []byte("12345678"))
	if _, ok := ct.get(ids[2]); ok || len(ct.cursors) != 3 || ct.bytes != 10 {
		t.Fatalf("after an 8-byte key: %d cursors, %d bytes", len(ct.cursors), ct.bytes)
	}
	// A key over the whole bound is still kept, alone.
	huge := ct.put(0, make([]byte, 20))
	if _, ok := ct.get(big); ok || len(ct.cursors) != 1 {
		t.Fatalf("after a 20-byte key: %d cursors", len(ct.cursors))
	}
	if _, ok := ct.get(huge); !ok {
		t.Fatal("the newest cursor must survive")
	}
}

// TestCursorTableKeepsScansInProgress: a scan in progress holds its last
// two cursors, however many calls other scans make; the queue of issued
// ids stays proportional to the cursors held.
func TestCursorTableKeepsScansInProgress(t *testing.T) {
	ct := newCursorTable(8, 1<<20)
	slow := ct.put(0, []byte("a"))
	var other uint64
	for i := range 10000 {
		other = ct.put(other, []byte{byte(i)}) // one long scan, continued
	}
	if _, ok := ct.get(slow); !ok {
		t.Fatal("a paused scan's cursor was forgotten while another scan ran")
	}
	prevOther := ct.cursors[other].prev
	if _, ok := ct.get(prevOther); !ok {
		t.Fatal("the cursor before the last was forgotten: a retried call would fail")
	}
	if len(ct.cursors) != 3 {
		t.Fatalf("%d cursors held for two scans, want 3", len(ct.cursors))
	}
	if len(ct.fifo) > 2*len(ct.cursors)+64 {
		t.Fatalf("queue of %d ids for %d cursors", len(ct.fifo), len(ct.cursors))
	}
	// Continuing the paused scan works, and retrying its last call too.
	next := ct.put(slow, []byte("b"))
	if _, ok := ct.get(slow); !ok {
		t.Fatal("retry of the last call lost")
	}
	if k, ok := ct.get(next); !ok || string(k) != "b" {
		t.Fatal("continued cursor lost")
	}
	// Many abandoned scans still push out the oldest.
	for range 20 {
		ct.put(0, []byte("x"))
	}
	if len(ct.cursors) != 8 {
		t.Fatalf("%d cursors after 20 new scans, bound 8", len(ct.cursors))
	}
	if _, ok := ct.get(slow); ok {
		t.Fatal("oldest cursor kept past the bound")
	}
}

func TestCommandLookupIsCaseInsensitive(t *testing.T) {
	s := New(conf.Default().Server, newSlowStore(), Info{}, nil, nil)
	for _, name := range []string{"get", "GET", "gEt"} {
		if c := s.pipeTable.lookup([]byte(name)); c == nil || c.name != "GET" {
			t.Errorf("lookup(%q) = %v", name, c)
		}
	}
	if c := s.pipeTable.lookup([]byte(strings.Repeat("x", 100))); c != nil {
		t.Error("long name found")
	}
}

// TestMetricsSumLoops checks the per-loop request counters and latency
// histograms add up at scrape time.
func TestMetricsSumLoops(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startTestServerWith(t, newSlowStore(), nil, m)
	for c := 0; c < 4; c++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		for i := 0; i < 25; i++ {
			fmt.Fprintf(conn, "PUT|k%d|v\nGET|k%d\n", i, i)
			r.ReadString('\n')
			r.ReadString('\n')
		}
		conn.Close()
	}
	got := gatherValues(t, reg)
	if got["kv_requests_total,GET,pipe"] != 100 && got["kv_requests_total,pipe,GET"] != 100 {
		t.Fatalf("GET requests: %v", got)
	}
	if got["kv_request_duration_seconds,put"] != 100 || got["kv_request_duration_seconds,get"] != 100 {
		t.Fatalf("latency counts: put %v get %v", got["kv_request_duration_seconds,put"], got["kv_request_duration_seconds,get"])
	}
	if got["kv_net_input_bytes_total"] == 0 || got["kv_net_output_bytes_total"] == 0 {
		t.Fatalf("byte counters: %v", got)
	}
	if n := m.totalRequests(); n != 200 {
		t.Fatalf("total requests %d", n)
	}
}

// failingStore is a slowStore whose writes all fail, inline or later.
type failingStore struct{ *slowStore }

func (f failingStore) Write(_ *lsm.Batch, done func(error)) {
	f.later(func() { done(store.ErrTimeout) })
}

// TestWriteGroupFailure pipelines writes around a GET against a store whose
// writes fail: every write of the group gets the error, in its place, and
// the GET between them sees none of them.
func TestWriteGroupFailure(t *testing.T) {
	for _, inlineOneIn := range []int{0, 1, 2} {
		t.Run(fmt.Sprint("inline one in ", inlineOneIn), func(t *testing.T) {
			st := failingStore{newSlowStore()}
			st.inlineOneIn = inlineOneIn
			addr := startTestServer(t, st, nil)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("PUT|a|1\nPUT|b|2\nGET|a\nDELETE|b\nPUT|c|3\nPING\n")); err != nil {
				t.Fatal(err)
			}
			fail := "ERROR|" + store.ErrTimeout.Error()
			want := []string{fail, fail, "NOT_FOUND", fail, fail, "PONG"}
			r := bufio.NewReader(conn)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for i, w := range want {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if got := strings.TrimSuffix(line, "\n"); got != w {
					t.Fatalf("reply %d: got %q, want %q", i, got, w)
				}
			}
		})
	}
}

// sickStore is a store whose storage reports a failure.
type sickStore struct{ *slowStore }

func (sickStore) Health() error {
	return errors.New("storage unavailable: lsm: flushes failing: disk full")
}

// clusterStore is a slowStore reporting a cluster in state, its storage
// failing with sick (nil: fine).
type clusterStore struct {
	*slowStore
	state string
	sick  error
}

func (c clusterStore) Status() store.Status {
	return store.Status{Mode: "cluster", State: c.state, NodeID: 1, Nodes: 3, NodesUp: 2, Shards: 4, ShardsWithLeader: 3}
}

func (c clusterStore) Health() error { return c.sick }

// TestHealthzReportsStorage: /healthz answers 503 and says why when the
// store cannot take writes, 200 otherwise; INFO persistence says the same.
// The body's first word is the state, never "healthy" with a 503.
func TestHealthzReportsStorage(t *testing.T) {
	diskFull := errors.New("storage unavailable: lsm: flushes failing: disk full")
	for _, tc := range []struct {
		st    store.Store
		code  int
		state string
		body  string
	}{
		{newSlowStore(), http.StatusOK, "healthy", "storage=ok"},
		{sickStore{newSlowStore()}, http.StatusServiceUnavailable, "unhealthy", "storage=err: storage unavailable: lsm: flushes failing: disk full"},
		{clusterStore{newSlowStore(), "healthy", nil}, http.StatusOK, "healthy", "storage=ok"},
		{clusterStore{newSlowStore(), "healthy", diskFull}, http.StatusServiceUnavailable, "unhealthy", "storage=err: " + diskFull.Error()},
		{clusterStore{newSlowStore(), "degraded", nil}, http.StatusOK, "degraded", "storage=ok"},
		{clusterStore{newSlowStore(), "degraded", diskFull}, http.StatusServiceUnavailable, "degraded", "storage=err: " + diskFull.Error()},
		{clusterStore{newSlowStore(), "unavailable", nil}, http.StatusServiceUnavailable, "unavailable", "storage=ok"},
	} {
		a, err := StartAdmin("127.0.0.1:0", "", nil, tc.st, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + a.ln.Addr().String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.Close(context.Background())
		if resp.StatusCode != tc.code || !strings.HasPrefix(string(body), tc.state+" ") || !strings.Contains(string(body), tc.body) {
			t.Errorf("healthz: %d %q, want %d, %q first and %q", resp.StatusCode, body, tc.code, tc.state, tc.body)
		}
		s := New(confDefaultServer(), tc.st, Info{}, slog.New(slog.DiscardHandler), nil)
		info := s.infoText("persistence")
		if want := strings.TrimPrefix(tc.body, "storage="); !strings.Contains(info, "storage_status:"+want[:min(2, len(want))]) {
			t.Errorf("INFO persistence: %q", info)
		}
	}
}

// TestMetricsExistAtStart: error and limit series are exported at zero
// before anything happens.
func TestMetricsExistAtStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	got := gatherValues(t, reg)
	for _, n := range []string{"kv_errors_total,protocol,", "kv_limit_closes_total,output", "kv_connections"} {
		if _, ok := got[n]; !ok {
			t.Errorf("%s not exported at start: %v", n, got)
		}
	}
}

// TestLatencyBucketsReachTimeouts: the latency histogram tells a request
// of 2 s from one that hit the cluster's 5 s request timeout, and its
// bounds reach 10 s.
func TestLatencyBucketsReachTimeouts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	op := m.bindOp("get")
	st := m.newLoopStats()
	m.loops = func() []*loopStats { return []*loopStats{st} }
	st.observeN(op, int64(2*time.Second), 1)
	st.observeN(op, int64(5*time.Second), 1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kv_request_duration_seconds" {
			continue
		}
		buckets := mf.GetMetric()[0].GetHistogram().GetBucket()
		if top := buckets[len(buckets)-1]; top.GetUpperBound() < 10 || top.GetCumulativeCount() != 2 {
			t.Errorf("top bucket: le=%v count %d, want le >= 10 and both requests", top.GetUpperBound(), top.GetCumulativeCount())
		}
		between := false
		for _, b := range buckets {
			if le := b.GetUpperBound(); le >= 2 && le < 5 && b.GetCumulativeCount() == 1 {
				between = true
			}
		}
		if !between {
			t.Errorf("no bucket holds the 2 s request without the 5 s one: %v", buckets)
		}
		return
	}
	t.Fatal("kv_request_duration_seconds not exported")
}

// errStore is a slowStore that fails what touches keys starting with
// "fail" (reads, ranges from such a key, writes), as a cluster does while
// the key's shard has no leader. Reads of "slow" (not found) and of keys
// starting with "latefail" (failed) take a while, so that the replies
// behind them pile up.
type errStore struct{ *slowStore }

var errNoLeader = errors.New("cluster unavailable: no leader for shard 2")

func failKey(k []byte) bool { return bytes.HasPrefix(k, []byte("fail")) }

func (f errStore) Get(key []byte, done func([]byte, error)) {
	switch {
	case string(key) == "slow":
		time.AfterFunc(50*time.Millisecond, func() { done(nil, store.ErrNotFound) })
	case bytes.HasPrefix(key, []byte("latefail")):
		time.AfterFunc(5*time.Millisecond, func() { done(nil, errNoLeader) })
	case failKey(key):
		f.later(func() { done(nil, errNoLeader) })
	default:
		f.slowStore.Get(key, done)
	}
}

func (f errStore) Range(start, end []byte, limit int, done func([]store.KV, error)) {
	if failKey(start) {
		f.later(func() { done(nil, errNoLeader) })
		return
	}
	f.slowStore.Range(start, end, limit, done)
}

func (f errStore) Write(b *lsm.Batch, done func(error)) {
	if b.Each(func(_ bool, k, _ []byte) error {
		if failKey(k) {
			return errNoLeader
		}
		return nil
	}) != nil {
		f.later(func() { done(errNoLeader) })
		return
	}
	f.slowStore.Write(b, done)
}

// TestErrorRepliesCounted: kv_errors_total counts every error reply
// exactly once, whatever refused the request (the decoder, the command
// table, the command's own checks, the store) and however the reply left
// (with its burst, written by its completion, or through the read
// window), under a command label taken from the tables, never from the
// request.
func TestErrorRepliesCounted(t *testing.T) {
	for name, newStore := range orderingStores() {
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			addr := startTestServerWith(t, errStore{newStore()}, func(c *conf.Server) { c.MaxOutputBytes = 16 << 10 }, m)
			before := gatherValues(t, reg)
			var got int
			// The audit's bad requests, then the store's failures, between
			// requests that succeed.
			got += errorReplies(t, dialReader(t, addr), "FOOBAR|x\nGET\nPUT||v\nRANGE|a|b|x\nBATCH|a|b|c\nPING\n"+
				"PUT|a|1\nGET|fail\nGET|a\nRANGE|fail|z\nPUT|fail|v\n", 11)
			var req []byte
			for _, cmd := range [][]string{
				{"FOOBAR", "x"}, {"GET"}, {"SET", "", "v"}, {"SET", "a", "b", "EX", "10"}, {"SELECT", "1"}, {"MSET", "a", "b", "c"},
				{"PING"}, {"GET", "fail"}, {"GET", "b"}, {"MGET", "b", "fail"}, {"EXISTS", "fail"}, {"DEL", "fail"}, {"SET", "fail", "v"},
			} {
				req = appendRESP(req, cmd...)
			}
			got += errorReplies(t, dialReader(t, addr), string(req), 13)
			// Alone on its connection, a failed read's reply is written by
			// the completion itself (tryDirect).
			got += errorReplies(t, dialReader(t, addr), "GET|fail\n", 1)
			if got != 20 {
				t.Errorf("%d error replies, want 20", got)
			}
			after := gatherValues(t, reg)
			for key, want := range map[string]float64{
				"kv_errors_total,unknown,":       2,
				"kv_errors_total,arity,GET":      2,
				"kv_errors_total,arity,BATCH":    1,
				"kv_errors_total,arity,MSET":     1,
				"kv_errors_total,invalid,PUT":    1,
				"kv_errors_total,invalid,RANGE":  1,
				"kv_errors_total,invalid,SET":    2,
				"kv_errors_total,invalid,SELECT": 1,
				"kv_errors_total,store,get":      5,
				"kv_errors_total,store,range":    1,
				"kv_errors_total,store,put":      2,
				"kv_errors_total,store,delete":   1,
			} {
				if d := after[key] - before[key]; d != want {
					t.Errorf("%s rose by %v, want %v", key, d, want)
				}
			}
			checkErrorsCounted(t, m, reg, before, got)

			// Through the read window: behind a slow read, the replies of
			// the reads after it fill the half of max_output_bytes they may
			// hold, and those that come later are dropped, to be read
			// again; a failed read among them must not be counted again.
			before = gatherValues(t, reg)
			c := dialReader(t, addr)
			errorReplies(t, c, "PUT|big|"+strings.Repeat("x", 100)+"\nGET|none\n", 2) // the window learns replies are small
			var window strings.Builder
			window.WriteString("GET|slow\n")
			for range 30 {
				window.WriteString("GET|latefail\nGET|big\nGET|big\nGET|big\n")
			}
			checkErrorsCounted(t, m, reg, before, errorReplies(t, c, window.String(), 121))
		})
	}
}

// connReader is a client connection and the reader of its replies.
type connReader struct {
	net.Conn
	r *bufio.Reader
}

// dialReader connects to addr for the rest of the test.
func dialReader(t *testing.T, addr string) connReader {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return connReader{c, bufio.NewReader(c)}
}

// errorReplies sends req on c, reads n replies (one line each, in either
// protocol) and returns how many were errors.
func errorReplies(t *testing.T, c connReader, req string, n int) int {
	t.Helper()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	errs := 0
	for i := range n {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if strings.HasPrefix(line, "ERROR|") || strings.HasPrefix(line, "-") {
			errs++
		}
	}
	return errs
}

// checkErrorsCounted checks kv_errors_total rose by want since before,
// under command labels from the command tables or store operations only.
func checkErrorsCounted(t *testing.T, m *Metrics, reg *prometheus.Registry, before map[string]float64, want int) {
	t.Helper()
	names := map[string]bool{"": true}
	for _, n := range append(m.cmdNames, m.opNames...) {
		names[n] = true
	}
	var rise float64
	for key, v := range gatherValues(t, reg) {
		labels, ok := strings.CutPrefix(key, "kv_errors_total,")
		if !ok {
			continue
		}
		rise += v - before[key]
		if _, command, _ := strings.Cut(labels, ","); !names[command] {
			t.Errorf("%s: command label not from the command tables", key)
		}
	}
	if rise != float64(want) {
		t.Errorf("kv_errors_total rose by %v for %d error replies", rise, want)
	}
}

// TestEngineCollector: the engine metrics the issue lists are exported,
// the cache hit ratio among them.
func TestEngineCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewEngineCollector(func() lsm.Metrics {
		return lsm.Metrics{Levels: make([]lsm.LevelMetrics, 2), CacheHits: 3, CacheMisses: 1, WALSyncs: 7, StallCount: 2, Compactions: 5,
			WritesRefused: 4, ReadsNeedingDisk: 6, CorruptReads: 8, TableFilesOpen: 9, TableFileReopens: 10, TableMemory: 11}
	}))
	wantValues(t, reg, map[string]float64{
		"kv_engine_cache_hit_ratio":          0.75,
		"kv_engine_cache_hits_total":         3,
		"kv_engine_wal_syncs_total":          7,
		"kv_engine_write_stalls_total":       2,
		"kv_engine_compactions_total":        5,
		"kv_engine_level_files,0":            0,
		"kv_engine_write_slowdowns_total":    0,
		"kv_engine_writes_refused_total":     4,
		"kv_engine_reads_needing_disk_total": 6,
		"kv_engine_corrupt_reads_total":      8,
		"kv_engine_table_files_open":         9,
		"kv_engine_table_file_reopens_total": 10,
		"kv_engine_table_memory_bytes":       11,
	})
}

// wantValues checks the series of reg named in want (gatherValues' keys).
func wantValues(t *testing.T, reg *prometheus.Registry, want map[string]float64) {
	t.Helper()
	got := gatherValues(t, reg)
	for name, w := range want {
		if v, ok := got[name]; !ok || v != w {
			t.Errorf("%s = %v (exported %v), want %v", name, v, ok, w)
		}
	}
}

func TestClusterCollector(t *testing.T) {
	st := store.Status{Mode: "cluster", State: "degraded", NodeID: 2, Nodes: 3, NodesUp: 2, Shards: 8, ShardsWithLeader: 8, ShardsLed: 5, LeaderMoves: 2, ProposalRechecks: 3}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewClusterCollector(func() store.Status { return st }))
	wantValues(t, reg, map[string]float64{
		"kv_cluster_state,healthy":           0,
		"kv_cluster_state,degraded":          1,
		"kv_cluster_state,unavailable":       0,
		"kv_cluster_nodes":                   3,
		"kv_cluster_nodes_up":                2,
		"kv_cluster_shards":                  8,
		"kv_cluster_shards_with_leader":      8,
		"kv_cluster_shards_led":              5,
		"kv_cluster_leader_moves_total":      2,
		"kv_cluster_proposal_rechecks_total": 3,
	})
}

func TestRaftLogCollector(t *testing.T) {
	ok := true
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewRaftLogCollector(func() (RaftLogMetrics, bool) {
		return RaftLogMetrics{Bytes: 1 << 20, Segments: 3, Syncs: 4, Written: 5, EarlySnapshots: 2}, ok
	}))
	wantValues(t, reg, map[string]float64{
		"kv_raft_log_bytes":                 1 << 20,
		"kv_raft_log_segments":              3,
		"kv_raft_log_syncs_total":           4,
		"kv_raft_log_written_bytes_total":   5,
		"kv_raft_log_early_snapshots_total": 2,
	})
	// A node on dragonboat's pebble LogDB exports none.
	ok = false
	if got := gatherValues(t, reg); len(got) != 0 {
		t.Errorf("exported %v for a node without raftwal", got)
	}
}

// gatherValues reads every series of reg into a map keyed by the metric's
// name and its label values, comma-separated: counters and gauges by
// value, histograms by sample count.
func gatherValues(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range mt.GetLabel() {
				key += "," + lp.GetValue()
			}
			switch {
			case mt.GetCounter() != nil:
				got[key] = mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				got[key] = mt.GetGauge().GetValue()
			case mt.GetHistogram() != nil:
				got[key] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	return got
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.00K", 1536: "1.50K", 896 << 20: "896.00M", 3 << 30: "3.00G"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
