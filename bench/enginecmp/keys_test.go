package main

import (
	"bytes"
	"slices"
	"testing"

	"github.com/klauspost/compress/s2"
)

func TestFormatKey(t *testing.T) {
	for _, tc := range []struct {
		i    uint64
		want string
	}{
		{0, "0000000000000000"},
		{7, "0000000000000007"},
		{1234567, "0000000001234567"},
		{9999999999999999, "9999999999999999"},
	} {
		var buf [keySize]byte
		if got := string(formatKey(buf[:], tc.i)); got != tc.want {
			t.Errorf("formatKey(%d) = %q, want %q", tc.i, got, tc.want)
		}
	}
}

func TestKeyOrder(t *testing.T) {
	// Keys sort like their indexes, and each missing key sorts strictly
	// between key i and key i+1.
	var a, b, m [keySize + 1]byte
	for i := uint64(0); i < 2000; i += 7 {
		ki := formatKey(a[:], i)
		kj := formatKey(b[:], i+1)
		mk := formatMissingKey(m[:], i)
		if bytes.Compare(ki, kj) >= 0 {
			t.Fatalf("key %d %q not below key %d %q", i, ki, i+1, kj)
		}
		if bytes.Compare(ki, mk) >= 0 || bytes.Compare(mk, kj) >= 0 {
			t.Fatalf("missing key %q not between %q and %q", mk, ki, kj)
		}
	}
}

func TestValueGen(t *testing.T) {
	g1, g2 := newValueGen(5, 100), newValueGen(5, 100)
	other := newValueGen(6, 100)
	var all []byte
	differs := false
	for i := range uint64(5000) {
		v := g1.next(i)
		if !valueMatches(v, i, 100) {
			t.Fatalf("value %d does not carry its index", i)
		}
		if !bytes.Equal(v, g2.next(i)) {
			t.Fatalf("same seed, value %d differs", i)
		}
		if !bytes.Equal(v, other.next(i)) {
			differs = true
		}
		all = append(all, v...)
	}
	if !differs {
		t.Error("different seeds gave the same values")
	}
	if valueMatches(g1.next(3), 4, 100) || valueMatches(g1.next(3)[:99], 3, 100) {
		t.Error("valueMatches accepts a wrong value")
	}
	// db_bench's compression_ratio 0.5: blocks of values compress to about
	// half (the stamps and s2's framing move it a little).
	var blocks, compressed int
	for off := 0; off+4096 <= len(all); off += 4096 {
		blocks += 4096
		compressed += len(s2.Encode(nil, all[off:off+4096]))
	}
	if ratio := float64(compressed) / float64(blocks); ratio < 0.4 || ratio > 0.65 {
		t.Errorf("values compress to %.2f of their size, want about 0.5", ratio)
	}
}

func TestValueGenSmallAndLargeValues(t *testing.T) {
	small := newValueGen(1, 4)
	if v := small.next(9); len(v) != 4 || !valueMatches(v, 9, 4) {
		t.Errorf("4-byte value %q", v)
	}
	big := newValueGen(1, 3<<20)
	if v := big.next(9); len(v) != 3<<20 || !valueMatches(v, 9, 3<<20) {
		t.Errorf("3 MiB value: %d bytes", len(v))
	}
}

func TestPermutation(t *testing.T) {
	p := permutation(1000, 3)
	if slices.Equal(p, permutation(1000, 4)) {
		t.Error("different seeds gave the same order")
	}
	if !slices.Equal(p, permutation(1000, 3)) {
		t.Error("same seed gave different orders")
	}
	s := slices.Clone(p)
	slices.Sort(s)
	for i, v := range s {
		if v != uint32(i) {
			t.Fatalf("not a permutation of 0..999: sorted[%d] = %d", i, v)
		}
	}
}
