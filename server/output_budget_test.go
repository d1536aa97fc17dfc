package server

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/internal/logtest"
)

// TestTotalOutputClosesTheBiggest: clients that pipeline GETs of a big
// value and read nothing each stay within max_output_bytes, but not
// together; past max_total_output_bytes the server closes the ones
// holding the most, logs and counts it, and a client that reads its
// replies keeps working throughout. (Without the total limit each holds
// its backlog until the 5 s stall closes it: 1000 such clients held
// 2.8 GB.)
func TestTotalOutputClosesTheBiggest(t *testing.T) {
	st := newSlowStore()
	value := strings.Repeat("v", 256<<10)
	st.data["big"] = value
	reg := prometheus.NewRegistry()
	logger, rec := logtest.New()
	const limit, perConn, clients = 6 << 20, 2 << 20, 16
	s, addr, done := serveLoggingTestServer(t, st, func(c *conf.Server) {
		c.EventLoops = 1
		c.MaxOutputBytes = perConn
		c.MaxTotalOutputBytes = limit
	}, NewMetrics(reg), logger)
	stopAtCleanup(t, s, done)

	gc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	good := &respConn{c: gc, d: codec.NewReplyDecoder(codec.Limits{MaxFrame: 64 << 20})}
	flood := bytes.Repeat([]byte("GET|big\n"), 400) // 100 MiB of replies each
	for _, c := range dialN(t, addr, clients) {
		if _, err := c.Write(flood); err != nil {
			t.Fatal(err)
		}
	}
	var totalCloses, ownCloses float64
	most := int64(-1) // the most output INFO reported; -1: never reported
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if reply := good.do(t, "GET", "big"); string(reply.Str) != value {
			t.Fatalf("the reading client's GET: %c, %d bytes", reply.Type, len(reply.Str))
		}
		info := string(good.do(t, "INFO", "clients").Str)
		if n, ok := infoField(info, "output_buffered_bytes"); ok {
			most = max(most, n)
		}
		v := gatherValues(t, reg)
		totalCloses, ownCloses = v["kv_limit_closes_total,output_total"], v["kv_limit_closes_total,output"]
		if totalCloses+ownCloses >= clients {
			break // every non-reading client is closed, one way or the other
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, %v clients closed for the total and %v for their own limit, of %d", totalCloses, ownCloses, clients)
		}
	}
	// Each parks with about half of max_output_bytes unsent, so the
	// budget holds about limit/(perConn/2) of them; the others are closed
	// as soon as they pass it, long before their own 5 s stall.
	if want := float64(clients - limit/(perConn/2)); totalCloses < want {
		t.Fatalf("%v of %d non-reading clients closed for max_total_output_bytes (%v for their own limit), want at least %v",
			totalCloses, clients, ownCloses, want)
	}
	if most < 0 || most > limit {
		t.Fatalf("INFO output_buffered_bytes peaked at %d, limit %d (-1: not reported)", most, limit)
	}
	logged := logtest.Matching(rec.Records(), "closing the connection holding the most output: server output over max_total_output_bytes")
	if float64(len(logged)) != totalCloses || !strings.Contains(logged[0], " remote=127.0.0.1:") || !strings.Contains(logged[0], " bytes=") {
		t.Fatalf("%d closes for the total logged as %q, want %v naming the remote address and the bytes", len(logged), logged, totalCloses)
	}
	if reply := good.do(t, "GET", "big"); string(reply.Str) != value {
		t.Fatalf("the reading client's GET after the closes: %c, %d bytes", reply.Type, len(reply.Str))
	}
	if n, _ := infoField(string(good.do(t, "INFO", "clients").Str), "output_buffered_bytes"); n != 0 {
		t.Fatalf("output_buffered_bytes = %d with only a reading client left", n)
	}
}

