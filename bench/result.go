package bench

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Schema names the layout of the JSON report; it changes when a field
// changes meaning.
const Schema = "kvbench/v1"

// cpuBoundShare is the share of its CPUs above which kvbench itself was the
// bottleneck, so the figures say more about the client than the server.
const cpuBoundShare = 0.9

// Result is everything a run measured. Latencies are nanoseconds.
type Result struct {
	Schema string    `json:"schema"`
	Tool   string    `json:"tool_version,omitempty"`
	Start  time.Time `json:"start"`
	Run    RunInfo   `json:"run"`
	// Elapsed is the measured time: from the end of the warmup until the
	// last reply, in seconds.
	Elapsed  float64        `json:"elapsed_seconds"`
	Ops      []OpStats      `json:"ops"`
	All      OpStats        `json:"all"`
	Timeline []Second       `json:"timeline"`
	OpenLoop *OpenLoopStats `json:"open_loop,omitempty"`
	CPU      ClientCPU      `json:"client_cpu"`
	Prefill  *PrefillStats  `json:"prefill,omitempty"`
	// Errors counts every failed request, warmup and prefill included
	// (the operations' rows count the measured ones), and every failed
	// attempt to reconnect (ReconnectErrors of them), which no row counts.
	Errors          int64 `json:"errors"`
	ReconnectErrors int64 `json:"reconnect_errors,omitempty"`
	// FirstErrors are the first distinct error messages, each once, and
	// FirstErrorCounts[i] is how many errors had message FirstErrors[i].
	FirstErrors      []string `json:"first_errors,omitempty"`
	FirstErrorCounts []int64  `json:"first_error_counts,omitempty"`
	// Clamped counts latencies above an hour, recorded as an hour.
	Clamped int64 `json:"clamped,omitempty"`
	// Stopped says why the run ended before its planned end, if it did.
	Stopped  string   `json:"stopped,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// RunInfo is what was run, so a pasted report describes itself.
type RunInfo struct {
	Addrs    []string `json:"addrs"`
	Proto    string   `json:"proto"`
	Auth     bool     `json:"auth,omitempty"`
	Clients  int      `json:"clients"`
	Pipeline int      `json:"pipeline"`
	// Shards is the cluster's shard count when clients sent each key to
	// its shard's leader (Config.Route); 0 when they did not.
	Shards     int     `json:"routed_shards,omitempty"`
	Mix        string  `json:"mix"`
	Total      int64   `json:"total,omitempty"`
	Duration   float64 `json:"duration_seconds,omitempty"`
	Warmup     float64 `json:"warmup_seconds"`
	Keys       uint64  `json:"keys"`
	Dist       string  `json:"dist"`
	ZipfS      float64 `json:"zipf_s,omitempty"`
	ValueSize  string  `json:"value_size"`
	Prefill    bool    `json:"prefill"`
	Verify     bool    `json:"verify"`
	Seed       uint64  `json:"seed"`
	Rate       float64 `json:"rate,omitempty"`
	Timeout    float64 `json:"timeout_seconds"`
	MaxErrors  int64   `json:"max_errors"`
	BatchSize  int     `json:"batch_size,omitempty"`
	RangeLimit int     `json:"range_limit,omitempty"`
	GOMAXPROCS int     `json:"gomaxprocs"`
}

// OpStats summarises one operation, or all of them.
type OpStats struct {
	Op    string `json:"op"`
	Count int64  `json:"count"`
	// Errors counts the measured requests that failed, as Count those
	// that succeeded; Result.Errors has the warmup's and prefill's too.
	Errors    int64   `json:"errors"`
	Misses    int64   `json:"misses,omitempty"` // gets that found no value
	OpsPerSec float64 `json:"ops_per_sec"`
	Latency   Latency `json:"latency_ns"`
	// HDR is the histogram in the HdrHistogram V2 compressed encoding,
	// base64: the exact distribution, for tools that merge or replot runs.
	HDR  string         `json:"hdr,omitempty"`
	Hist *hdr.Histogram `json:"-"`
}

// Latency holds the summary values of a latency histogram, in nanoseconds.
type Latency struct {
	Min   int64   `json:"min"`
	Mean  float64 `json:"mean"`
	P50   int64   `json:"p50"`
	P90   int64   `json:"p90"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p99_9"`
	P9999 int64   `json:"p99_99"`
	Max   int64   `json:"max"`
}

