package bench

import (
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Every latency histogram has one geometry, so any two merge exactly:
// nanoseconds from 1 ns to one hour with three significant digits (a
// recorded value is within 0.1% of the true one). A latency beyond an hour
// is recorded as an hour and counted as clamped.
const (
	histLowest  = 1
	histHighest = int64(time.Hour)
	histDigits  = 3
)

// newHist returns a dense histogram, for the few that are merged into.
func newHist() *hdr.Histogram { return hdr.New(histLowest, histHighest, histDigits) }

// newPacked returns a sparse histogram. Each connection keeps one per
// operation: a dense one is ~260 KB however little it holds, and 512
// connections × 6 operations of those would be most of a gigabyte, while a
// connection's latencies fill a few hundred buckets.
func newPacked() *hdr.PackedHistogram { return hdr.NewPacked(histLowest, histHighest, histDigits) }

// clampLatency bounds v to the histogram range and says whether it had to.
func clampLatency(v int64) (int64, bool) {
	switch {
	case v < histLowest:
		return histLowest, false // a reply in the same clock tick as its send
	case v > histHighest:
		return histHighest, true
	}
	return v, false
}

// mergePacked merges every packed histogram of srcs into one dense
// histogram; nil entries are skipped.
func mergePacked(srcs []*hdr.PackedHistogram) *hdr.Histogram {
	h := newHist()
	for _, s := range srcs {
		if s != nil {
			s.MergeInto(h)
		}
	}
	return h
}
