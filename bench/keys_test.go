package bench

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAppendKey(t *testing.T) {
	for _, tt := range []struct {
		i    uint64
		want string
	}{
		{0, "key:000000000000"},
		{707, "key:000000000707"},
		{MaxKeys - 1, "key:999999999999"},
	} {
		if got := string(appendKey([]byte("x"), tt.i)); got != "x"+tt.want {
			t.Errorf("appendKey(%d) = %q, want %q", tt.i, got, tt.want)
		}
	}
}

func TestUniformKeys(t *testing.T) {
	const n, draws = 100, 200_000
	ks, err := newKeySpace(n, DistUniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	obs := make([]int, n)
	for range draws {
		k := ks.pick(r)
		if k >= n {
			t.Fatalf("key %d outside [0, %d)", k, n)
		}
		obs[k]++
	}
	exp := make([]float64, n)
	for i := range exp {
		exp[i] = draws / n
	}
	// 99 degrees of freedom: 148.2 is exceeded with probability 0.001.
	if x2 := chiSquare(obs, exp); x2 > 148.2 {
		t.Errorf("uniform keys: chi-square %.1f > 148.2", x2)
	}
}

// TestZipfShape compares the sampled rank frequencies with the exact
// probabilities k^-s / H(n, s): each of the 20 hottest ranks on its own,
// then the tail in a few bins.
func TestZipfShape(t *testing.T) {
	const n, draws = 1000, 300_000
	bins := [][2]int{{21, 50}, {51, 100}, {101, 200}, {201, 500}, {501, 1000}}
	for _, s := range []float64{0.5, 0.99, 1.0, 1.2, 2.0} {
		z, err := newZipf(n, s)
		if err != nil {
			t.Fatal(err)
		}
		var norm float64
		p := make([]float64, n+1)
		for k := 1; k <= n; k++ {
			p[k] = math.Pow(float64(k), -s)
			norm += p[k]
		}
		r := rand.New(rand.NewPCG(5, uint64(s*100)))
		counts := make([]int, n+1)
		for range draws {
			k := z.rank(r)
			if k < 1 || k > n {
				t.Fatalf("s=%g: rank %d outside [1, %d]", s, k, n)
			}
			counts[k]++
		}
		var obs []int
		var exp []float64
		for k := 1; k <= 20; k++ {
			obs = append(obs, counts[k])
			exp = append(exp, draws*p[k]/norm)
		}
		for _, b := range bins {
			o, e := 0, 0.0
			for k := b[0]; k <= b[1]; k++ {
				o += counts[k]
				e += draws * p[k] / norm
			}
			obs = append(obs, o)
			exp = append(exp, e)
		}
		// 24 degrees of freedom: 51.18 is exceeded with probability 0.001.
		if x2 := chiSquare(obs, exp); x2 > 51.18 {
			t.Errorf("zipf s=%g: chi-square %.1f > 51.18\nobserved %v\nexpected %.0f", s, x2, obs, exp)
		}
	}
}

func TestZipfKeySpaceScatters(t *testing.T) {
	for _, n := range []uint64{1, 2, 10, 997, 1000, 1024} {
		ks, err := newKeySpace(n, DistZipf, 0.99)
		if err != nil {
			t.Fatal(err)
		}
		seen := make(map[uint64]bool)
		for rank := range n {
			k := ks.scatter(rank)
			if k >= n || seen[k] {
				t.Fatalf("n=%d: rank %d maps to %d, outside the key space or taken", n, rank, k)
			}
			seen[k] = true
		}
		if n >= 10 && ks.scatter(1) == 1 && ks.scatter(2) == 2 {
			t.Errorf("n=%d: the hottest keys are not scattered", n)
		}
	}
	// The hottest key is drawn far more often than a uniform key would be.
	ks, _ := newKeySpace(10_000, DistZipf, 0.99)
	r := rand.New(rand.NewPCG(1, 1))
	hot := ks.scatter(0)
	hits := 0
	for range 100_000 {
		if ks.pick(r) == hot {
			hits++
		}
	}
	if hits < 5000 { // P(rank 1) ≈ 0.1 for s=0.99, n=10^4; uniform would give 10
		t.Errorf("hottest key drawn %d times in 100000", hits)
	}
}

func TestKeySpaceErrors(t *testing.T) {
	if _, err := newKeySpace(0, DistUniform, 0); err == nil {
		t.Error("empty key space accepted")
	}
	if _, err := newKeySpace(MaxKeys+1, DistUniform, 0); err == nil {
		t.Error("key space over MaxKeys accepted")
	}
	for _, s := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, err := newKeySpace(10, DistZipf, s); err == nil {
			t.Errorf("zipf exponent %v accepted", s)
		}
	}
	if _, err := ParseDist("normal"); err == nil {
		t.Error("ParseDist(normal) succeeded")
	}
}

func TestOwnKey(t *testing.T) {
	for _, tt := range []struct {
		n       uint64
		clients int
	}{{10, 3}, {12, 4}, {7, 7}, {1000, 64}} {
		for c := range tt.clients {
			for k := range tt.n {
				o := ownKey(k, tt.n, c, tt.clients)
				if o >= tt.n || o%uint64(tt.clients) != uint64(c) {
					t.Fatalf("n=%d clients=%d: ownKey(%d) for client %d = %d", tt.n, tt.clients, k, c, o)
				}
				if d := int64(o) - int64(k); d < -int64(tt.clients) || d >= int64(tt.clients) {
					t.Fatalf("ownKey(%d) = %d moved the key too far", k, o)
				}
			}
		}
	}
}