// Second is one second of the measured run.
type Second struct {
	T int `json:"t"` // seconds since the warmup ended
	// Span is how much of the second the run covered: 1, except for the
	// last second, which the run ends during: less than 1, or up to 1.1
	// when it also holds the replies that came in the first tenth of the
	// next second. Rates are counts / Span.
	Span   float64          `json:"span_seconds"`
	Ops    map[string]int64 `json:"ops"`
	Total  int64            `json:"total"`
	Errors int64            `json:"errors"`
	P50    int64            `json:"p50"`
	P99    int64            `json:"p99"`
	Max    int64            `json:"max"`
}

// OpenLoopStats says how well the schedule was kept.
type OpenLoopStats struct {
	TargetRate   float64 `json:"target_rate"`
	AchievedRate float64 `json:"achieved_rate"`
	// Unsent counts requests due before the end that were never sent,
	// because the run stopped waiting for a server that had fallen behind.
	Unsent int64 `json:"unsent"`
	// Lag is how late requests were sent after they were due; it is part
	// of their latency. A large lag with an idle server means kvbench
	// could not keep up (or its timers are coarse).
	Lag Latency `json:"send_lag_ns"`
}

// ClientCPU is kvbench's own CPU use during the measured phase.
type ClientCPU struct {
	Known       bool    `json:"known"`
	UserSeconds float64 `json:"user_seconds"`
	SysSeconds  float64 `json:"sys_seconds"`
	WallSeconds float64 `json:"wall_seconds"`
	Procs       int     `json:"procs"`
	// Share is CPU time over wall time × Procs.
	Share float64 `json:"share"`
	// Bound is set when Share exceeded 90%: the client was saturated.
	Bound bool `json:"client_bound"`
}

// PrefillStats describes the load before the run.
type PrefillStats struct {
	Keys    uint64  `json:"keys"`
	Seconds float64 `json:"seconds"`
	// Interrupted says the run stopped before the prefill wrote every key.
	Interrupted bool `json:"interrupted,omitempty"`
}

// fillResult builds the result from the clients' histograms (merged here,
// after they stopped) and the collector's per-second data. col is nil when
// the run stopped during the prefill.
func (r *runner) fillResult(res *Result, col *collector, cpu0, cpu1 cpuSample) {
	cfg := &r.cfg
	res.Run = runInfo(cfg)
	if t := r.route.Load(); t != nil {
		res.Run.Shards = t.shards
	}
	res.Errors = r.errCount.Load()
	res.ReconnectErrors = r.reconnectErrs.Load()
	if err := r.stopErr(); err != nil {
		res.Stopped = err.Error()
	}
	r.mu.Lock()
	res.FirstErrors = slices.Clone(r.firstErrs)
	res.FirstErrorCounts = slices.Clone(r.firstErrsN)
	r.mu.Unlock()

	var ended int64
	var unsent int64
	lags := make([]*hdr.PackedHistogram, 0, len(r.clients))
	for _, c := range r.clients {
		ended = max(ended, c.endedAt)
		res.Clamped += c.clamped
		unsent += c.unsent
		lags = append(lags, c.lag)
	}
	if col != nil {
		res.Elapsed = max(time.Duration(ended-int64(cfg.Warmup)), 0).Seconds()
	}

	all := newHist()
	res.All = OpStats{Op: "all"}
	for _, op := range cfg.Mix.ops {
		hists := make([]*hdr.PackedHistogram, len(r.clients))
		st := OpStats{Op: op.String()}
		for i, c := range r.clients {
			hists[i] = c.hist[op]
			st.Count += c.count[op]
			st.Errors += c.errs[op]
			st.Misses += c.misses[op]
		}
		st.Hist = mergePacked(hists)
		st.finish(res.Elapsed)
		all.Merge(st.Hist)
		res.All.Count += st.Count
		res.All.Errors += st.Errors
		res.All.Misses += st.Misses
		res.Ops = append(res.Ops, st)
	}
	res.All.Hist = all
	res.All.finish(res.Elapsed)

	if col != nil {
		res.Timeline = timeline(col.secs, cfg.Mix.ops, res.Elapsed)
	}

	if cfg.Rate > 0 {
		lag := mergePacked(lags)
		res.OpenLoop = &OpenLoopStats{
			TargetRate: cfg.Rate,
			Unsent:     unsent,
			Lag:        summarise(lag),
		}
		if res.Elapsed > 0 {
			// Both count measured requests only: warmup and prefill
			// requests were sent outside the measured time.
			res.OpenLoop.AchievedRate = float64(res.All.Count+res.All.Errors) / res.Elapsed
		}
	}

	res.CPU = ClientCPU{Known: cpu0.ok && cpu1.ok, Procs: procs()}
	if res.CPU.Known {
		res.CPU.UserSeconds = (cpu1.user - cpu0.user).Seconds()
		res.CPU.SysSeconds = (cpu1.sys - cpu0.sys).Seconds()
		res.CPU.WallSeconds = cpu1.at.Sub(cpu0.at).Seconds()
		if res.CPU.WallSeconds > 0 {
			res.CPU.Share = (res.CPU.UserSeconds + res.CPU.SysSeconds) / (res.CPU.WallSeconds * float64(res.CPU.Procs))
		}
		res.CPU.Bound = res.CPU.Share > cpuBoundShare
	}
	res.Warnings = warnings(res)
}

