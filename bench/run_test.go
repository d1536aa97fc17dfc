package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kv/bench/fakeserver"
)

func startServer(t testing.TB, opts fakeserver.Options) *fakeserver.Server {
	t.Helper()
	s, err := fakeserver.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// testConfig is a small, fast run against addr.
func testConfig(t testing.TB, addr string, proto Proto) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addrs = []string{addr}
	cfg.Proto = proto
	cfg.Clients = 4
	cfg.Pipeline = 8
	cfg.Duration = 0
	cfg.Total = 4000
	cfg.Warmup = 0
	cfg.Keys = 1000
	cfg.Timeout = 5 * time.Second
	return cfg
}

func mustMix(t testing.TB, s string) Mix {
	t.Helper()
	m, err := ParseMix(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRunEndToEnd(t *testing.T) {
	for _, proto := range []Proto{ProtoPipe, ProtoRESP} {
		t.Run(proto.String(), func(t *testing.T) {
			srv := startServer(t, fakeserver.Options{Password: "sesame"})
			cfg := testConfig(t, srv.Addr(), proto)
			cfg.Password = "sesame"
			cfg.Mix = mustMix(t, "put=4,get=4,delete=1,range=1,batch=1,ping=1")
			cfg.ValueSize = ValueSize{Min: 10, Max: 300}
			cfg.Prefill = true
			cfg.Verify = true
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v (first errors %v)", err, res)
			}
			if res.All.Count != cfg.Total {
				t.Errorf("measured %d requests, want exactly -n %d", res.All.Count, cfg.Total)
			}
			if res.Errors != 0 {
				t.Errorf("errors = %d: %v", res.Errors, res.FirstErrors)
			}
			if got := len(res.Ops); got != 6 {
				t.Fatalf("%d op rows, want 6", got)
			}
			var sum int64
			for _, st := range res.Ops {
				if st.Count == 0 {
					t.Errorf("%s: no requests measured", st.Op)
				}
				if st.Hist.TotalCount() != st.Count {
					t.Errorf("%s: histogram holds %d values for %d requests", st.Op, st.Hist.TotalCount(), st.Count)
				}
				if st.Latency.P50 <= 0 || st.Latency.Max < st.Latency.P99 || st.Latency.P99 < st.Latency.P50 {
					t.Errorf("%s: implausible latencies %+v", st.Op, st.Latency)
				}
				sum += st.Count
			}
			if sum != res.All.Count || res.All.Hist.TotalCount() != sum {
				t.Errorf("all: count %d, histogram %d, sum of ops %d", res.All.Count, res.All.Hist.TotalCount(), sum)
			}
			var timeline int64
			for _, s := range res.Timeline {
				timeline += s.Total
			}
			if timeline != res.All.Count {
				t.Errorf("timeline holds %d requests, want %d", timeline, res.All.Count)
			}
			// The prefill wrote every key; the mix deleted a few since.
			if n := srv.Len(); n < int(cfg.Keys)/2 {
				t.Errorf("server holds %d keys after a prefill of %d", n, cfg.Keys)
			}
			for _, st := range res.Ops {
				if st.Op == "get" && st.Misses*2 > st.Count {
					t.Errorf("after prefill %d of %d gets missed", st.Misses, st.Count)
				}
			}
		})
	}
}

func TestRunDuration(t *testing.T) {
	srv := startServer(t, fakeserver.Options{})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Total = 0
	cfg.Duration = 300 * time.Millisecond
	cfg.Warmup = 200 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.All.Count == 0 {
		t.Fatal("nothing measured")
	}
	if res.Elapsed < 0.3 {
		t.Errorf("measured %.3fs of a 300ms run", res.Elapsed)
	}
	// Warmup requests reached the server but are not in the results (each
	// connection also sent one PING).
	if srv.Requests()-int64(cfg.Clients) <= res.All.Count {
		t.Errorf("server saw %d requests, results hold %d: the warmup was measured", srv.Requests(), res.All.Count)
	}
}

// TestRunServerDies: the server goes away mid-run. Failed reconnects are
// counted apart from the requests' errors, and the measured phase still ends
// with -duration (clients waiting to reconnect wake at its end).
func TestRunServerDies(t *testing.T) {
	srv := startServer(t, fakeserver.Options{})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Total, cfg.Duration, cfg.MaxErrors = 0, 1500*time.Millisecond, 1<<40
	time.AfterFunc(300*time.Millisecond, func() { _ = srv.Close() })
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ReconnectErrors == 0 {
		t.Fatalf("no failed reconnects counted: %+v", res)
	}
	if res.Errors != res.All.Errors+res.ReconnectErrors {
		t.Errorf("errors %d != request errors %d + reconnects %d", res.Errors, res.All.Errors, res.ReconnectErrors)
	}
	if res.Elapsed > 1.8 {
		t.Errorf("measured %.3fs of a 1.5s run", res.Elapsed)
	}
}

func TestRunUnreachable(t *testing.T) {
	srv := startServer(t, fakeserver.Options{})
	addr := srv.Addr()
	_ = srv.Close()
	cfg := testConfig(t, addr, ProtoPipe)
	res, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if res != nil {
		t.Errorf("a result for a run that never started: %+v", res)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address", err)
	}
}

// TestRunAuthFailures: a server refusing the password, or wanting one, is
// an authentication failure that says which flag gives the password, not
// "server unreachable".
func TestRunAuthFailures(t *testing.T) {
	t.Run("wrong password", func(t *testing.T) {
		srv := startServer(t, fakeserver.Options{Password: "right"})
		cfg := testConfig(t, srv.Addr(), ProtoPipe)
		cfg.Password = "wrong"
		_, err := Run(context.Background(), cfg)
		checkAuthError(t, err, "refused the password given with -a: invalid password")
	})
	t.Run("redis wrong password", func(t *testing.T) {
		cfg := testConfig(t, cannedServer(t, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"), ProtoRESP)
		cfg.Password = "wrong"
		_, err := Run(context.Background(), cfg)
		checkAuthError(t, err, "refused the password given with -a: WRONGPASS")
	})
	t.Run("redis wants a password", func(t *testing.T) {
		// Redis answers even PING with NOAUTH until AUTH.
		cfg := testConfig(t, cannedServer(t, "-NOAUTH Authentication required.\r\n"), ProtoRESP)
		_, err := Run(context.Background(), cfg)
		checkAuthError(t, err, "wants a password: give it with -a: NOAUTH")
	})
	t.Run("kvserver wants a password", func(t *testing.T) {
		// kvserver answers PING without a password: the requests fail.
		srv := startServer(t, fakeserver.Options{Password: "sesame"})
		cfg := testConfig(t, srv.Addr(), ProtoPipe)
		_, err := Run(context.Background(), cfg)
		if !errors.Is(err, ErrTooManyErrors) || !strings.Contains(err.Error(), "NOAUTH") || !strings.Contains(err.Error(), "the server wants a password: give it with -a") {
			t.Errorf("err = %v, want the NOAUTH errors to point at -a", err)
		}
	})
}

func checkAuthError(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, ErrAuth) || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want ErrAuth saying %q", err, want)
	}
}

// TestRunPipeAgainstRESPServer: the pipe protocol against a server that
// speaks only RESP (Redis answers an inline PING with +PONG) says to use
// -proto resp.
func TestRunPipeAgainstRESPServer(t *testing.T) {
	cfg := testConfig(t, cannedServer(t, "+PONG\r\n"), ProtoPipe)
	_, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `reply "+PONG" is RESP`) || !strings.Contains(err.Error(), "use -proto resp") {
		t.Errorf("err = %v, want a hint to use -proto resp", err)
	}
}

