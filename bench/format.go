package bench

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// groupDigits writes n with thousands separators: 1234567 -> 1,234,567.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// formatRate writes a rate in ops/s: whole and grouped from 100 up, with
// three significant figures below, where truncating to a whole number
// printed an open loop at 0.5 ops/s as "open loop at 0 ops/s".
func formatRate(r float64) string {
	if r >= 100 {
		return groupDigits(int64(math.Round(r)))
	}
	return strconv.FormatFloat(r, 'g', 3, 64)
}

// formatLatency writes a latency in the unit that keeps three significant
// figures readable: 812µs, 1.25ms, 2.31s.
func formatLatency(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}

// ms writes nanoseconds as milliseconds with three decimals, the table's unit.
func ms(ns float64) string { return strconv.FormatFloat(ns/1e6, 'f', 3, 64) }

// seconds writes a duration in seconds without needless decimals.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}
