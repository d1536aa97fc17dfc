package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseValueSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ValueSize
		wantErr bool
	}{
		{"100", ValueSize{100, 100}, false},
		{"0", ValueSize{0, 0}, false},
		{"64-4096", ValueSize{64, 4096}, false},
		{" 1 - 2 ", ValueSize{1, 2}, false},
		{"5-5", ValueSize{5, 5}, false},
		{"", ValueSize{}, true},
		{"x", ValueSize{}, true},
		{"10-", ValueSize{}, true},
		{"10-5", ValueSize{}, true},
		{"-5", ValueSize{}, true},
		{"99999999999", ValueSize{}, true},
	}
	for _, tt := range tests {
		got, err := ParseValueSize(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParseValueSize(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil {
			if back, err := ParseValueSize(got.String()); err != nil || back != got {
				t.Errorf("%v does not round trip through String: %v %v", got, back, err)
			}
		}
	}
}

func TestValueSizes(t *testing.T) {
	for _, size := range []ValueSize{{100, 100}, {0, 0}, {64, 4096}, {1, 3}} {
		p := newValuePool(size, 7)
		hist := make(map[int]int)
		for k := range uint64(20_000) {
			v := p.value(k, uint32(k%5))
			if len(v) < size.Min || len(v) > size.Max {
				t.Fatalf("%v: value of %d bytes", size, len(v))
			}
			hist[len(v)]++
			if bytes.ContainsAny(v, "|\\\n\r\x00") {
				t.Fatalf("%v: value %q needs escaping", size, v)
			}
		}
		if hist[size.Min] == 0 || hist[size.Max] == 0 {
			t.Errorf("%v: the extremes were never drawn", size)
		}
		if size.Max-size.Min == 2 {
			// Three sizes, 20000 values: each within 10% of a third.
			for s := size.Min; s <= size.Max; s++ {
				if hist[s] < 6000 || hist[s] > 7333 {
					t.Errorf("%v: size %d drawn %d times of 20000", size, s, hist[s])
				}
			}
		}
	}
}

func TestValuesAreReproducible(t *testing.T) {
	size := ValueSize{16, 64}
	p, q := newValuePool(size, 9), newValuePool(size, 9)
	if !bytes.Equal(p.value(5, 3), q.value(5, 3)) {
		t.Error("the same (key, version) gave two values")
	}
	if bytes.Equal(p.value(5, 3), p.value(5, 4)) && bytes.Equal(p.value(5, 4), p.value(5, 5)) {
		t.Error("successive versions of a key do not change its value")
	}
	a := p.stamped(nil, 5, 0xabc)
	b := p.stamped(nil, 5, 0xabd)
	if !strings.HasPrefix(string(a), "00000abc") || !strings.HasPrefix(string(b), "00000abd") {
		t.Errorf("stamps: %q, %q", a, b)
	}
	if len(a) != len(p.value(5, 0xabc)) {
		t.Errorf("stamping changed the length")
	}
	// A value shorter than a stamp is left as it is.
	tiny := newValuePool(ValueSize{3, 3}, 1)
	if got := tiny.stamped(nil, 1, 2); !bytes.Equal(got, tiny.value(1, 2)) {
		t.Errorf("short value stamped: %q", got)
	}
}