// cannedServer listens on 127.0.0.1 and answers every read with reply, as
// a server that refuses whatever kvbench sends first does.
func cannedServer(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write([]byte(reply)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRunNothingMeasured: a run that measured no request at all (here a
// -duration of 1ns) says so and returns an error, rather than a report of
// zeros that looks like a result.
func TestRunNothingMeasured(t *testing.T) {
	srv := startServer(t, fakeserver.Options{})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Total, cfg.Duration = 0, time.Nanosecond
	res, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrNothingMeasured) {
		t.Errorf("err = %v, want ErrNothingMeasured", err)
	}
	if res == nil {
		t.Fatal("no result")
	}
	if res.All.Count != 0 || res.Stopped != "" {
		t.Errorf("measured %d requests, stopped %q: want none, and a run that was not stopped", res.All.Count, res.Stopped)
	}
	out := textReport(t, res)
	if want := "WARNING   no request was measured"; !strings.Contains(out, want) {
		t.Errorf("report lacks %q:\n%s", want, out)
	}
}

// TestClientCPUExcludesWarmup: the client CPU figure is for the measured
// phase, so a run stopped during its warmup has none. It was read from the
// start of the phase that holds the warmup, which made it cover the warmup
// ("over 5.00s" for a 4 s measurement), and here the warmup alone.
func TestClientCPUExcludesWarmup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := startServer(t, fakeserver.Options{Stall: func(n int64) time.Duration {
		if n == 200 {
			cancel()
		}
		return 0
	}})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Total, cfg.Duration, cfg.Warmup = 0, time.Second, time.Hour
	res, err := Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) || res == nil {
		t.Fatalf("err = %v, want the run cancelled in its warmup", err)
	}
	if res.Elapsed != 0 {
		t.Fatalf("measured %.3fs of a run stopped in its warmup", res.Elapsed)
	}
	if res.CPU.Known {
		t.Errorf("client CPU %+v measured over the warmup, for a run that never reached its measured phase", res.CPU)
	}
	out := textReport(t, res)
	if want := "CPU not measured: the run stopped before its measured phase"; !strings.Contains(out, want) {
		t.Errorf("report lacks %q:\n%s", want, out)
	}
}

