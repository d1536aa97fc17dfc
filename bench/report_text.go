package bench

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Describe returns the header lines that say what was run: target,
// protocol, clients, pipeline, mix, key space, values and duration.
func (r *Result) Describe() []string {
	ri := &r.Run
	tool := "kvbench"
	if r.Tool != "" {
		tool += " " + r.Tool
	}
	loop := "closed loop"
	if ri.Rate > 0 {
		loop = fmt.Sprintf("open loop at %s ops/s", formatRate(ri.Rate))
	}
	auth := ""
	if ri.Auth {
		auth = ", AUTH"
	}
	dist := ri.Dist
	if ri.ZipfS > 0 {
		dist = fmt.Sprintf("zipf s=%g", ri.ZipfS)
	}
	var extras []string
	if ri.BatchSize > 0 {
		extras = append(extras, fmt.Sprintf("batch %d pairs", ri.BatchSize))
	}
	if ri.RangeLimit > 0 {
		extras = append(extras, fmt.Sprintf("range limit %d", ri.RangeLimit))
	}
	extra := ""
	if len(extras) > 0 {
		extra = ", " + strings.Join(extras, ", ")
	}
	limit := ""
	switch {
	case ri.Total > 0 && ri.Duration > 0:
		limit = fmt.Sprintf("%s requests or %s", groupDigits(ri.Total), seconds(ri.Duration))
	case ri.Total > 0:
		limit = groupDigits(ri.Total) + " requests"
	default:
		limit = seconds(ri.Duration)
	}
	routed := ""
	if ri.Shards > 0 {
		routed = fmt.Sprintf(", keys sent to their leader of %d shards", ri.Shards)
	}
	yes := map[bool]string{true: "yes", false: "no"}
	lines := []string{
		fmt.Sprintf("%s  %s", tool, r.Start.Format("2006-01-02 15:04:05Z07:00")),
		fmt.Sprintf("target    %s (%s%s%s), %d clients × pipeline %d, %s",
			strings.Join(ri.Addrs, ","), ri.Proto, auth, routed, ri.Clients, ri.Pipeline, loop),
		fmt.Sprintf("workload  %s on %s keys (%s), values %s B%s",
			ri.Mix, groupDigits(int64(ri.Keys)), dist, ri.ValueSize, extra),
		fmt.Sprintf("          prefill %s, verify %s, seed %d, timeout %s, max errors %d",
			yes[ri.Prefill], yes[ri.Verify], ri.Seed, seconds(ri.Timeout), ri.MaxErrors),
		fmt.Sprintf("duration  %s after %s warmup; measured %s", limit, seconds(ri.Warmup), seconds(r.Elapsed)),
	}
	return lines
}

// WriteText writes the human-readable report: the header, one table row
// per operation and one for all, then CPU use, warnings and errors.
func (r *Result) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, l := range r.Describe() {
		fmt.Fprintln(bw, l)
	}
	if p := r.Prefill; p != nil && p.Interrupted {
		fmt.Fprintf(bw, "prefill   of %s keys interrupted after %s\n", groupDigits(int64(p.Keys)), seconds(p.Seconds))
	} else if p != nil {
		fmt.Fprintf(bw, "prefill   %s keys in %s\n", groupDigits(int64(p.Keys)), seconds(p.Seconds))
	}
	fmt.Fprintln(bw)

	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\terrors\tops/s\tmean\tp50\tp90\tp99\tp99.9\tp99.99\tmax\t")
	rows := append(append([]OpStats(nil), r.Ops...), r.All)
	for _, s := range rows {
		l := s.Latency
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			s.Op, groupDigits(s.Count), groupDigits(s.Errors), groupDigits(int64(s.OpsPerSec+0.5)),
			ms(l.Mean), ms(float64(l.P50)), ms(float64(l.P90)), ms(float64(l.P99)),
			ms(float64(l.P999)), ms(float64(l.P9999)), ms(float64(l.Max)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(bw, "latencies in ms, from HDR histograms merged over all clients")

	for _, s := range r.Ops {
		if s.Op == OpGet.String() && s.Count > 0 {
			fmt.Fprintf(bw, "gets      %.1f%% found a value\n", 100*float64(s.Count-s.Misses)/float64(s.Count))
		}
	}
	if ol := r.OpenLoop; ol != nil {
		fmt.Fprintf(bw, "schedule  %s ops/s achieved of %s; sent late by p50 %s, p99 %s, max %s (counted in latency)\n",
			formatRate(ol.AchievedRate), formatRate(ol.TargetRate),
			formatLatency(ol.Lag.P50), formatLatency(ol.Lag.P99), formatLatency(ol.Lag.Max))
	}
	if c := r.CPU; c.Known {
		fmt.Fprintf(bw, "client    CPU %.0f%% of %d (user %.2fs, sys %.2fs over %.2fs)",
			100*c.Share, c.Procs, c.UserSeconds, c.SysSeconds, c.WallSeconds)
		if c.Bound {
			fmt.Fprint(bw, " CLIENT-BOUND")
		}
		fmt.Fprintln(bw)
	} else if r.Elapsed == 0 {
		fmt.Fprintln(bw, "client    CPU not measured: the run stopped before its measured phase")
	} else {
		fmt.Fprintln(bw, "client    CPU use unknown on this platform")
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(bw, "WARNING   %s\n", warn)
	}
	if r.Errors > 0 {
		fmt.Fprintf(bw, "errors    %s; first:\n", r.errorSummary())
		for i, e := range r.FirstErrors {
			if i < len(r.FirstErrorCounts) && r.FirstErrorCounts[i] > 1 {
				e += fmt.Sprintf(" (%s times)", groupDigits(r.FirstErrorCounts[i]))
			}
			fmt.Fprintf(bw, "          %s\n", e)
		}
	}
	if r.Stopped != "" {
		fmt.Fprintf(bw, "stopped   %s\n", r.Stopped)
	}
	return bw.Flush()
}

// errorSummary is the run's error count, saying which of the errors are in
// no operation's row: failed reconnects, and the failed requests of the
// warmup and the prefill.
func (r *Result) errorSummary() string {
	var outside []string
	if r.ReconnectErrors > 0 {
		outside = append(outside, groupDigits(r.ReconnectErrors)+" of them failed reconnects")
	}
	if n := r.Errors - r.ReconnectErrors - r.All.Errors; n > 0 {
		outside = append(outside, groupDigits(n)+" in the warmup or prefill")
	}
	if len(outside) == 0 {
		return groupDigits(r.Errors)
	}
	return fmt.Sprintf("%s (%s, in no operation's row)", groupDigits(r.Errors), strings.Join(outside, ", "))
}
