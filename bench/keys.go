package bench

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
)

// Dist is how keys are drawn from the key space.
type Dist uint8

// The key distributions.
const (
	// DistUniform draws every key with the same probability.
	DistUniform Dist = iota
	// DistZipf draws the key of rank k with probability proportional to
	// 1/k^s. Ranks are scattered over the key space by a fixed permutation,
	// so the hot keys are not neighbours (they would all land in one range
	// shard and one SSTable block otherwise).
	DistZipf
)

// ParseDist reads "uniform" or "zipf".
func ParseDist(s string) (Dist, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "uniform":
		return DistUniform, nil
	case "zipf", "zipfian":
		return DistZipf, nil
	}
	return 0, fmt.Errorf("unknown key distribution %q (want uniform or zipf)", s)
}

func (d Dist) String() string {
	switch d {
	case DistUniform:
		return "uniform"
	case DistZipf:
		return "zipf"
	}
	return fmt.Sprintf("dist(%d)", uint8(d))
}

// MaxKeys bounds the key space: keys are written with keyDigits digits.
const MaxKeys = 1_000_000_000_000

const (
	keyPrefix = "key:"
	keyDigits = 12
	// keyLen is the length of every key. The layout is redis-benchmark's
	// (-r): "key:" and a zero-padded number, so both tools touch the same
	// keys and the keys sort in numeric order.
	keyLen = len(keyPrefix) + keyDigits
)

// appendKey appends the key with index i.
func appendKey(dst []byte, i uint64) []byte {
	dst = append(dst, keyPrefix...)
	var d [keyDigits]byte
	for j := keyDigits - 1; j >= 0; j-- {
		d[j] = byte('0' + i%10)
		i /= 10
	}
	return append(dst, d[:]...)
}

// keySpace draws key indexes in [0, n). It is immutable, shared by every
// client; each client brings its own *rand.Rand.
type keySpace struct {
	n    uint64
	dist Dist
	zipf *zipf
	mult uint64 // coprime with n: rank r maps to (r*mult) mod n
}

func newKeySpace(n uint64, dist Dist, zipfS float64) (*keySpace, error) {
	if n == 0 || n > MaxKeys {
		return nil, fmt.Errorf("key space of %d keys: want 1 to %d", n, uint64(MaxKeys))
	}
	ks := &keySpace{n: n, dist: dist}
	switch dist {
	case DistUniform:
	case DistZipf:
		z, err := newZipf(n, zipfS)
		if err != nil {
			return nil, err
		}
		ks.zipf = z
		ks.mult = coprimeNear(n, 0x9E3779B97F4A7C15)
	default:
		return nil, fmt.Errorf("unknown key distribution %v", dist)
	}
	return ks, nil
}

// pick draws one key index.
func (ks *keySpace) pick(r *rand.Rand) uint64 {
	if ks.zipf == nil {
		return r.Uint64N(ks.n)
	}
	return ks.scatter(ks.zipf.rank(r) - 1)
}

// scatter maps a zero-based rank to a key index; it is a bijection on [0, n).
func (ks *keySpace) scatter(rank uint64) uint64 {
	hi, lo := bits.Mul64(rank, ks.mult)
	_, rem := bits.Div64(hi, lo, ks.n) // hi < n because rank, mult < n
	return rem
}

// coprimeNear returns a number in [1, n) coprime with n, starting the search
// from seed mod n; for n == 1 it returns 0 (the only key is 0 anyway).
func coprimeNear(n, seed uint64) uint64 {
	if n <= 2 {
		return n - 1
	}
	m := seed % n
	for m == 0 || gcd(m, n) != 1 {
		m = (m + 1) % n
	}
	return m
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// ownKey moves key index k to the nearest index that belongs to client c
// of clients (k ≡ c mod clients), keeping the distribution's shape. With
// -verify every key has one writer, so a get can be checked against what
// that same connection last wrote. It needs n >= clients.
func ownKey(k, n uint64, c, clients int) uint64 {
	cl := uint64(clients)
	o := k - k%cl + uint64(c)
	if o >= n {
		o -= cl
	}
	return o
}
