package bench

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// testRunner builds a runner whose clients are driven by hand: no server,
// no goroutines.
func testRunner(t *testing.T, change func(*Config)) *runner {
	t.Helper()
	cfg := DefaultConfig()
	cfg.MaxErrors = 1 << 40
	change(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.base = time.Now()
	r.ivs = make(chan *interval, 16)
	r.free = make(chan *interval, 16)
	return r
}

// An open-loop client whose next request falls due after the end stops at
// the end, not at that due time: with 64 clients at 10 ops/s a client's
// requests are 6.4 s apart, and waiting for the next one stretched a 2 s
// run to 8 s and reported a quarter of the rate achieved.
func TestOpenLoopStopsAtTheEnd(t *testing.T) {
	r := testRunner(t, func(c *Config) { c.Clients, c.Rate, c.Duration, c.Warmup = 64, 10, 2*time.Second, 0 })
	c := r.clients[0]
	c.startPhase(phase{depth: 1, endNs: int64(2 * time.Second), openLoop: true})
	c.fill(0) // request 0, due at 0
	if c.n != 1 || c.next != int64(6400*time.Millisecond) {
		t.Fatalf("after the first request: %d in flight, next due at %v", c.n, time.Duration(c.next))
	}
	c.complete(reply{kind: replyOK}, int64(time.Millisecond))
	c.fill(int64(time.Second))
	if !c.stopping {
		t.Errorf("next request due at %v, after the end at 2s, but the client keeps waiting for it", time.Duration(c.next))
	}
	// Its time still runs to the end of the schedule, not to its last reply.
	c.finish()
	if c.endedAt < int64(2*time.Second) {
		t.Errorf("client ended at %v, before the end of the schedule at 2s", time.Duration(c.endedAt))
	}
}

// Likewise once -n is used up: the client stops when it is, not when its
// next request would have been due (up to clients/rate later).
func TestOpenLoopStopsWhenCountUsedUp(t *testing.T) {
	r := testRunner(t, func(c *Config) { c.Clients, c.Rate, c.Total, c.Duration, c.Warmup = 64, 10, 1, 0, 0 })
	r.remaining.Store(1)
	c := r.clients[0]
	c.startPhase(phase{depth: 1, openLoop: true})
	c.fill(0)
	if c.n != 1 {
		t.Fatalf("%d requests sent, want the one of -n 1", c.n)
	}
	c.complete(reply{kind: replyOK}, int64(time.Millisecond))
	c.fill(int64(time.Second))
	if !c.stopping {
		t.Errorf("-n used up at 0s, but the client waits for its next due time %v", time.Duration(c.next))
	}
}

// An open-loop client that gives up reconnecting at the end counts the
// requests that fell due while the server was down as unsent.
func TestOpenLoopCountsUnsentWhenServerGone(t *testing.T) {
	r := testRunner(t, func(c *Config) { c.Clients, c.Rate, c.Duration, c.Warmup = 1, 1000, time.Second, 0 })
	c := r.clients[0]
	c.startPhase(phase{depth: 1, endNs: int64(time.Second), openLoop: true})
	// The schedule has reached 0.5 s (request 500) when the server goes.
	c.k = 500
	c.next = int64(c.offset + float64(c.k)*r.intervalNs)
	a, b := net.Pipe()
	defer b.Close()
	var conn net.Conn = a
	c.conn.Store(&conn)
	r.base = time.Now().Add(-2 * time.Second) // the run's end has passed
	if c.reconnect(errors.New("read: connection reset")) {
		t.Fatal("reconnect after the end went on")
	}
	if c.unsent != 500 {
		t.Errorf("unsent = %d, want the 500 requests due from 0.5 s to 1 s", c.unsent)
	}
}

// -n is shared so that every client gets requests: with 100 requests and
// 50 clients, each client sends; claiming 16 at a time left 43 idle.
func TestClaimSpreadsOverClients(t *testing.T) {
	for _, rate := range []float64{0, 1000} {
		r := testRunner(t, func(c *Config) { c.Clients, c.Total, c.Duration, c.Rate = 50, 100, 0, rate })
		r.remaining.Store(100)
		got := 0
		for _, c := range r.clients {
			if c.claim() {
				got++
			}
		}
		if got != 50 {
			t.Errorf("rate %v: %d of 50 clients got a request of the 100", rate, got)
		}
	}
	// With plenty per client, claims stay batched.
	r := testRunner(t, func(c *Config) { c.Clients, c.Total, c.Duration = 50, 1_000_000, 0 })
	r.remaining.Store(1_000_000)
	c := r.clients[0]
	c.claim()
	if left := r.remaining.Load(); left != 1_000_000-16 {
		t.Errorf("a claim took %d requests of 1,000,000 for 50 clients, want 16", 1_000_000-left)
	}
}

// A write that fails leaves its key in doubt for the rest of the run:
//   - a get sent behind it in the pipeline cannot know what to expect, even
//     once a later put was issued before the get's reply was read;
//   - a timed-out write may still be applied after a later one.
//
// Neither is a lost write, and -verify reported both as one.
func TestVerifyFailedWriteIsInDoubt(t *testing.T) {
	r := testRunner(t, func(c *Config) {
		c.Clients, c.Keys, c.Pipeline, c.Verify = 1, 1, 8, true
	})
	c := r.clients[0]
	c.startPhase(phase{depth: 8, warmupNs: int64(time.Hour)}) // nothing measured
	send := func(op Op) {
		r.cfg.Mix = mustMix(t, op.String())
		c.issue(0, false)
	}
	send(OpPut)                                                     // version 2
	send(OpGet)                                                     // expects version 2
	c.complete(reply{kind: replyError, val: []byte("injected")}, 1) // the put fails
	send(OpPut)                                                     // version 3, issued before the get's reply is read
	c.complete(reply{kind: replyNotFound}, 2)                       // the get: the failed put was not applied
	if n := r.errCount.Load(); n != 1 {
		t.Fatalf("errors = %d (%v), want only the failed put", n, r.firstErrs)
	}
	c.complete(reply{kind: replyOK}, 3) // version 3 is written
	// The failed put of version 2 is applied late, after version 3.
	send(OpGet)
	late := r.values.stamped(nil, 0, 2)
	c.complete(reply{kind: replyValue, val: late}, 4)
	if n := r.errCount.Load(); n != 1 {
		t.Errorf("errors = %d (%v): a late in-doubt write was reported as a wrong value", n, r.firstErrs)
	}
}

// A key that was never in doubt is still checked.
func TestVerifyStillCatchesLostWrite(t *testing.T) {
	r := testRunner(t, func(c *Config) { c.Clients, c.Keys, c.Verify = 1, 1, true })
	c := r.clients[0]
	c.startPhase(phase{depth: 8, warmupNs: int64(time.Hour)})
	r.cfg.Mix = mustMix(t, "put")
	c.issue(0, false)
	c.complete(reply{kind: replyOK}, 1)
	r.cfg.Mix = mustMix(t, "get")
	c.issue(0, false)
	c.complete(reply{kind: replyNotFound}, 2)
	if n := r.errCount.Load(); n != 1 {
		t.Errorf("errors = %d, want the lost write reported", n)
	}
}

// TestVerifyMessageVersions: a -verify failure gives the version found (read
// from the value's stamp) and the one wanted both in decimal. The value was
// quoted with its stamp in hex ("0000001a...") beside "version 42".
func TestVerifyMessageVersions(t *testing.T) {
	r := testRunner(t, func(c *Config) { c.Clients, c.Keys, c.Verify, c.Mix = 1, 1, true, mustMix(t, "get") })
	c := r.clients[0]
	c.startPhase(phase{depth: 8})
	c.last[0] = 42 // this client last wrote version 42 of key 0
	check := func(rep reply, want ...string) {
		t.Helper()
		r.firstErrs = nil
		c.issue(0, true)
		c.complete(rep, 1)
		if len(r.firstErrs) != 1 {
			t.Fatalf("errors %v, want one verify failure", r.firstErrs)
		}
		msg := r.firstErrs[0]
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("message %q lacks %q", msg, w)
			}
		}
		if strings.Contains(msg, "0000001a") || strings.Contains(msg, "0000002a") {
			t.Errorf("message %q gives a version in hex", msg)
		}
	}
	stale := r.values.stamped(nil, 0, 26)
	check(reply{kind: replyValue, val: stale},
		fmt.Sprintf("returned a %d-byte value of version 26, want the %d-byte value of version 42", len(stale), len(r.values.value(0, 42))))
	// The right stamp on the wrong bytes.
	wrong := r.values.stamped(nil, 0, 42)
	wrong[len(wrong)-1] ^= 1
	check(reply{kind: replyValue, val: wrong}, "stamped with version 42 but not that version's bytes")
	// No stamp at all.
	check(reply{kind: replyValue, val: []byte("corrupt-value")}, `"corrupt-value", with no version stamp`)
}

