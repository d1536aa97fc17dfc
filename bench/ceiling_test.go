package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kvstore/kv/bench/fakeserver"
	"github.com/kvstore/kv/codec"
)

// BenchmarkGeneratorCeiling drives a server that answers at once and keeps
// no data, so the figure is what the generator itself can do. The server
// shares the process, so its CPU is measured separately (each connection on
// its own OS thread, RUSAGE_THREAD) and subtracted: ops/client-cpu-s is
// what one core of kvbench can drive.
//
//	go test -run '^$' -bench GeneratorCeiling -benchtime 200000x ./bench/
func BenchmarkGeneratorCeiling(b *testing.B) {
	for _, tc := range []struct {
		proto    Proto
		pipeline int
	}{
		{ProtoPipe, 1},
		{ProtoPipe, 16},
		{ProtoRESP, 16},
	} {
		b.Run(fmt.Sprintf("%v/pipeline=%d", tc.proto, tc.pipeline), func(b *testing.B) {
			srv, err := fakeserver.Start(fakeserver.Options{Canned: true, MeasureCPU: true})
			if err != nil {
				b.Fatal(err)
			}
			cfg := DefaultConfig()
			cfg.Addrs = []string{srv.Addr()}
			cfg.Proto = tc.proto
			cfg.Clients = 8
			cfg.Pipeline = tc.pipeline
			cfg.Duration = 0
			cfg.Warmup = 0
			cfg.Total = int64(b.N)
			b.ReportAllocs()
			b.ResetTimer()
			res, err := Run(context.Background(), cfg)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			_ = srv.Close() // the connections end, adding their CPU time
			processCPU := res.CPU.UserSeconds + res.CPU.SysSeconds
			clientCPU := processCPU - srv.CPU().Seconds()
			b.Logf("N=%d: process CPU %.2fs, of which the server %.2fs, over %.2fs", b.N, processCPU, srv.CPU().Seconds(), res.Elapsed)
			b.ReportMetric(float64(res.All.Count)/res.Elapsed, "ops/s")
			if clientCPU > 0 {
				b.ReportMetric(float64(res.All.Count)/clientCPU, "ops/client-cpu-s")
			}
			b.ReportMetric(float64(res.All.Latency.P99)/float64(time.Microsecond), "p99-µs")
		})
	}
}

// TestHotPathDoesNotAllocate encodes requests and matches canned replies
// through the client's own code, with no socket, and counts allocations.
func TestHotPathDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		proto  Proto
		verify bool
	}{{ProtoPipe, false}, {ProtoPipe, true}, {ProtoRESP, false}, {ProtoRESP, true}} {
		proto := tc.proto
		cfg := DefaultConfig()
		cfg.Proto = proto
		cfg.Clients = 1
		cfg.Pipeline = 16
		cfg.Mix = mustMix(t, "put,get,delete,range,batch,ping")
		cfg.ValueSize = ValueSize{Min: 10, Max: 500}
		cfg.Verify = tc.verify
		r, err := newRunner(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.ivs = make(chan *interval, 16)
		c := r.clients[0]
		c.startPhase(phase{depth: cfg.Pipeline})
		now := int64(time.Millisecond)
		var replies []byte
		scratch := make([]byte, 0, cfg.ValueSize.Max)
		round := func() {
			c.fill(now)
			// Answer every request in order, as a correct server would:
			// a get returns what the client last put to the key.
			replies = replies[:0]
			for i := range c.n {
				s := c.ring[(c.head+i)%len(c.ring)]
				if s.op == OpGet && s.expect != verUnknown && s.expect != verDeleted {
					scratch = r.values.stamped(scratch, s.key, s.expect)
					if proto == ProtoRESP {
						replies = codec.AppendBulk(replies, scratch)
					} else {
						replies = codec.AppendPipe(replies, []byte("VALUE"), scratch)
					}
					continue
				}
				replies = cannedReply(replies, proto, s.op)
			}
			c.wbuf = c.wbuf[:0]
			for i := range c.n {
				c.ring[(c.head+i)%len(c.ring)].sent = now
			}
			c.rhi = copy(c.rbuf, replies)
			c.rlo = 0
			if err := c.process(now + 50_000); err != nil {
				t.Fatal(err)
			}
			if c.n != 0 {
				t.Fatalf("%d requests unanswered", c.n)
			}
		}
		for range 100 { // let histograms and buffers reach their size
			round()
		}
		if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
			t.Errorf("%v verify=%v: %.1f allocations per %d requests", proto, tc.verify, allocs, cfg.Pipeline)
		}
		if c.count[OpPut] == 0 || c.count[OpGet] == 0 || tc.verify && c.misses[OpGet] == c.count[OpGet] || r.errCount.Load() != 0 {
			t.Errorf("%v: puts %d, gets %d, errors %d %v", proto, c.count[OpPut], c.count[OpGet], r.errCount.Load(), r.firstErrs)
		}
	}
}

// cannedReply is a successful reply to op; a get finds nothing.
func cannedReply(dst []byte, proto Proto, op Op) []byte {
	if proto == ProtoRESP {
		switch op {
		case OpPut, OpBatch:
			return append(dst, "+OK\r\n"...)
		case OpGet:
			return append(dst, "$-1\r\n"...)
		case OpDelete:
			return append(dst, ":1\r\n"...)
		case OpRange:
			return append(dst, "*2\r\n$1\r\n0\r\n*0\r\n"...)
		case OpPing:
			return append(dst, "+PONG\r\n"...)
		}
	}
	switch op {
	case OpPut:
		return append(dst, "OK\n"...)
	case OpBatch:
		return append(dst, "OK|10\n"...)
	case OpGet:
		return append(dst, "NOT_FOUND\n"...)
	case OpDelete:
		return append(dst, "OK\n"...)
	case OpRange:
		return append(dst, "RANGE|0\n"...)
	case OpPing:
		return append(dst, "PONG\n"...)
	}
	return dst
}
