package bench

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// MaxValueSize bounds -value-size; a larger value would not fit the
// server's default frame limit once pipelined or batched.
const MaxValueSize = 16 << 20

// ValueSize is the size of the values put: Min == Max for a fixed size,
// otherwise uniform in [Min, Max].
type ValueSize struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// ParseValueSize reads "100" or a range "64-4096" (bytes).
func ParseValueSize(s string) (ValueSize, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	minSize, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil {
		return ValueSize{}, fmt.Errorf("value size %q: want N or MIN-MAX bytes", s)
	}
	maxSize := minSize
	if isRange {
		if maxSize, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
			return ValueSize{}, fmt.Errorf("value size %q: want N or MIN-MAX bytes", s)
		}
	}
	v := ValueSize{Min: minSize, Max: maxSize}
	return v, v.validate()
}

func (v ValueSize) validate() error {
	if v.Min < 0 || v.Max < v.Min || v.Max > MaxValueSize {
		return fmt.Errorf("value size %v: want 0 <= min <= max <= %d", v, MaxValueSize)
	}
	return nil
}

// String returns the size as ParseValueSize reads it.
func (v ValueSize) String() string {
	if v.Min == v.Max {
		return strconv.Itoa(v.Min)
	}
	return strconv.Itoa(v.Min) + "-" + strconv.Itoa(v.Max)
}

const (
	// poolSlack is how many distinct starting offsets values have in the
	// pool, so consecutive values differ without generating bytes per put.
	poolSlack = 4096
	// stampLen is the version stamp at the head of a verified value.
	stampLen = 8
	// prefillVersion is the version -prefill writes; run versions start after it.
	prefillVersion = 1
)

const valueAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// valuePool hands out the bytes of values without allocating: the value of
// (key, version) is a slice of one random buffer whose offset and length
// are a hash of the pair, so a reader can recompute what a writer sent.
// Bytes come from an alphanumeric alphabet, so no value needs escaping on
// the pipe protocol and the codec's cost is the same for both protocols.
// It is immutable once built and shared by every client.
type valuePool struct {
	size ValueSize
	seed uint64
	buf  []byte
}

func newValuePool(size ValueSize, seed uint64) *valuePool {
	r := rand.New(rand.NewPCG(seed, 0x76616c756573)) // "values"
	buf := make([]byte, size.Max+poolSlack)
	for i := range buf {
		buf[i] = valueAlphabet[r.IntN(len(valueAlphabet))]
	}
	return &valuePool{size: size, seed: seed, buf: buf}
}

// value returns the value of (key, version); it aliases the pool.
func (p *valuePool) value(key uint64, version uint32) []byte {
	h := mix64(p.seed ^ mix64(key^uint64(version)<<40^uint64(version)>>24))
	n := p.size.Min
	if span := uint64(p.size.Max - p.size.Min + 1); span > 1 {
		n += int(h % span)
	}
	off := int((h >> 32) % poolSlack)
	return p.buf[off : off+n]
}

// stamped writes the value of (key, version) into dst with the version in
// hex at its head, so a stale read of the same key cannot pass for a fresh
// one even if the two happened to hash to the same slice.
func (p *valuePool) stamped(dst []byte, key uint64, version uint32) []byte {
	dst = append(dst[:0], p.value(key, version)...)
	if len(dst) >= stampLen {
		const hex = "0123456789abcdef"
		for i := range stampLen {
			dst[i] = hex[version>>(28-4*i)&0xf]
		}
	}
	return dst
}

// stampVersion reads the version stamped at the head of a value, if it has
// a stamp (eight lower-case hex digits, as stamped writes them).
func stampVersion(v []byte) (uint32, bool) {
	if len(v) < stampLen {
		return 0, false
	}
	var ver uint32
	for _, b := range v[:stampLen] {
		var d byte
		switch {
		case '0' <= b && b <= '9':
			d = b - '0'
		case 'a' <= b && b <= 'f':
			d = b - 'a' + 10
		default:
			return 0, false
		}
		ver = ver<<4 | uint32(d)
	}
	return ver, true
}

// mix64 is the SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