// TestFirstErrorsDistinct: the report quotes each distinct error message
// once, with how many errors had it, rather than the first five errors,
// which against a failing server were five copies of one message.
func TestFirstErrorsDistinct(t *testing.T) {
	r := testRunner(t, func(c *Config) {})
	for range 7 {
		r.addError("put: server error: storage unavailable")
	}
	r.addError("get: no reply from 127.0.0.1:8080 within 5s")
	r.addError("put: server error: storage unavailable")
	for i := range 10 {
		r.addError(fmt.Sprintf("message %d", i)) // only the first 3 are kept
	}
	res := &Result{Schema: Schema}
	r.fillResult(res, nil, cpuSample{}, cpuSample{})
	want := []string{"put: server error: storage unavailable", "get: no reply from 127.0.0.1:8080 within 5s", "message 0", "message 1", "message 2"}
	if !slices.Equal(res.FirstErrors, want) || !slices.Equal(res.FirstErrorCounts, []int64{8, 1, 1, 1, 1}) {
		t.Errorf("first errors %q, counts %v; want %q, counts [8 1 1 1 1]", res.FirstErrors, res.FirstErrorCounts, want)
	}
	out := textReport(t, res)
	if !strings.Contains(out, "          put: server error: storage unavailable (8 times)\n          get: no reply") {
		t.Errorf("report does not quote each message once with its count:\n%s", out)
	}
}