func TestRunMaxErrors(t *testing.T) {
	failPuts := func(cmd string) string {
		if cmd == "PUT" || cmd == "SET" {
			return "storage unavailable: no space left on device"
		}
		return ""
	}
	t.Run("default stops at the first error", func(t *testing.T) {
		srv := startServer(t, fakeserver.Options{Fail: failPuts})
		cfg := testConfig(t, srv.Addr(), ProtoPipe)
		res, err := Run(context.Background(), cfg)
		if !errors.Is(err, ErrTooManyErrors) {
			t.Fatalf("err = %v, want ErrTooManyErrors", err)
		}
		if res == nil || res.Errors == 0 || res.Stopped == "" {
			t.Fatalf("result does not report the errors: %+v", res)
		}
		if !strings.Contains(res.FirstErrors[0], "no space left") {
			t.Errorf("first error %q does not quote the server", res.FirstErrors[0])
		}
		// Replies already received when the run stopped count too: the
		// message gives the count the report does.
		if want := fmt.Sprintf(": %d errors exceed -max-errors 0", res.Errors); !strings.Contains(err.Error(), want) || res.Stopped != err.Error() {
			t.Errorf("run error %q, report stopped %q: want %q, as the report's %d errors", err, res.Stopped, want, res.Errors)
		}
	})
	t.Run("tolerated errors are counted", func(t *testing.T) {
		srv := startServer(t, fakeserver.Options{Fail: failPuts})
		cfg := testConfig(t, srv.Addr(), ProtoRESP)
		cfg.MaxErrors = 1 << 40
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		put, get := res.stats("put"), res.stats("get")
		if put.Errors == 0 || put.Count != 0 {
			t.Errorf("put: %d errors, %d successes; want only errors", put.Errors, put.Count)
		}
		if get.Errors != 0 || get.Count == 0 {
			t.Errorf("get: %d errors, %d successes; want only successes", get.Errors, get.Count)
		}
		if res.Errors != put.Errors {
			t.Errorf("total errors %d, put errors %d", res.Errors, put.Errors)
		}
	})
}

// TestVerifyCatchesWrongValue runs against a server that corrupts some
// values it returns: -verify must notice.
func TestVerifyCatchesWrongValue(t *testing.T) {
	var gets atomic.Int64
	srv := startServer(t, fakeserver.Options{Corrupt: func([]byte) bool { return gets.Add(1)%50 == 0 }})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Prefill = true
	cfg.Verify = true
	res, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrTooManyErrors) {
		t.Fatalf("err = %v, want ErrTooManyErrors from a failed verification", err)
	}
	if res.Errors == 0 || !strings.Contains(res.FirstErrors[0], "verify: get key:") {
		t.Fatalf("errors %d, first %q: want a verify failure", res.Errors, res.FirstErrors)
	}

	// Without -verify the same corruption goes unnoticed: the check is
	// what catches it.
	srv2 := startServer(t, fakeserver.Options{Corrupt: func([]byte) bool { return true }})
	cfg.Addrs = []string{srv2.Addr()}
	cfg.Verify = false
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("without -verify: %v", err)
	}
}

