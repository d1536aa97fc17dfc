package server

import (
	"bufio"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/conf"
)

// TestDirectRepliesKeepOrder drives connections the way unpipelined and
// lightly pipelined clients do, so that requests are often alone in their
// queue (their completion writes the reply itself: tryDirect) and often
// followed, while the store is still working, by more requests the loop
// queues behind them (the offer is withdrawn, maybe after it was used).
// Every reply is checked against a per-connection model.
func TestDirectRepliesKeepOrder(t *testing.T) {
	for name, newStore := range orderingStores() {
		t.Run(name, func(t *testing.T) {
			m := NewMetrics(nil)
			runClients(t, startTestServerWith(t, newStore(), nil, m), checkBurstModel)
			if m.directReplies() == 0 {
				t.Error("no reply was written by its completion: the test does not exercise tryDirect")
			}
			// Every offer is returned once its connection is gone: a leak
			// would end direct replies for good at maxOffers.
			deadline := time.Now().Add(5 * time.Second)
			for lastServer.offers.Load() != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := lastServer.offers.Load(); n != 0 {
				t.Errorf("%d direct-reply offers still out after every connection closed", n)
			}
		})
	}
}

// checkBurstModel sends bursts of one to four requests, reading the
// replies owed after about half of them.
func checkBurstModel(addr string, c int) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(workloadDeadline))
	m := newPipeModel(c, 8)
	r := bufio.NewReader(conn)
	var want []string
	for i := 0; i < 1500; i++ {
		var req strings.Builder
		for n := 1 + m.rng.Intn(4); n > 0; n-- {
			want = append(want, m.add(&req))
		}
		if _, err := conn.Write([]byte(req.String())); err != nil {
			return err
		}
		if m.rng.Intn(2) == 0 && len(want) < 64 {
			continue
		}
		for j, w := range want {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("conn %d burst %d reply %d: %v", c, i, j, err)
			}
			if got := strings.TrimSuffix(line, "\n"); got != w {
				return fmt.Errorf("conn %d burst %d reply %d: got %q want %q", c, i, j, got, w)
			}
		}
		want = want[:0]
	}
	return nil
}

// TestDirectReplyAfterCloseGoesNowhere closes connections right after a
// write, before the store completes it, while new connections (which the
// kernel gives the lowest free descriptors, so often the old ones) talk to
// the server: a completion must never write its reply into a descriptor
// that now belongs to another client.
func TestDirectReplyAfterCloseGoesNowhere(t *testing.T) {
	addr := startTestServer(t, newSlowStore(), func(c *conf.Server) { c.EventLoops = 1 })
	for i := 0; i < 300; i++ {
		a, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Write([]byte("PUT|k|v\n")); err != nil {
			t.Fatal(err)
		}
		// Let the server read the PUT, then hang up before its completion.
		time.Sleep(time.Duration(rand.Intn(100)) * time.Microsecond)
		a.Close()
		b, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = b.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(b)
		for j := 0; j < 3; j++ {
			if _, err := b.Write([]byte("PING\n")); err != nil {
				t.Fatal(err)
			}
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line != "PONG\n" {
				t.Fatalf("round %d: a new connection got %q: another connection's reply", i, line)
			}
		}
		b.Close()
	}
}

// TestDirectReplyIsTimed: a reply its completion wrote is in the latency
// histogram at once, though the loop retires the request only on its next
// callback (here: none for a while). A completion can also beat the store
// call's return and be answered inline, so PUTs are sent until one reply
// is direct.
func TestDirectReplyIsTimed(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	addr := startTestServerWith(t, newSlowStore(), func(c *conf.Server) { c.EventLoops = 1 }, m)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for i := 1; i <= 20; i++ {
		if _, err := fmt.Fprintf(conn, "PUT|k%d|v\n", i); err != nil {
			t.Fatal(err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
			t.Fatalf("reply %q, %v", line, err)
		}
		// The completion counts after its write: give it a moment.
		deadline := time.Now().Add(10 * time.Second)
		for gatherValues(t, reg)["kv_request_duration_seconds,put"] != float64(i) {
			if time.Now().After(deadline) {
				t.Fatalf("put latency count after %d puts: %v, want %d", i, gatherValues(t, reg)["kv_request_duration_seconds,put"], i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if m.directReplies() > 0 {
			return
		}
	}
	t.Fatal("none of 20 replies was written by its completion")
}

// TestShortDirectWrites: replies larger than the socket takes at once are
// written partly by their completion and finished by the loop, with
// requests pipelined behind them.
func TestShortDirectWrites(t *testing.T) {
	m := NewMetrics(nil)
	addr := startTestServerWith(t, newSlowStore(), func(c *conf.Server) { c.EventLoops = 1 }, m)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(workloadDeadline))
	r := bufio.NewReaderSize(conn, 1<<20)
	val := strings.Repeat("x", 900<<10)
	for i := 0; i < 8; i++ {
		fmt.Fprintf(conn, "PUT|k%d|%s\n", i, val)
		if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
			t.Fatalf("%q %v", line, err)
		}
	}
	for round := 0; round < 12; round++ {
		fmt.Fprintf(conn, "RANGE|k|l\n")
		time.Sleep(time.Duration(round%5) * time.Millisecond) // sometimes the completion writes first
		fmt.Fprintf(conn, "PING\nGET|k0\nPING\n")
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, "RANGE|8|") || len(line) < 8*len(val) {
			t.Fatalf("round %d: range reply of %d bytes: %.40q", round, len(line), line)
		}
		for _, want := range []string{"PONG\n", "VALUE|" + val + "\n", "PONG\n"} {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line != want {
				t.Fatalf("round %d: got %.40q want %.40q", round, line, want)
			}
		}
	}
	if m.directReplies() == 0 {
		t.Error("no range reply was written by its completion")
	}
}
