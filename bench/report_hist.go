package bench

import (
	"bufio"
	"fmt"
	"io"
)

// WriteHist writes the latency distribution of op ("all" for every
// operation) in HdrHistogram's percentile format, values in milliseconds,
// as the HdrHistogram plotter and wrk2 read it.
func (r *Result) WriteHist(w io.Writer, op string) error {
	st := r.stats(op)
	if st == nil {
		return fmt.Errorf("write histogram: no operation %q in this run", op)
	}
	if st.Hist == nil {
		return fmt.Errorf("write histogram: %s has no histogram", op)
	}
	bw := bufio.NewWriter(w)
	if _, err := st.Hist.PercentilesPrint(bw, 5, 1e6); err != nil {
		return fmt.Errorf("write histogram of %s: %w", op, err)
	}
	return bw.Flush()
}

// stats returns the statistics of op, or of all operations for "all".
func (r *Result) stats(op string) *OpStats {
	if op == r.All.Op || op == "all" {
		return &r.All
	}
	for i := range r.Ops {
		if r.Ops[i].Op == op {
			return &r.Ops[i]
		}
	}
	return nil
}