// infoField returns the integer value of field in an INFO reply.
func infoField(info, field string) (int64, bool) {
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// coldStore answers GETs of keys starting with "cold" only once released,
// as reads that wait for the disk, and the others at once: on the
// caller's goroutine (inline) or another one. It counts the Gets.
type coldStore struct {
	*slowStore
	inline  bool
	release chan struct{}
	gets    atomic.Int64
}

func (c *coldStore) Get(key []byte, done func([]byte, error)) {
	c.gets.Add(1)
	c.mu.Lock()
	v := []byte(c.data[string(key)])
	c.mu.Unlock()
	switch {
	case strings.HasPrefix(string(key), "cold"):
		go func() { <-c.release; done(v, nil) }()
	case c.inline:
		done(v, nil)
	default:
		go done(v, nil)
	}
}

// TestPipelinedMGetsAreBounded: pipelined MGETs whose keys wait for the
// disk neither all reach the store at once (each has up to
// multiGetWindow reads out, each with a goroutine: 4096 pipelined MGETs
// started 262k) nor hold their values uncounted (each MGET may keep
// max_output_bytes until its last read completes): a connection has at
// most maxMultiReads out, and the values they keep count as the
// connection's output (the per-connection and the total limits see them)
// from their arrival. Once the reads complete, the client that reads its
// replies gets them all, in order, on the same connection. Values come
// from the loop (inline) or from other goroutines.
func TestPipelinedMGetsAreBounded(t *testing.T) {
	for _, inline := range []bool{true, false} {
		t.Run("inline="+strconv.FormatBool(inline), func(t *testing.T) {
			st := &coldStore{slowStore: newSlowStore(), inline: inline, release: make(chan struct{})}
			value := strings.Repeat("v", 1<<20)
			st.data["big"] = value
			const mgets, keys = 20, 4 // 3 MiB of values each
			for i := range mgets {
				st.data["cold"+strconv.Itoa(i)] = "c" + strconv.Itoa(i)
			}
			s, addr, done := serveTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20 }, nil)
			stopAtCleanup(t, s, done)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var req []byte
			for i := range mgets {
				req = appendRESP(req, "MGET", "big", "big", "big", "cold"+strconv.Itoa(i))
			}
			if _, err := c.Write(req); err != nil {
				t.Fatal(err)
			}
			settled := waitGetsSettle(t, &st.gets, "the cold keys wait")
			if want := int64(maxMultiReads * keys); settled != want {
				t.Fatalf("%d reads reached the store while the cold keys waited, want %d (%d MGETs out)", settled, want, maxMultiReads)
			}
			// The values kept by the MGETs out, counted within a check
			// interval of their arrival.
			want := int64(maxMultiReads * 3 << 20)
			for deadline := time.Now().Add(10 * time.Second); s.output.Load() != want; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("output counted while the MGETs wait: %d bytes, want %d", s.output.Load(), want)
				}
			}
			close(st.release)
			r := &replyReader{c: c, d: codec.NewReplyDecoder(codec.Limits{MaxFrame: 64 << 20})}
			for i := range mgets {
				reply := r.next(t)
				if len(reply.Elems) != keys || string(reply.Elems[0].Str) != value || string(reply.Elems[3].Str) != "c"+strconv.Itoa(i) {
					t.Fatalf("MGET %d: %c %q, %d elements", i, reply.Type, reply.Str, len(reply.Elems))
				}
			}
		})
	}
}

// replyReader decodes the replies of pipelined requests one at a time.
type replyReader struct {
	c   net.Conn
	d   *codec.ReplyDecoder
	buf []byte
}

// next returns the next reply (valid until the next call).
func (r *replyReader) next(t *testing.T) codec.Reply {
	t.Helper()
	chunk := make([]byte, 64<<10)
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if len(r.buf) > 0 && len(r.buf) >= r.d.Need() {
			reply, n, err := r.d.Decode(r.buf)
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				r.buf = r.buf[n:]
				return reply
			}
		}
		m, err := r.c.Read(chunk)
		if err != nil {
			t.Fatalf("reading a reply: %v", err)
		}
		r.buf = append(r.buf, chunk[:m]...)
	}
}
