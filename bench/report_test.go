package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kv/bench/fakeserver"
)

var sample struct {
	once sync.Once
	res  *Result
	err  error
}

// sampleResult is the result of a short real run, open loop, with a
// timeline, so every part of the report has data. The run happens once;
// each caller gets its own copy of the result.
func sampleResult(t *testing.T) *Result {
	t.Helper()
	sample.once.Do(func() { sample.res, sample.err = runSample(t) })
	if sample.err != nil {
		t.Fatal(sample.err)
	}
	var buf bytes.Buffer
	if err := sample.res.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	res, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func runSample(t *testing.T) (*Result, error) {
	srv, err := fakeserver.Start(fakeserver.Options{})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Mix = mustMix(t, "put=1,get=3,range=1")
	cfg.Total = 0
	cfg.Duration = 1200 * time.Millisecond
	cfg.Rate = 5000
	cfg.Dist = DistZipf
	cfg.ToolVersion = "test"
	res, err := Run(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	if len(res.Timeline) < 2 {
		return nil, fmt.Errorf("a 1.2s run has %d seconds of timeline", len(res.Timeline))
	}
	return res, nil
}

func TestJSONRoundTrip(t *testing.T) {
	sampleResult(t)
	res := sample.res // the original, with histograms straight from the run
	var buf bytes.Buffer
	if err := res.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	first := buf.String()
	back, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range res.Ops {
		if !back.Ops[i].Hist.Equals(res.Ops[i].Hist) {
			t.Errorf("%s: histogram changed in the round trip", res.Ops[i].Op)
		}
	}
	if !back.All.Hist.Equals(res.All.Hist) {
		t.Error("all: histogram changed in the round trip")
	}
	// Apart from the histograms (compared above), the decoded result is
	// the one written, and writes the same bytes.
	strip := func(r *Result) Result {
		c := *r
		c.Ops = append([]OpStats(nil), r.Ops...)
		for i := range c.Ops {
			c.Ops[i].Hist = nil
		}
		c.All.Hist = nil
		return c
	}
	if a, b := strip(res), strip(back); !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the result:\n%+v\n%+v", a, b)
	}
	var again bytes.Buffer
	if err := back.WriteJSON(&again); err != nil {
		t.Fatal(err)
	}
	if again.String() != first {
		t.Error("writing the decoded result gives different JSON")
	}
}

// TestJSONSchema pins the field names tools depend on.
func TestJSONSchema(t *testing.T) {
	res := sampleResult(t)
	var buf bytes.Buffer
	if err := res.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "tool_version", "start", "run", "elapsed_seconds", "ops", "all", "timeline", "open_loop", "client_cpu", "errors"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("report has no %q", k)
		}
	}
	if doc["schema"] != Schema {
		t.Errorf("schema = %v", doc["schema"])
	}
	run := doc["run"].(map[string]any)
	for _, k := range []string{"addrs", "proto", "clients", "pipeline", "mix", "keys", "dist", "zipf_s", "value_size", "duration_seconds", "warmup_seconds", "rate", "seed", "range_limit"} {
		if _, ok := run[k]; !ok {
			t.Errorf("run has no %q", k)
		}
	}
	all := doc["all"].(map[string]any)
	for _, k := range []string{"op", "count", "errors", "ops_per_sec", "latency_ns", "hdr"} {
		if _, ok := all[k]; !ok {
			t.Errorf("all has no %q", k)
		}
	}
	lat := all["latency_ns"].(map[string]any)
	for _, k := range []string{"min", "mean", "p50", "p90", "p99", "p99_9", "p99_99", "max"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("latency_ns has no %q", k)
		}
	}
	sec := doc["timeline"].([]any)[0].(map[string]any)
	for _, k := range []string{"t", "ops", "total", "errors", "p50", "p99", "max"} {
		if _, ok := sec[k]; !ok {
			t.Errorf("timeline entry has no %q", k)
		}
	}
	cpu := doc["client_cpu"].(map[string]any)
	for _, k := range []string{"share", "procs", "client_bound"} {
		if _, ok := cpu[k]; !ok {
			t.Errorf("client_cpu has no %q", k)
		}
	}

	if _, err := ReadJSON(strings.NewReader(`{"schema":"other/v9"}`)); err == nil {
		t.Error("ReadJSON accepted another schema")
	}
	if _, err := ReadJSON(strings.NewReader(`{"schema":"kvbench/v1","all":{"hdr":"!!"}}`)); err == nil {
		t.Error("ReadJSON accepted a broken histogram")
	}
}