// TestOpenLoopCountsQueueing stalls the server for 300ms at the start of
// the measurement. A request due during the stall is late by however long
// it waited, and in open loop that delay is its latency: most requests of
// the run see well over 100ms. A generator that measured from the actual
// send time would see the stall in one request only.
func TestOpenLoopCountsQueueing(t *testing.T) {
	const stall = 300 * time.Millisecond
	srv := startServer(t, fakeserver.Options{Stall: func(n int64) time.Duration {
		if n == 2 { // request 1 is the connection's PING
			return stall
		}
		return 0
	}})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Clients = 1
	cfg.Pipeline = 1
	cfg.Rate = 200 // one request every 5ms: 40 requests in 200ms, all due during the stall
	cfg.Total = 40
	cfg.Mix = mustMix(t, "put")
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.All.Count != 40 {
		t.Fatalf("measured %d requests, want 40", res.All.Count)
	}
	// Request k is due at 5k ms and answered after the stall ends at
	// 300ms, so its latency is at least 300-5k ms: >= 100ms for k <= 40.
	if p50 := time.Duration(res.All.Latency.P50); p50 < 100*time.Millisecond {
		t.Errorf("open loop p50 = %v; the stall's queueing delay is missing", p50)
	}
	if max := time.Duration(res.All.Latency.Max); max < stall {
		t.Errorf("max = %v, below the stall of %v", max, stall)
	}
	if res.OpenLoop == nil || res.OpenLoop.Lag.Max < int64(100*time.Millisecond) {
		t.Errorf("open loop stats %+v: the requests held back by the stall were not late", res.OpenLoop)
	}

	// Closed loop against the same stall: only the request in flight sees it.
	srv2 := startServer(t, fakeserver.Options{Stall: func(n int64) time.Duration {
		if n == 2 {
			return stall
		}
		return 0
	}})
	cfg.Addrs = []string{srv2.Addr()}
	cfg.Rate = 0
	res, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if max := time.Duration(res.All.Latency.Max); max < stall {
		t.Errorf("closed loop max = %v, below the stall of %v", max, stall)
	}
}

func TestRunTimeout(t *testing.T) {
	srv := startServer(t, fakeserver.Options{Stall: func(n int64) time.Duration {
		if n == 3 {
			return 400 * time.Millisecond
		}
		return 0
	}})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Clients = 1
	cfg.Timeout = 100 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrTooManyErrors) {
		t.Fatalf("err = %v, want the timeout to count as an error", err)
	}
	if !strings.Contains(res.FirstErrors[0], "no reply") {
		t.Errorf("first error %q does not say the reply was late", res.FirstErrors[0])
	}
}

func TestRunCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once the server has answered a few hundred requests, so the
	// run has measured something however slow the machine is.
	srv := startServer(t, fakeserver.Options{Stall: func(n int64) time.Duration {
		if n == 500 {
			cancel()
		}
		return 0
	}})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Total = 0
	cfg.Duration = time.Hour
	res, err := Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if res == nil || res.All.Count == 0 || res.Stopped == "" {
		t.Fatalf("no partial result: %+v", res)
	}
}

// TestOpenLoopSendsTheSchedule checks the open-loop schedule is kept
// whole: at 1000 ops/s, the requests due in a 500ms window after a 200ms
// warmup are exactly 500, spread over clients that do not divide them
// evenly, and every one is measured (or reported as never sent).
func TestOpenLoopSendsTheSchedule(t *testing.T) {
	srv := startServer(t, fakeserver.Options{})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Clients = 3
	cfg.Pipeline = 2
	cfg.Total = 0
	cfg.Rate = 1000
	cfg.Warmup = 200 * time.Millisecond
	cfg.Duration = 500 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.All.Count + res.OpenLoop.Unsent; got != 500 {
		t.Errorf("measured %d + unsent %d requests, want the 500 due", res.All.Count, res.OpenLoop.Unsent)
	}
	// 200 warmup requests, 500 measured, and each connection's PING.
	if got := srv.Requests(); got != 700+int64(cfg.Clients) {
		t.Errorf("server saw %d requests, want %d", got, 700+cfg.Clients)
	}
}

