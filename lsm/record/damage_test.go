package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

func TestShiftMatchesCRCOfConcatenation(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	sh := newShifter()
	for _, n := range []int{0, 1, 3, 4, 255, 256, 257, 65535, 65536, 65537, 1 << 20, 3<<20 + 17} {
		a := randomBytes(rng, rng.IntN(100))
		b := randomBytes(rng, n)
		whole := crc32.Checksum(append(bytes.Clone(a), b...), crcTable)
		got := sh.shift(crc32.Checksum(a, crcTable), uint32(n)) ^ crc32.Checksum(b, crcTable)
		if got != whole {
			t.Fatalf("len %d: combined %#x, want %#x", n, got, whole)
		}
	}
}

func TestUnmaskInvertsMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for range 1000 {
		c := rng.Uint32()
		if unmask(mask(c)) != c {
			t.Fatalf("unmask(mask(%#x)) = %#x", c, unmask(mask(c)))
		}
	}
}

// bruteIntact is the definition findIntact implements.
func bruteIntact(rest []byte, from int) bool {
	for p := from; p < len(rest); p++ {
		if _, ok := intact(rest[p:]); ok {
			return true
		}
	}
	return false
}

func checkFindIntact(t *testing.T, name string, rest []byte, from int) {
	t.Helper()
	p, ok := findIntact(rest, from)
	if want := bruteIntact(rest, from); ok != want {
		t.Fatalf("%s: findIntact found=%v, brute force found=%v", name, ok, want)
	}
	if ok {
		if _, valid := intact(rest[p:]); !valid || p < from {
			t.Fatalf("%s: findIntact returned offset %d, not an intact record at or after %d", name, p, from)
		}
	}
}

func TestFindIntactMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	record := func(n int) []byte {
		p := randomBytes(rng, n)
		return append(appendHeader(nil, p), p...)
	}
	smallInts := func(n int) []byte {
		b := make([]byte, 0, n)
		for len(b)+4 <= n {
			b = binary.LittleEndian.AppendUint32(b, uint32(rng.IntN(64)))
		}
		return b
	}
	for i := range 400 {
		var rest []byte
		for range 1 + rng.IntN(6) {
			switch rng.IntN(5) {
			case 0:
				rest = append(rest, randomBytes(rng, rng.IntN(300))...)
			case 1:
				rest = append(rest, make([]byte, rng.IntN(50))...)
			case 2:
				rest = append(rest, smallInts(rng.IntN(400))...)
			case 3:
				rest = append(rest, record(rng.IntN(100))...)
			case 4:
				// A record cut short or with one byte changed: never intact.
				r := record(1 + rng.IntN(100))
				if rng.IntN(2) == 0 {
					r = r[:rng.IntN(len(r))]
				} else {
					r[rng.IntN(len(r))] ^= byte(1 + rng.IntN(255))
				}
				rest = append(rest, r...)
			}
		}
		checkFindIntact(t, "mix", rest, rng.IntN(3))
		if i%40 == 0 {
			checkFindIntact(t, "mix from 0", rest, 0)
		}
	}
}

// TestClassifyLargeStructuredTail feeds the classifier the data that makes
// a direct scan quadratic or worse: a torn record of a MiB of small
// little-endian integers (nearly every aligned offset looks like a header
// with a length that fits) and of random bytes. It must finish quickly and
// call both torn tails; planting one intact record at the end turns each
// into corruption.
func TestClassifyLargeStructuredTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 28))
	ints := make([]byte, 0, 1<<20)
	for len(ints) < 1<<20 {
		ints = binary.LittleEndian.AppendUint32(ints, uint32(rng.IntN(1<<16)))
	}
	for name, body := range map[string][]byte{"small ints": ints, "random": randomBytes(rng, 1<<20)} {
		t.Run(name, func(t *testing.T) {
			good := buildLog(t, [][]byte{[]byte("before")})
			torn := appendHeader(bytes.Clone(good.data), body)
			torn = append(torn, body[:len(body)-1000]...)
			_, off, err := readLog(bytes.NewReader(torn))
			if !errors.Is(err, ErrTornTail) || off != good.ends[0] {
				t.Fatalf("torn: err %v offset %d", err, off)
			}

			damaged := append(bytes.Clone(torn), make([]byte, 1000)...) // whole length, wrong CRC
			damaged = append(damaged, buildLog(t, [][]byte{[]byte("after")}).data...)
			_, _, err = readLog(bytes.NewReader(damaged))
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("damaged then intact: err %v", err)
			}
		})
	}
}

func BenchmarkClassifyTornTail(b *testing.B) {
	rng := rand.New(rand.NewPCG(29, 30))
	ints := make([]byte, 0, 8<<20)
	for len(ints) < 8<<20 {
		ints = binary.LittleEndian.AppendUint32(ints, uint32(rng.IntN(1<<16)))
	}
	b.SetBytes(int64(len(ints)))
	for b.Loop() {
		if _, ok := findIntact(ints, 1); ok {
			b.Fatal("found a record in integers")
		}
	}
}

// multModP returns a*b modulo the Castagnoli polynomial, both in the
// reflected representation crc32 uses (bit 31 is x⁰). This bit-at-a-time form
// (zlib's multmodp) is the reference for shifter.mul.
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; a != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			a &^= m
		}
		b = b>>1 ^ crc32.Castagnoli&-(b&1)
	}
	return p
}

func TestMulMatchesMultModP(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	sh := newShifter()
	for range 10000 {
		a, b := rng.Uint32(), rng.Uint32()
		if got, want := sh.mul(a, b), multModP(a, b); got != want {
			t.Fatalf("mul(%#x, %#x) = %#x, want %#x", a, b, got, want)
		}
	}
}
