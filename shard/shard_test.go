package shard

import (
	"bytes"
	"hash/fnv"
	"strconv"
	"testing"
)

// Of is FNV-1a-64 mod shards plus one, as documented: any client can
// compute it with its language's FNV-1a.
func TestOfIsFNV1a(t *testing.T) {
	keys := []string{"", "a", "key:000123", "\x00\xff", "some longer key with spaces"}
	for i := range 1000 {
		keys = append(keys, "key:"+strconv.Itoa(i))
	}
	for _, shards := range []int{1, 2, 3, 8, 64} {
		for _, key := range keys {
			h := fnv.New64a()
			h.Write([]byte(key))
			want := h.Sum64()%uint64(shards) + 1
			if shards == 1 {
				want = 1
			}
			if got := Of([]byte(key), shards); got != want {
				t.Fatalf("Of(%q, %d) = %d, want %d", key, shards, got, want)
			}
		}
	}
}

// Fixed values: changing the mapping would move keys between shards of
// existing clusters.
func TestOfIsStable(t *testing.T) {
	for _, c := range []struct {
		key    string
		shards int
		want   uint64
	}{
		{"", 8, 6}, {"a", 8, 5}, {"b", 8, 6}, {"foo", 8, 8}, {"key:1", 8, 2},
		{"key:000000000001", 8, 6}, {"x", 1, 1}, {"x", 0, 1},
	} {
		if got := Of([]byte(c.key), c.shards); got != c.want {
			t.Errorf("Of(%q, %d) = %d, want %d", c.key, c.shards, got, c.want)
		}
	}
}

func TestKeys(t *testing.T) {
	for _, shards := range []int{1, 2, 3, 8, 100} {
		keys := Keys(shards)
		if len(keys) != shards {
			t.Fatalf("Keys(%d): %d keys", shards, len(keys))
		}
		for i, k := range keys {
			if got := Of(k, shards); got != uint64(i+1) {
				t.Errorf("Keys(%d)[%d] = %q is in shard %d", shards, i, k, got)
			}
		}
		if again := Keys(shards); !equal(again, keys) {
			t.Errorf("Keys(%d) differs between calls", shards)
		}
	}
}

func equal(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