// TestMeasuredErrors: an operation's row, the timeline and the open-loop
// rate count the failed requests of the measured phase only, as they count
// its successes; the run's total has the warmup's too.
func TestMeasuredErrors(t *testing.T) {
	t.Run("open loop", func(t *testing.T) {
		// Without AUTH every request fails: PING alone is allowed.
		srv := startServer(t, fakeserver.Options{Password: "sesame"})
		cfg := testConfig(t, srv.Addr(), ProtoPipe)
		cfg.Clients, cfg.Pipeline = 2, 2
		cfg.Total, cfg.Rate, cfg.MaxErrors = 0, 1000, 1<<40
		cfg.Warmup, cfg.Duration = 300*time.Millisecond, 300*time.Millisecond
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkErrorCounts(t, res)
		// 300 requests are due in the warmup and 300 in the measured phase.
		if res.All.Count != 0 || res.All.Errors+res.OpenLoop.Unsent != 300 {
			t.Errorf("measured %d successes, %d errors, %d unsent; want the 300 due to fail",
				res.All.Count, res.All.Errors, res.OpenLoop.Unsent)
		}
		if res.Errors != res.All.Errors+300 {
			t.Errorf("%d errors in all, %d measured: want the 300 of the warmup besides", res.Errors, res.All.Errors)
		}
		if ol := res.OpenLoop; ol.AchievedRate > ol.TargetRate {
			t.Errorf("achieved %.0f ops/s of %.0f: warmup requests counted", ol.AchievedRate, ol.TargetRate)
		}
		out := textReport(t, res)
		if want := "300 in the warmup or prefill, in no operation's row"; !strings.Contains(out, want) {
			t.Errorf("report does not say %q:\n%s", want, out)
		}
	})
	t.Run("closed loop", func(t *testing.T) {
		srv := startServer(t, fakeserver.Options{Fail: func(cmd string) string {
			if cmd == "PUT" {
				return "storage unavailable"
			}
			return ""
		}})
		cfg := testConfig(t, srv.Addr(), ProtoPipe)
		cfg.Clients, cfg.Pipeline = 2, 1
		cfg.Total, cfg.MaxErrors = 0, 1<<40
		cfg.Warmup, cfg.Duration = 200*time.Millisecond, 200*time.Millisecond
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkErrorCounts(t, res)
		put := res.stats("put")
		if put.Count != 0 || put.Errors == 0 || put.Errors >= res.Errors {
			t.Errorf("put: %d successes, %d errors of %d in all; want only errors, fewer than in the warmup and measured phase together",
				put.Count, put.Errors, res.Errors)
		}
	})
}

// checkErrorCounts checks the rows and the timeline count the same errors.
func checkErrorCounts(t *testing.T, res *Result) {
	t.Helper()
	var rows, secs int64
	for _, st := range res.Ops {
		rows += st.Errors
	}
	for _, sec := range res.Timeline {
		secs += sec.Errors
	}
	if rows != res.All.Errors || secs != res.All.Errors {
		t.Errorf("errors: %d in all's row, %d in the op rows, %d in the timeline", res.All.Errors, rows, secs)
	}
}

// TestTimelineLastSecond: a closed-loop run of 1s ends just after the
// second boundary, with the replies of the requests still in flight; that
// sliver of a second is part of the one before, not a second of its own
// with a rate over a few milliseconds.
func TestTimelineLastSecond(t *testing.T) {
	srv := startServer(t, fakeserver.Options{})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Clients, cfg.Pipeline = 2, 1
	cfg.Total, cfg.Duration = 0, time.Second
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for i, sec := range res.Timeline {
		total += sec.Total
		last := i == len(res.Timeline)-1
		if (!last && sec.Span != 1) || (last && (sec.Span < minLastSpan || sec.Span >= 1+minLastSpan)) {
			t.Errorf("second %d of %d spans %.4fs (measured %.4fs)", i, len(res.Timeline), sec.Span, res.Elapsed)
		}
	}
	if total != res.All.Count {
		t.Errorf("timeline holds %d requests, the rows %d", total, res.All.Count)
	}
}

