package bench

import (
	"errors"
	"math"
	"math/rand/v2"
)

// zipf draws ranks 1..n with P(k) proportional to 1/k^s, for any s > 0.
//
// math/rand's Zipf needs s > 1, but key-value workloads are usually modelled
// with s just below 1 (YCSB's 0.99), so this is the rejection-inversion
// sampler of Hörmann and Derflinger ("Rejection-inversion to generate
// variates from monotone discrete distributions", 1996), as Apache Commons
// RNG implements it: O(1) set-up, no table, exact distribution, and a little
// over one uniform draw per sample on average. It is immutable once built,
// so every client shares one and brings its own source of randomness.
type zipf struct {
	n           float64
	exponent    float64
	hIntegralX1 float64 // hIntegral(1.5) - 1
	hIntegralN  float64 // hIntegral(n + 0.5)
	s           float64 // acceptance threshold, 2 - hIntegralInverse(hIntegral(2.5) - h(2))
}

func newZipf(n uint64, exponent float64) (*zipf, error) {
	if n == 0 {
		return nil, errors.New("zipf: empty key space")
	}
	if !(exponent > 0) || math.IsInf(exponent, 0) {
		return nil, errors.New("zipf: exponent must be a positive number")
	}
	z := &zipf{n: float64(n), exponent: exponent}
	z.hIntegralX1 = z.hIntegral(1.5) - 1
	z.hIntegralN = z.hIntegral(z.n + 0.5)
	z.s = 2 - z.hIntegralInverse(z.hIntegral(2.5)-z.h(2))
	return z, nil
}

// rank returns a rank in [1, n]; rank 1 is the most frequent.
func (z *zipf) rank(r *rand.Rand) uint64 {
	for {
		u := z.hIntegralN + r.Float64()*(z.hIntegralX1-z.hIntegralN)
		x := z.hIntegralInverse(u)
		k := math.Floor(x + 0.5)
		if k < 1 {
			k = 1
		} else if k > z.n {
			k = z.n
		}
		if k-x <= z.s || u >= z.hIntegral(k+0.5)-z.h(k) {
			return uint64(k)
		}
	}
}

// h is the unnormalised density x^-exponent.
func (z *zipf) h(x float64) float64 { return math.Exp(-z.exponent * math.Log(x)) }

// hIntegral is the integral of h from 1 to x: (x^(1-e) - 1) / (1-e), or
// log x when e == 1, computed without cancellation near e == 1.
func (z *zipf) hIntegral(x float64) float64 {
	logX := math.Log(x)
	return expm1Over((1-z.exponent)*logX) * logX
}

// hIntegralInverse inverts hIntegral.
func (z *zipf) hIntegralInverse(x float64) float64 {
	t := x * (1 - z.exponent)
	if t < -1 {
		t = -1 // rounding can push t just below the pole of log1p
	}
	return math.Exp(log1pOver(t) * x)
}

// log1pOver is log1p(x)/x, continuous at 0.
func log1pOver(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Log1p(x) / x
	}
	return 1 - x*(0.5-x*(1.0/3.0-0.25*x))
}

// expm1Over is expm1(x)/x, continuous at 0.
func expm1Over(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Expm1(x) / x
	}
	return 1 + x*0.5*(1+x*(1.0/3.0)*(1+0.25*x))
}