func TestWriteText(t *testing.T) {
	res := sampleResult(t)
	out := textReport(t, res)
	for _, want := range []string{
		"kvbench test", res.Run.Addrs[0] + " (pipe)", "4 clients × pipeline 8", "open loop at 5,000 ops/s",
		"put=1,get=3,range=1", "1,000 keys (zipf s=0.99)", "values 100 B", "range limit 100",
		"1.2s after 0s warmup", "p99.99", "schedule", "client    CPU",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, op := range []string{"put", "get", "range", "all"} {
		if !strings.Contains(out, "\n"+op+" ") && !strings.Contains(out, "\n  "+op) && !strings.Contains(out, " "+op+"  ") {
			t.Errorf("no table row for %s:\n%s", op, out)
		}
	}

	// A stopped prefill, failed reconnects, and no measured phase.
	res.Prefill = &PrefillStats{Keys: 1000, Seconds: 2, Interrupted: true}
	res.Errors, res.ReconnectErrors, res.FirstErrors = 96, 80, []string{"dial tcp: connection refused"}
	res.CPU, res.Elapsed = ClientCPU{}, 0
	out = textReport(t, res)
	for _, want := range []string{"prefill   of 1,000 keys interrupted after", "errors    96 (80 of them failed reconnects",
		"CPU not measured"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteHTML(t *testing.T) {
	res := sampleResult(t)
	res.Warnings = append(res.Warnings, "<script>alert(1)</script>")
	var buf bytes.Buffer
	if err := res.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if n := strings.Count(page, "<svg"); n != 3 {
		t.Errorf("%d charts, want 3", n)
	}
	for _, title := range []string{"Throughput over time", "Latency over time", "Latency by percentile", "99.9%"} {
		if !strings.Contains(page, title) {
			t.Errorf("page lacks %q", title)
		}
	}
	// Self-contained: nothing fetched, nothing run.
	for _, bad := range []string{"http:", "https:", "<script", "src=", "<link", "@import"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if !strings.Contains(page, "<polyline") {
		t.Error("no data drawn")
	}
}

func TestWriteHist(t *testing.T) {
	res := sampleResult(t)
	for _, op := range []string{"all", "put", "get", "range"} {
		var buf bytes.Buffer
		if err := res.WriteHist(&buf, op); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if !strings.HasPrefix(out, " Value\tPercentile\tTotalCount\t1/(1-Percentile)\n\n") {
			t.Errorf("%s: not the HdrHistogram percentile format:\n%.200s", op, out)
		}
		st := res.stats(op)
		if want := fmt.Sprintf("Total count    = %12d]", st.Count); !strings.Contains(out, want) {
			t.Errorf("%s: footer lacks %q:\n%s", op, want, out[max(0, len(out)-300):])
		}
		if want := fmt.Sprintf("%12.3f %12f %12d", float64(st.Hist.Max())/1e6, 1.0, st.Count); !strings.Contains(out, want) {
			t.Errorf("%s: no final line %q (max in ms, percentile 1)", op, want)
		}
	}
	if err := res.WriteHist(&bytes.Buffer{}, "delete"); err == nil {
		t.Error("histogram of an operation not in the mix")
	}
}

func TestGroupDigits(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := groupDigits(in); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{0.5: "0.5", 2: "2", 99.94: "99.9", 1234.4: "1,234", 50_000: "50,000"} {
		if got := formatRate(in); got != want {
			t.Errorf("formatRate(%g) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int64]string{812_000: "812µs", 1_250_000: "1.25ms", 2_310_000_000: "2.31s"} {
		if got := formatLatency(in); got != want {
			t.Errorf("formatLatency(%d) = %q, want %q", in, got, want)
		}
	}
}

// TestFractionalRateReported: an open loop below 1 ops/s is reported at
// its rate, not truncated to "0 ops/s".
func TestFractionalRateReported(t *testing.T) {
	res := &Result{Run: RunInfo{Rate: 0.5, Duration: 10}, OpenLoop: &OpenLoopStats{TargetRate: 0.5, AchievedRate: 0.3}}
	res.Warnings = warnings(res)
	out := textReport(t, res)
	for _, want := range []string{"open loop at 0.5 ops/s", "0.3 ops/s achieved of 0.5", "achieved 0.3 ops/s of the 0.5 asked"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestTimeline(t *testing.T) {
	sec := func(n int64, lat time.Duration) second {
		s := second{hist: newPacked()}
		s.counts[OpPut] = n
		s.errs = 1
		for range n {
			_ = s.hist.RecordValue(int64(lat))
		}
		return s
	}
	ops := []Op{OpPut}
	tests := []struct {
		name    string
		secs    []second
		elapsed float64
		spans   []float64
		totals  []int64
		max     []time.Duration
	}{
		{"ends mid-second", []second{sec(1000, time.Millisecond), sec(500, time.Millisecond)}, 1.5,
			[]float64{1, 0.5}, []int64{1000, 500}, []time.Duration{time.Millisecond, time.Millisecond}},
		{"sliver after the boundary", []second{sec(1000, time.Millisecond), sec(4, 50*time.Millisecond)}, 1.004,
			[]float64{1.004}, []int64{1004}, []time.Duration{50 * time.Millisecond}},
		{"short run", []second{sec(4, time.Millisecond)}, 0.004,
			[]float64{0.004}, []int64{4}, []time.Duration{time.Millisecond}},
		{"idle end", []second{sec(100, time.Millisecond), {}}, 3.5, // clients waited to reconnect
			[]float64{1, 1, 1, 0.5}, []int64{100, 0, 0, 0}, []time.Duration{time.Millisecond, 0, 0, 0}},
		{"server gone for the last 2s", []second{sec(1000, time.Millisecond), sec(1000, time.Millisecond)}, 4.0002,
			[]float64{1, 1, 1, 1}, []int64{1000, 1000, 0, 0}, []time.Duration{time.Millisecond, time.Millisecond, 0, 0}},
		{"ends on a second", []second{sec(1000, time.Millisecond)}, 3,
			[]float64{1, 1, 1}, []int64{1000, 0, 0}, []time.Duration{time.Millisecond, 0, 0}},
	}
	for _, tt := range tests {
		tl := timeline(tt.secs, ops, tt.elapsed)
		if len(tl) != len(tt.spans) {
			t.Errorf("%s: %d seconds, want %d: %+v", tt.name, len(tl), len(tt.spans), tl)
			continue
		}
		for i, s := range tl {
			if math.Abs(s.Span-tt.spans[i]) > 1e-9 || s.Total != tt.totals[i] || s.Ops["put"] != tt.totals[i] {
				t.Errorf("%s: second %d spans %gs with %d requests, want %gs with %d", tt.name, i, s.Span, s.Total, tt.spans[i], tt.totals[i])
			}
			if d := time.Duration(s.Max); d < tt.max[i] || d > tt.max[i]+tt.max[i]/100 {
				t.Errorf("%s: second %d max latency %v, want %v", tt.name, i, d, tt.max[i])
			}
		}
	}
	// Errors are summed like the requests.
	if tl := timeline([]second{sec(10, time.Millisecond), sec(1, time.Millisecond)}, ops, 1.01); len(tl) != 1 || tl[0].Errors != 2 {
		t.Errorf("folded errors: %+v", tl)
	}
}

// TestOutageAtTheEnd: the server is down for the last 2 s of a 4 s run, so
// the clients answer nothing in seconds 2 and 3. The timeline, the JSON and
// the HTML throughput chart must show those seconds as zeros; they left
// them out, and the report looked like a healthy 2 s run.
func TestOutageAtTheEnd(t *testing.T) {
	r := testRunner(t, func(c *Config) { c.Clients, c.Mix, c.Duration, c.Warmup = 1, mustMix(t, "put"), 4*time.Second, 0 })
	c := r.clients[0]
	c.startPhase(phase{depth: 1, endNs: int64(4 * time.Second)})
	col := newCollector(r, c.ph)
	for _, at := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond} {
		c.issue(int64(at-time.Millisecond), true)
		c.complete(reply{kind: replyOK}, int64(at))
	}
	c.flushInterval()
	close(r.ivs)
	for iv := range r.ivs {
		col.absorb(iv)
	}
	// The last client gave up reconnecting at the end of the run.
	c.endedAt = int64(4*time.Second) + int64(200*time.Microsecond)
	res := &Result{Schema: Schema}
	r.fillResult(res, col, cpuSample{}, cpuSample{})

	var buf bytes.Buffer
	if err := res.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sec := range back.Timeline {
		got = append(got, fmt.Sprintf("t=%d:%d", sec.T, sec.Ops["put"]))
	}
	if want := "t=0:1 t=1:1 t=2:0 t=3:0"; strings.Join(got, " ") != want {
		t.Errorf("measured %.4fs; JSON timeline %v, want %s", back.Elapsed, got, want)
	}
	ch := res.throughputChart()
	if s := ch.series[0]; len(s.xs) != 4 || s.xs[3] != 3.5 || s.ys[2] != 0 || s.ys[3] != 0 {
		t.Errorf("HTML throughput chart: points at %v, rates %v; want 4 seconds, the last two at zero", s.xs, s.ys)
	}
}

// TestJSONArraysNotNull: the JSON's array fields are arrays, never null,
// even when the run stopped during the prefill and has no timeline.
func TestJSONArraysNotNull(t *testing.T) {
	srv := startServer(t, fakeserver.Options{Fail: func(cmd string) string {
		if cmd == "PUT" {
			return "storage unavailable"
		}
		return ""
	}})
	cfg := testConfig(t, srv.Addr(), ProtoPipe)
	cfg.Prefill = true
	res, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrTooManyErrors) || res == nil || res.Prefill == nil || !res.Prefill.Interrupted {
		t.Fatalf("err = %v, result %+v: want the prefill stopped by its errors", err, res)
	}
	for name, r := range map[string]*Result{"prefill stopped": res, "zero result": {Schema: Schema}} {
		var buf bytes.Buffer
		if err := r.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		if tl, ok := doc["timeline"].([]any); !ok || len(tl) != 0 {
			t.Errorf("%s: timeline is %#v, want []", name, doc["timeline"])
		}
		for _, path := range nulls("", doc) {
			t.Errorf("%s: %s is null", name, path)
		}
	}
}

// nulls lists the paths of the null values in a decoded JSON document.
func nulls(path string, v any) []string {
	switch v := v.(type) {
	case nil:
		return []string{path}
	case map[string]any:
		var out []string
		for k, e := range v {
			out = append(out, nulls(path+"."+k, e)...)
		}
		return out
	case []any:
		var out []string
		for i, e := range v {
			out = append(out, nulls(fmt.Sprintf("%s[%d]", path, i), e)...)
		}
		return out
	}
	return nil
}
