package bench

import (
	"math/rand/v2"
	"testing"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// TestMergeMatchesOneHistogram records latencies spread over several
// per-client packed histograms and checks the merge is the histogram that
// would have recorded them all.
func TestMergeMatchesOneHistogram(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	direct := newHist()
	clients := make([]*hdr.PackedHistogram, 8)
	for i := range clients {
		clients[i] = newPacked()
	}
	clients[3] = nil // a client that never ran this op
	for i := range 50_000 {
		// Log-uniform from 10µs to 1s: many buckets in play.
		v := int64(float64(int64(10_000)<<r.IntN(17)) * (1 + r.Float64()))
		if err := direct.RecordValue(v); err != nil {
			t.Fatal(err)
		}
		c := clients[i%len(clients)]
		if c == nil {
			c = clients[0]
		}
		if err := c.RecordValue(v); err != nil {
			t.Fatal(err)
		}
	}
	merged := mergePacked(clients)
	if !merged.Equals(direct) {
		t.Fatalf("merged histogram differs: count %d vs %d, p99 %d vs %d",
			merged.TotalCount(), direct.TotalCount(), merged.ValueAtQuantile(99), direct.ValueAtQuantile(99))
	}
	for _, q := range []float64{50, 90, 99, 99.9, 99.99, 100} {
		if a, b := merged.ValueAtQuantile(q), direct.ValueAtQuantile(q); a != b {
			t.Errorf("p%g: merged %d, direct %d", q, a, b)
		}
	}

	// Merging the per-op dense histograms into "all" keeps every value.
	all := newHist()
	all.Merge(merged)
	all.Merge(direct)
	if all.TotalCount() != 2*direct.TotalCount() || all.Max() != direct.Max() {
		t.Errorf("all: %d values, max %d", all.TotalCount(), all.Max())
	}
}

func TestHistogramPrecision(t *testing.T) {
	h := newPacked()
	for _, v := range []time.Duration{45 * time.Microsecond, 1234567 * time.Nanosecond, 59 * time.Minute} {
		h.Reset()
		if err := h.RecordValue(int64(v)); err != nil {
			t.Fatal(err)
		}
		got := time.Duration(h.ValueAtPercentile(50))
		if d := got - v; d < 0 || float64(d) > 0.001*float64(v) {
			t.Errorf("%v recorded as %v: more than 0.1%% off", v, got)
		}
	}
}

func TestClampLatency(t *testing.T) {
	for _, tt := range []struct {
		in, want int64
		clamped  bool
	}{
		{0, 1, false},
		{-5, 1, false},
		{1000, 1000, false},
		{histHighest, histHighest, false},
		{histHighest + 1, histHighest, true},
	} {
		got, c := clampLatency(tt.in)
		if got != tt.want || c != tt.clamped {
			t.Errorf("clampLatency(%d) = %d, %v", tt.in, got, c)
		}
	}
}
