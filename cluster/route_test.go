package cluster

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

func TestBatchMerger(t *testing.T) {
	b1 := lsm.NewBatch()
	b1.Put([]byte("a"), []byte("1"))
	b1.Delete([]byte("b"))
	b2 := lsm.NewBatch()
	b2.Put([]byte("a"), []byte("2"))
	var m batchMerger
	m.reset(cmdHeader{kind: cmdWrite, proposer: 7, seq: 8, floor: 9}, 0)
	m.add(b1.Repr(), b1.Len())
	m.add(b2.Repr(), b2.Len())
	m.add(lsm.NewBatch().Repr(), 0)
	cmd := m.command()
	h, body, err := decodeHeader(cmd)
	if err != nil || h != (cmdHeader{kind: cmdWrite, proposer: 7, seq: 8, floor: 9}) {
		t.Fatalf("header %+v, %v", h, err)
	}
	setFloor(cmd, 10)
	if h, _, _ := decodeHeader(cmd); h.floor != 10 {
		t.Fatalf("floor after setFloor: %d", h.floor)
	}
	var merged lsm.Batch
	if err := merged.SetRepr(body); err != nil {
		t.Fatal(err)
	}
	var got []string
	merged.Each(func(del bool, k, v []byte) error {
		if del {
			got = append(got, "-"+string(k))
		} else {
			got = append(got, string(k)+"="+string(v))
		}
		return nil
	})
	if want := []string{"a=1", "-b", "a=2"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("merged ops %v, want %v", got, want)
	}
	// Reuse starts afresh.
	m.reset(cmdHeader{kind: cmdWrite}, 0)
	m.add(b2.Repr(), b2.Len())
	if err := merged.SetRepr(bytes.Clone(m.command()[cmdHeaderLen:])); err != nil || merged.Len() != 1 {
		t.Fatalf("reused merger: %v, %d ops", err, merged.Len())
	}
	if _, _, err := decodeHeader(make([]byte, cmdHeaderLen-1)); err == nil {
		t.Fatal("decoded a short header")
	}
}

func TestMemberCodec(t *testing.T) {
	m := member{ID: 42, Raft: "10.0.0.1:7001", Client: "10.0.0.1:8080"}
	body := encodeMemberValue(m)
	got, err := decodeMemberValue(body)
	if err != nil || got != m {
		t.Fatalf("decode = %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {1, 5, 'a'}, append(body, 'x')} {
		if _, err := decodeMemberValue(bad); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
	id, err := decodeForget(encodeForget(7))
	if err != nil || id != 7 {
		t.Fatalf("forget = %d, %v", id, err)
	}
	if _, err := decodeForget([]byte{7, 7}); err == nil {
		t.Error("decoded trailing bytes")
	}
}

// TestRangeCollectorCutsAtTruncatedShard: when a shard stopped at its byte
// budget, the merged result ends at that shard's last key (past it, that
// shard's keys could be missing) and says it is truncated; a result that
// reached its limit before the cut is whole.
func TestRangeCollectorCutsAtTruncatedShard(t *testing.T) {
	kv := func(keys ...string) []store.KV {
		var out []store.KV
		for _, k := range keys {
			out = append(out, store.KV{Key: []byte(k)})
		}
		return out
	}
	run := func(limit int, parts ...[]store.KV) (string, error) {
		var got []store.KV
		var gotErr error
		rc := &rangeCollector{remaining: len(parts), limit: limit, done: func(kvs []store.KV, err error) { got, gotErr = kvs, err }}
		for i, p := range parts {
			var err error
			if i == 0 {
				err = store.ErrRangeTruncated // the first part stopped at its budget
			}
			rc.add(p, err)
		}
		var keys []string
		for _, kv := range got {
			keys = append(keys, string(kv.Key))
		}
		return strings.Join(keys, ","), gotErr
	}
	if got, err := run(10, kv("b", "d"), kv("a", "c", "e", "f")); got != "a,b,c,d" || err != store.ErrRangeTruncated {
		t.Fatalf("cut at d: %q, %v", got, err)
	}
	if got, err := run(3, kv("b", "d"), kv("a", "c", "e")); got != "a,b,c" || err != nil {
		t.Fatalf("limit reached before the cut: %q, %v", got, err)
	}
	if got, err := run(10, kv("b", "d"), kv("a")); got != "a,b,d" || err != store.ErrRangeTruncated {
		t.Fatalf("other shards exhausted: %q, %v", got, err)
	}
}