// minLastSpan is the shortest last second the timeline keeps apart. The
// last replies of a run often arrive just after a second boundary; a rate
// over those few milliseconds says nothing about the run, so such a sliver
// is added to the second before it instead.
const minLastSpan = 0.1

// timeline turns the collector's seconds into the report's. elapsed is the
// measured time, which ends during the last second.
func timeline(secs []second, ops []Op, elapsed float64) []Second {
	// Every second the measured time covers is in the timeline, those in
	// which nothing was answered too: the collector has no entry for the
	// last seconds of a run whose server died, and leaving them out hid
	// the outage (a 4 s run with a timeline of 2 s).
	n := max(len(secs), int(math.Ceil(elapsed)))
	if n > 1 && elapsed-float64(n-1) < minLastSpan {
		n-- // the second before the sliver takes it in
	}
	tl := make([]Second, 0, n)
	h := newHist()
	for i := range n {
		lo, hi := min(i, len(secs)), min(i+1, len(secs))
		sec := Second{T: i, Span: 1, Ops: make(map[string]int64)}
		if i == n-1 {
			hi = len(secs)
			sec.Span = elapsed - float64(i)
			if hi-lo <= 1 {
				// No replies came in the sliver after this second, so
				// the second was not stretched to take them in.
				sec.Span = min(sec.Span, 1)
			}
		}
		part := secs[lo:hi]
		h.Reset()
		for _, op := range ops {
			sec.Ops[op.String()] = 0 // an empty second lists every operation too
		}
		for _, s := range part {
			for _, op := range ops {
				sec.Ops[op.String()] += s.counts[op]
				sec.Total += s.counts[op]
			}
			sec.Errors += s.errs
			if s.hist != nil {
				s.hist.MergeInto(h)
			}
		}
		if h.TotalCount() > 0 {
			sec.P50 = h.ValueAtPercentile(50)
			sec.P99 = h.ValueAtPercentile(99)
			sec.Max = h.Max()
		}
		tl = append(tl, sec)
	}
	return tl
}

