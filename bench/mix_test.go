package bench

import (
	"math/rand/v2"
	"testing"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"put,get", "put=1,get=1"},
		{"put=1,get=9", "put=1,get=9"},
		{" set=2 , del ", "put=2,delete=1"},
		{"range,batch,ping", "range=1,batch=1,ping=1"},
		{"get", "get=1"},
		{"", ""},
		{",", ""},
		{"foo", ""},
		{"put=0", ""},
		{"put=-1", ""},
		{"put=x", ""},
		{"put,set", ""},
		{"put=1=2", ""},
	}
	for _, tt := range tests {
		m, err := ParseMix(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ParseMix(%q) = %v, want an error", tt.in, m.String())
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseMix(%q): %v", tt.in, err)
			continue
		}
		if got := m.String(); got != tt.want {
			t.Errorf("ParseMix(%q) = %q, want %q", tt.in, got, tt.want)
		}
		// String is a fixed point of ParseMix.
		if m2, err := ParseMix(m.String()); err != nil || m2.String() != m.String() {
			t.Errorf("ParseMix(%q) does not round trip: %v %v", m.String(), m2.String(), err)
		}
	}
}

// chiSquare returns the chi-square statistic of observed counts against
// expected counts.
func chiSquare(observed []int, expected []float64) float64 {
	var x2 float64
	for i, o := range observed {
		d := float64(o) - expected[i]
		x2 += d * d / expected[i]
	}
	return x2
}

func TestMixPickFollowsWeights(t *testing.T) {
	tests := []struct {
		mix string
		// critical is the chi-square value with len(ops)-1 degrees of
		// freedom that a correct sampler exceeds with probability 0.001.
		critical float64
	}{
		{"put=1,get=9", 10.83},
		{"put=5,get=3,delete=1,ping=1", 16.27},
		{"put,get,delete,range,batch,ping", 20.52},
	}
	const draws = 200_000
	for _, tt := range tests {
		m := mustMix(t, tt.mix)
		r := rand.New(rand.NewPCG(1, 2))
		counts := make(map[Op]int)
		for range draws {
			counts[m.Pick(r)]++
		}
		total := 0
		for _, op := range m.ops {
			total += m.Weight(op)
		}
		var obs []int
		var exp []float64
		for _, op := range m.ops {
			obs = append(obs, counts[op])
			exp = append(exp, draws*float64(m.Weight(op))/float64(total))
			delete(counts, op)
		}
		if len(counts) != 0 {
			t.Errorf("%s: picked operations outside the mix: %v", tt.mix, counts)
		}
		if x2 := chiSquare(obs, exp); x2 > tt.critical {
			t.Errorf("%s: counts %v against expected %v: chi-square %.1f > %.1f", tt.mix, obs, exp, x2, tt.critical)
		}
	}
}

func TestParseOp(t *testing.T) {
	for _, op := range Ops() {
		got, err := ParseOp(op.String())
		if err != nil || got != op {
			t.Errorf("ParseOp(%q) = %v, %v", op.String(), got, err)
		}
	}
	if _, err := ParseOp("incr"); err == nil {
		t.Error("ParseOp(incr) succeeded")
	}
}
