package bench

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WriteHTML writes a self-contained page: the header, the table,
// throughput and latency over time, and latency by percentile for each
// operation. Charts are inline SVG; the page loads nothing from anywhere.
func (r *Result) WriteHTML(w io.Writer) error {
	bw := bufio.NewWriter(w)
	esc := html.EscapeString
	fmt.Fprint(bw, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kvbench report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:900px}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}
table{border-collapse:collapse;margin:1em 0}
th,td{padding:.2em .7em;text-align:right;border-bottom:1px solid #ddd}
th:first-child,td:first-child{text-align:left}
.warn{color:#a40}
svg{display:block;margin:1em 0}
svg text{font:12px system-ui,sans-serif;fill:#333}
</style></head><body>
<h1>kvbench report</h1>
<pre>`)
	for _, l := range r.Describe() {
		fmt.Fprintln(bw, esc(l))
	}
	fmt.Fprint(bw, "</pre>\n")
	for _, warn := range r.Warnings {
		fmt.Fprintf(bw, "<p class=\"warn\">Warning: %s</p>\n", esc(warn))
	}
	if r.Stopped != "" {
		fmt.Fprintf(bw, "<p class=\"warn\">Stopped early: %s</p>\n", esc(r.Stopped))
	}

	fmt.Fprint(bw, "<table><tr><th>op</th><th>count</th><th>errors</th><th>ops/s</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr>\n")
	for _, s := range append(append([]OpStats(nil), r.Ops...), r.All) {
		l := s.Latency
		fmt.Fprintf(bw, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
			esc(s.Op), groupDigits(s.Count), groupDigits(s.Errors), groupDigits(int64(s.OpsPerSec+0.5)),
			ms(l.Mean), ms(float64(l.P50)), ms(float64(l.P90)), ms(float64(l.P99)),
			ms(float64(l.P999)), ms(float64(l.P9999)), ms(float64(l.Max)))
	}
	fmt.Fprint(bw, "</table>\n<p>Latencies in milliseconds.")
	if c := r.CPU; c.Known {
		fmt.Fprintf(bw, " Client CPU %.0f%% of %d.", 100*c.Share, c.Procs)
	}
	if r.Errors > 0 {
		fmt.Fprintf(bw, " Errors %s.", esc(r.errorSummary()))
	}
	fmt.Fprint(bw, "</p>\n")

	fmt.Fprint(bw, r.throughputChart().svg())
	fmt.Fprint(bw, r.latencyTimeChart().svg())
	fmt.Fprint(bw, r.percentileChart().svg())
	fmt.Fprint(bw, "</body></html>\n")
	return bw.Flush()
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#333333"}

func (r *Result) throughputChart() chart {
	c := chart{title: "Throughput over time", xLabel: "seconds", yLabel: "ops/s"}
	// Each second is drawn at its middle; the last one, which the run
	// ends during, at the middle of the part it covers, with its rate over
	// that part.
	mid := func(sec Second) float64 { return float64(sec.T) + sec.Span/2 }
	rate := func(n int64, sec Second) float64 { return float64(n) / max(sec.Span, 0.001) }
	total := series{name: "all", color: palette[len(palette)-1]}
	for i, st := range r.Ops {
		s := series{name: st.Op, color: palette[i%len(palette)]}
		for _, sec := range r.Timeline {
			s.add(mid(sec), rate(sec.Ops[st.Op], sec))
		}
		c.series = append(c.series, s)
	}
	for _, sec := range r.Timeline {
		total.add(mid(sec), rate(sec.Total, sec))
	}
	if len(r.Ops) > 1 {
		c.series = append(c.series, total)
	}
	return c
}

func (r *Result) latencyTimeChart() chart {
	c := chart{title: "Latency over time (all operations)", xLabel: "seconds", yLabel: "ms"}
	p50 := series{name: "p50", color: palette[0]}
	p99 := series{name: "p99", color: palette[1]}
	mx := series{name: "max", color: palette[len(palette)-1]}
	for _, sec := range r.Timeline {
		if sec.Total == 0 {
			continue
		}
		t := float64(sec.T) + sec.Span/2
		p50.add(t, float64(sec.P50)/1e6)
		p99.add(t, float64(sec.P99)/1e6)
		mx.add(t, float64(sec.Max)/1e6)
	}
	c.series = []series{p50, p99, mx}
	return c
}

// percentileChart plots latency against percentile on HdrHistogram's
// axis, log10(1/(1-q)), which spreads the tail: 90%, 99%, 99.9% ... are
// equally spaced.
func (r *Result) percentileChart() chart {
	c := chart{title: "Latency by percentile", xLabel: "percentile", yLabel: "ms"}
	stats := append(append([]OpStats(nil), r.Ops...), r.All)
	maxX := 2.0
	for i, st := range stats {
		if st.Hist == nil || st.Hist.TotalCount() == 0 {
			continue
		}
		color := palette[i%len(palette)]
		if i == len(stats)-1 {
			color = palette[len(palette)-1]
		}
		s := series{name: st.Op, color: color}
		// The last point is the maximum, placed where one sample in the
		// histogram's count would put it.
		xEnd := math.Log10(float64(st.Hist.TotalCount()))
		for _, b := range st.Hist.CumulativeDistributionWithTicks(5) {
			if b.Quantile >= 100 {
				continue
			}
			x := math.Log10(1 / (1 - b.Quantile/100))
			if x > xEnd {
				break
			}
			s.add(x, float64(b.ValueAt)/1e6)
		}
		s.add(max(xEnd, 0), float64(st.Hist.Max())/1e6)
		maxX = max(maxX, math.Ceil(xEnd))
		c.series = append(c.series, s)
	}
	if len(r.Ops) == 1 && len(c.series) == 2 {
		c.series = c.series[:1] // "all" would repeat the only operation
	}
	c.xMax = maxX
	labels := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%", "99.99999%"}
	for i := 0; i <= int(maxX) && i < len(labels); i++ {
		c.xTicks = append(c.xTicks, tick{pos: float64(i), label: labels[i]})
	}
	return c
}

type series struct {
	name   string
	color  string
	xs, ys []float64
}

func (s *series) add(x, y float64) {
	s.xs = append(s.xs, x)
	s.ys = append(s.ys, y)
}

type tick struct {
	pos   float64
	label string
}

// chart is a line chart with linear axes starting at zero.
type chart struct {
	title, xLabel, yLabel string
	series                []series
	xMax                  float64 // 0: from the data
	xTicks                []tick  // nil: automatic
}

const (
	chartW, chartH = 860, 320
	padL, padR     = 70, 40
	padT, padB     = 36, 44
)

func (c chart) svg() string {
	var b strings.Builder
	esc := html.EscapeString
	xMax, yMax := c.xMax, 0.0
	for _, s := range c.series {
		for i := range s.xs {
			if c.xMax == 0 {
				xMax = max(xMax, s.xs[i])
			}
			yMax = max(yMax, s.ys[i])
		}
	}
	if xMax <= 0 {
		xMax = 1
	}
	yStep := niceStep(yMax / 5)
	if yMax <= 0 {
		yMax, yStep = 1, 0.2
	}
	yMax = math.Ceil(yMax/yStep) * yStep
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	px := func(x float64) float64 { return padL + x/xMax*plotW }
	py := func(y float64) float64 { return padT + plotH - y/yMax*plotH }

	fmt.Fprintf(&b, "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n",
		chartW, chartH, chartW, chartH, esc(c.title))
	fmt.Fprintf(&b, "<text x=\"%d\" y=\"20\" style=\"font-weight:bold\">%s</text>\n", padL, esc(c.title))
	// Horizontal grid and y labels.
	for y := 0.0; y <= yMax*1.0001; y += yStep {
		fmt.Fprintf(&b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", padL, chartW-padR, py(y), py(y))
		fmt.Fprintf(&b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", padL-6, py(y)+4, axisLabel(y, yStep))
	}
	// x ticks.
	ticks := c.xTicks
	if ticks == nil {
		step := niceStep(xMax / 8)
		for x := 0.0; x <= xMax*1.0001; x += step {
			ticks = append(ticks, tick{pos: x, label: axisLabel(x, step)})
		}
	}
	for i, t := range ticks {
		anchor := "middle"
		if i == len(ticks)-1 && len(t.label) > 4 {
			anchor = "end" // keep a long last label inside the picture
		}
		fmt.Fprintf(&b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#e4e4e4\"/>", px(t.pos), px(t.pos), padT, chartH-padB)
		fmt.Fprintf(&b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">%s</text>\n", px(t.pos), chartH-padB+16, anchor, esc(t.label))
	}
	fmt.Fprintf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#999\"/>\n", padL, padT, plotW, plotH)
	fmt.Fprintf(&b, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", padL+plotW/2, chartH-6, esc(c.xLabel))
	fmt.Fprintf(&b, "<text transform=\"translate(14 %.0f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n", padT+plotH/2, esc(c.yLabel))
	for _, s := range c.series {
		if len(s.xs) > 0 {
			fmt.Fprintf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", s.color)
			for j := range s.xs {
				fmt.Fprintf(&b, "%.1f,%.1f ", px(s.xs[j]), py(s.ys[j]))
			}
			fmt.Fprint(&b, "\"/>\n")
		}
	}
	// The legend goes on top of the lines, on a pale background.
	if len(c.series) > 0 {
		w := 0
		for _, s := range c.series {
			w = max(w, len(s.name))
		}
		fmt.Fprintf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fff\" fill-opacity=\"0.85\"/>\n",
			padL+6, padT+4, 40+7*w, 16*len(c.series)+4)
	}
	for i, s := range c.series {
		lx, ly := float64(padL+12), float64(padT+16+16*i)
		fmt.Fprintf(&b, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"3\"/>", lx, lx+18, ly-4, ly-4, s.color)
		fmt.Fprintf(&b, "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n", lx+24, ly, esc(s.name))
	}
	if len(c.series) == 0 || allEmpty(c.series) {
		fmt.Fprintf(&b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">no data</text>\n", padL+plotW/2, padT+plotH/2)
	}
	fmt.Fprint(&b, "</svg>\n")
	return b.String()
}

func allEmpty(ss []series) bool {
	for _, s := range ss {
		if len(s.xs) > 0 {
			return false
		}
	}
	return true
}

// niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func axisLabel(v, step float64) string {
	if step >= 1 {
		if v >= 1e6 {
			return fmt.Sprintf("%gM", v/1e6)
		}
		if v >= 1e4 {
			return fmt.Sprintf("%gk", v/1e3)
		}
		return fmt.Sprintf("%.0f", v)
	}
	decimals := int(math.Ceil(-math.Log10(step)))
	return fmt.Sprintf("%.*f", decimals, v)
}