func runInfo(cfg *Config) RunInfo {
	ri := RunInfo{
		Addrs:      slices.Clone(cfg.Addrs),
		Proto:      cfg.Proto.String(),
		Auth:       cfg.Password != "",
		Clients:    cfg.Clients,
		Pipeline:   cfg.Pipeline,
		Mix:        cfg.Mix.String(),
		Total:      cfg.Total,
		Duration:   cfg.Duration.Seconds(),
		Warmup:     cfg.Warmup.Seconds(),
		Keys:       cfg.Keys,
		Dist:       cfg.Dist.String(),
		ValueSize:  cfg.ValueSize.String(),
		Prefill:    cfg.Prefill,
		Verify:     cfg.Verify,
		Seed:       cfg.Seed,
		Rate:       cfg.Rate,
		Timeout:    cfg.Timeout.Seconds(),
		MaxErrors:  cfg.MaxErrors,
		GOMAXPROCS: procs(),
	}
	if cfg.Dist == DistZipf {
		ri.ZipfS = cfg.ZipfS
	}
	if cfg.Mix.Has(OpBatch) {
		ri.BatchSize = cfg.BatchSize
	}
	if cfg.Mix.Has(OpRange) {
		ri.RangeLimit = cfg.RangeLimit
	}
	return ri
}

// finish computes the derived fields from Hist and Count.
func (s *OpStats) finish(elapsed float64) {
	if elapsed > 0 {
		s.OpsPerSec = float64(s.Count) / elapsed
	}
	s.Latency = summarise(s.Hist)
	s.HDR = encodeHist(s.Hist)
}

func summarise(h *hdr.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	q := h.ValueAtPercentilesSlice([]float64{50, 90, 99, 99.9, 99.99})
	return Latency{
		Min:   h.Min(),
		Mean:  h.Mean(),
		P50:   q[0],
		P90:   q[1],
		P99:   q[2],
		P999:  q[3],
		P9999: q[4],
		Max:   h.Max(),
	}
}

func encodeHist(h *hdr.Histogram) string {
	if h == nil || h.TotalCount() == 0 {
		return ""
	}
	b, err := h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

func decodeHist(s string) (*hdr.Histogram, error) {
	if s == "" {
		return newHist(), nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decode histogram: %w", err)
	}
	h, err := hdr.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode histogram: %w", err)
	}
	return h, nil
}

// warnings lists what makes the figures less than they seem.
func warnings(res *Result) []string {
	var w []string
	if res.CPU.Bound {
		w = append(w, fmt.Sprintf("client-bound: kvbench used %.0f%% of its %d CPUs; the figures measure the client as much as the server (use fewer clients, more pipelining, or run kvbench on another machine)",
			100*res.CPU.Share, res.CPU.Procs))
	}
	if ol := res.OpenLoop; ol != nil {
		if ol.AchievedRate < 0.95*ol.TargetRate {
			w = append(w, fmt.Sprintf("open loop: achieved %s ops/s of the %s asked; the server (or -clients × -pipeline) could not keep up, and latencies include the queueing",
				formatRate(ol.AchievedRate), formatRate(ol.TargetRate)))
		}
		if ol.Unsent > 0 {
			w = append(w, fmt.Sprintf("open loop: %d requests were due but never sent before the run gave up waiting", ol.Unsent))
		}
	}
	for _, st := range res.Ops {
		if st.Op == OpGet.String() && st.Count > 0 && !res.Run.Prefill && st.Misses*10 > st.Count {
			w = append(w, fmt.Sprintf("%.0f%% of gets found no value; -prefill loads the key space first", 100*float64(st.Misses)/float64(st.Count)))
		}
	}
	if res.Run.Proto == ProtoRESP.String() && res.Run.RangeLimit > 0 {
		w = append(w, fmt.Sprintf("range runs as SCAN 0 COUNT %d over RESP, which is not a key-range read; compare range figures only within one protocol", res.Run.RangeLimit))
	}
	if res.Clamped > 0 {
		w = append(w, fmt.Sprintf("%d latencies above one hour were recorded as one hour", res.Clamped))
	}
	if res.All.Count == 0 && res.All.Errors == 0 {
		msg := "no request was measured: none was answered or failed after the warmup, so every figure is zero"
		if res.Stopped == "" && res.Errors == 0 && res.Run.Duration > 0 {
			msg += fmt.Sprintf(" (-duration %s may be too short for one request)", time.Duration(res.Run.Duration*float64(time.Second)))
		}
		w = append(w, msg)
	}
	return w
}
