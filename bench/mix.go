package bench

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Mix is a weighted choice of operations. The zero value is empty; build one
// with ParseMix or NewMix.
type Mix struct {
	ops     []Op
	weights []int
	cum     []int // running sums of weights, for Pick
}

// NewMix returns a mix of ops with the given positive weights.
func NewMix(ops []Op, weights []int) (Mix, error) {
	m, err := newMix(ops, weights)
	if err != nil {
		return Mix{}, fmt.Errorf("mix: %w", err)
	}
	return m, nil
}

func newMix(ops []Op, weights []int) (Mix, error) {
	if len(ops) == 0 || len(ops) != len(weights) {
		return Mix{}, fmt.Errorf("%d operations with %d weights", len(ops), len(weights))
	}
	var m Mix
	seen := make(map[Op]bool)
	total := 0
	for i, op := range ops {
		if op >= numOps {
			return Mix{}, fmt.Errorf("unknown operation %v", op)
		}
		if seen[op] {
			return Mix{}, fmt.Errorf("%v listed twice", op)
		}
		seen[op] = true
		w := weights[i]
		if w <= 0 || w > 1_000_000 {
			return Mix{}, fmt.Errorf("weight of %v must be between 1 and 1000000, got %d", op, w)
		}
		total += w
		m.ops = append(m.ops, op)
		m.weights = append(m.weights, w)
		m.cum = append(m.cum, total)
	}
	return m, nil
}

// ParseMix reads "put,get" (an equal mix) or "put=1,get=9" (weights); a
// name without a weight counts 1.
func ParseMix(s string) (Mix, error) {
	var ops []Op
	var weights []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, hasWeight := strings.Cut(part, "=")
		op, err := ParseOp(name)
		if err != nil {
			return Mix{}, fmt.Errorf("mix %q: %w", s, err)
		}
		weight := 1
		if hasWeight {
			weight, err = strconv.Atoi(strings.TrimSpace(w))
			if err != nil {
				return Mix{}, fmt.Errorf("mix %q: weight of %v is not an integer: %q", s, op, w)
			}
		}
		ops = append(ops, op)
		weights = append(weights, weight)
	}
	if len(ops) == 0 {
		return Mix{}, fmt.Errorf("mix %q: no operations", s)
	}
	m, err := newMix(ops, weights)
	if err != nil {
		return Mix{}, fmt.Errorf("mix %q: %w", s, err)
	}
	return m, nil
}

// Pick draws one operation with probability proportional to its weight.
func (m *Mix) Pick(r *rand.Rand) Op {
	if len(m.ops) == 1 {
		return m.ops[0]
	}
	x := r.IntN(m.cum[len(m.cum)-1])
	for i, c := range m.cum {
		if x < c {
			return m.ops[i]
		}
	}
	return m.ops[len(m.ops)-1]
}

// Ops returns the operations of the mix in the order given.
func (m *Mix) Ops() []Op { return append([]Op(nil), m.ops...) }

// Weight returns the weight of op, 0 when it is not in the mix.
func (m *Mix) Weight(op Op) int {
	for i, o := range m.ops {
		if o == op {
			return m.weights[i]
		}
	}
	return 0
}

// Has reports whether op is in the mix.
func (m *Mix) Has(op Op) bool { return m.Weight(op) > 0 }

// Empty reports whether the mix has no operations.
func (m *Mix) Empty() bool { return len(m.ops) == 0 }

// String returns the mix as ParseMix reads it, with explicit weights.
func (m *Mix) String() string {
	var b strings.Builder
	for i, op := range m.ops {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%v=%d", op, m.weights[i])
	}
	return b.String()
}
