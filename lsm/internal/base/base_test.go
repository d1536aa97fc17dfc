package base

import (
	"bytes"
	"testing"
)

func TestCompareOrdersNewestFirst(t *testing.T) {
	a := AppendKey(nil, []byte("k"), 10, KindSet)
	b := AppendKey(nil, []byte("k"), 5, KindSet)
	c := AppendKey(nil, []byte("k"), 10, KindDelete)
	d := AppendKey(nil, []byte("l"), 1, KindSet)
	e := AppendKey(nil, []byte("k\x00"), 99, KindSet)
	if Compare(MakeSearchKey([]byte("k"), 10), a) > 0 || Compare(MakeSearchKey([]byte("k"), 9), a) <= 0 {
		t.Fatal("search key must sort at or before the newest visible version and after newer ones")
	}
	ordered := [][]byte{a, c, b, e, d}
	for i := 0; i+1 < len(ordered); i++ {
		if Compare(ordered[i], ordered[i+1]) >= 0 {
			t.Fatalf("entry %d does not sort before %d", i, i+1)
		}
	}
}

func TestSplit(t *testing.T) {
	k := AppendKey(nil, []byte("user"), 42, KindDelete)
	u, tr, ok := Split(k)
	if !ok || !bytes.Equal(u, []byte("user")) || SeqNum(tr) != 42 || KindOf(tr) != KindDelete {
		t.Fatalf("split = %q %d %d %v", u, SeqNum(tr), KindOf(tr), ok)
	}
	if _, _, ok := Split([]byte("short")); ok {
		t.Fatal("short key accepted")
	}
}