// textReport is res's text report.
func textReport(t *testing.T, res *Result) string {
	t.Helper()
	var buf bytes.Buffer
	if err := res.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestRunServerGoneWithoutTimeLimit: the server goes away in a phase that
// has no time limit (a run with -n alone, or the prefill) and -max-errors
// tolerates the failed reconnects. Nothing else would end the run: it
// must stop by itself, once the server has refused new connections for
// -timeout, and say the server is unreachable.
func TestRunServerGoneWithoutTimeLimit(t *testing.T) {
	for _, tt := range []struct {
		name    string
		prefill bool
	}{{"n alone", false}, {"prefill", true}} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, fakeserver.Options{})
			cfg := testConfig(t, srv.Addr(), ProtoPipe)
			cfg.Total, cfg.MaxErrors, cfg.Timeout = 1<<40, 1<<40, 200*time.Millisecond
			if tt.prefill {
				// The run has a duration; the prefill before it has none.
				cfg.Prefill, cfg.Keys, cfg.Total, cfg.Duration = true, 1<<30, 0, time.Hour
			}
			go func() {
				for srv.Requests() < 1000 {
					time.Sleep(time.Millisecond)
				}
				_ = srv.Close()
			}()
			// Only a guard against the hang this test is about.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := Run(ctx, cfg)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("err = %v, want %v", err, ErrUnreachable)
			}
			if res == nil || !strings.Contains(res.Stopped, "server unreachable") || res.ReconnectErrors == 0 {
				t.Fatalf("result %+v does not say why the run stopped", res)
			}
		})
	}
}

// TestRunCancelWhileConnecting: the server takes connections but never
// answers the PING kvbench sends on each. A canceled run (Ctrl-C) stops at
// once, rather than when the handshake times out (here an hour).
func TestRunCancelWhileConnecting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 64) // the test keeps them open, unanswered
	t.Cleanup(func() {
		_ = ln.Close()
		for len(accepted) > 0 {
			_ = (<-accepted).Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	cfg := testConfig(t, ln.Addr().String(), ProtoPipe)
	cfg.Timeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, cfg)
	accepted <- <-accepted // wait for kvbench to connect, and keep the connection
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) || r.res != nil {
			t.Fatalf("Run = %v, %v; want no result and the context's error", r.res, r.err)
		}
	case <-time.After(time.Minute): // a guard against the hang, not a timing check
		t.Fatal("Run did not return after its context was canceled")
	}
}

// TestRunCancelWhileReconnecting: the server drops every connection and
// then takes new ones without answering them. Canceling the run while the
// clients wait for their handshakes stops it at once, and the handshakes
// the cancel cut short are not counted as failed reconnects: they are not
// the server's failures.
func TestRunCancelWhileReconnecting(t *testing.T) {
	srv := startServer(t, fakeserver.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A proxy in front of srv: until cut, it forwards each connection;
	// from then on it holds new ones unanswered.
	var (
		mu      sync.Mutex
		cutting bool
		conns   []net.Conn
	)
	silent := make(chan struct{}, 1)
	cut := func() {
		mu.Lock()
		defer mu.Unlock()
		cutting = true
		for _, c := range conns {
			_ = c.Close()
		}
	}
	t.Cleanup(func() {
		_ = ln.Close()
		cut()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			if cutting {
				mu.Unlock()
				select {
				case silent <- struct{}{}:
				default:
				}
				continue
			}
			up, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				mu.Unlock()
				_ = c.Close()
				continue
			}
			conns = append(conns, up)
			mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()

	cfg := testConfig(t, ln.Addr().String(), ProtoPipe)
	cfg.Total, cfg.Duration, cfg.MaxErrors, cfg.Timeout = 0, time.Hour, 1<<40, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for srv.Requests() < 1000 {
			time.Sleep(time.Millisecond)
		}
		cut()
		<-silent // a client is waiting for the answer to its PING
		cancel()
	}()
	done := runAsync(ctx, cfg)
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) || r.res == nil {
			t.Fatalf("Run = %v, %v; want the result so far and the context's error", r.res, r.err)
		}
		if r.res.ReconnectErrors != 0 {
			t.Errorf("%d failed reconnects counted, want none: %q", r.res.ReconnectErrors, r.res.FirstErrors)
		}
	case <-time.After(time.Minute): // a guard against the hang, not a timing check
		t.Fatal("Run did not return after its context was canceled")
	}
}

type runResult struct {
	res *Result
	err error
}

// runAsync starts Run(ctx, cfg) and returns where its outcome arrives.
func runAsync(ctx context.Context, cfg Config) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		res, err := Run(ctx, cfg)
		done <- runResult{res, err}
	}()
	return done
}
