package sstable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/lni/vfs"
)

// entry is one table entry in a test model.
type entry struct {
	ukey  string
	seq   uint64
	kind  base.Kind
	value []byte
}

func (e entry) ikey() []byte { return base.AppendKey(nil, []byte(e.ukey), e.seq, e.kind) }

// sortEntries puts entries in base.Compare order.
func sortEntries(es []entry) {
	sort.Slice(es, func(i, j int) bool { return base.Compare(es[i].ikey(), es[j].ikey()) < 0 })
}

// buildTable writes es (already sorted) with opts and returns the file bytes
// and the Meta Finish reported.
func buildTable(t testing.TB, es []entry, opts WriterOptions) ([]byte, Meta) {
	t.Helper()
	fs := vfs.NewMem()
	f, err := fs.Create("t.sst")
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(f, opts)
	for _, e := range es {
		if err := w.Add(e.ikey(), e.value); err != nil {
			t.Fatalf("Add(%q, %d): %v", e.ukey, e.seq, err)
		}
	}
	meta, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	rf, err := fs.Open("t.sst")
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	st, err := rf.Stat()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, st.Size())
	if _, err := rf.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	return data, meta
}

// openBytes opens a Reader over a copy of data.
func openBytes(data []byte, opts ReaderOptions) (*Reader, error) {
	f := vfs.NewMemFile(bytes.Clone(data))
	r, err := Open(f, int64(len(data)), opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func mustOpen(t testing.TB, data []byte, opts ReaderOptions) *Reader {
	t.Helper()
	r, err := openBytes(data, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// modelEntries makes n user keys with one to four versions each: sets
// (some with empty values) and deletions, with sequence numbers increasing
// in write order.
func modelEntries(rng *rand.Rand, n int, valueLen int) []entry {
	var es []entry
	seq := uint64(1)
	for i := range n {
		ukey := fmt.Sprintf("key%08d", i*3)
		versions := 1 + rng.IntN(4)
		for range versions {
			e := entry{ukey: ukey, seq: seq, kind: base.KindSet}
			seq += 1 + uint64(rng.IntN(3))
			switch r := rng.IntN(10); {
			case r == 0:
				e.kind = base.KindDelete
			case r == 1:
				e.value = []byte{}
			default:
				e.value = compressibleValue(rng, valueLen)
			}
			es = append(es, e)
		}
	}
	sortEntries(es)
	return es
}

// compressibleValue is half random, half repeated bytes.
func compressibleValue(rng *rand.Rand, n int) []byte {
	v := make([]byte, n)
	for i := range n / 2 {
		v[i] = byte(rng.IntN(256))
	}
	for i := n / 2; i < n; i++ {
		v[i] = 'x'
	}
	return v
}

func randomBytes(rng *rand.Rand, n int) []byte {
	var seed [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(seed[8*i:], rng.Uint64())
	}
	v := make([]byte, n)
	rand.NewChaCha8(seed).Read(v)
	return v
}

// model indexes entries by user key, newest version first.
type model map[string][]entry

func newModel(es []entry) model {
	m := model{}
	for _, e := range es { // es is sorted: newest first within a key
		m[e.ukey] = append(m[e.ukey], e)
	}
	return m
}

// get is what Get must return for ukey at snapshot seq.
func (m model) get(ukey string, seq uint64) (entry, bool) {
	for _, e := range m[ukey] {
		if e.seq <= seq {
			return e, true
		}
	}
	return entry{}, false
}

// collect iterates the whole table.
func collect(t testing.TB, r *Reader) []entry {
	t.Helper()
	it := r.NewIter()
	var got []entry
	for it.First(); it.Valid(); it.Next() {
		ukey, trailer, ok := base.Split(it.Key())
		if !ok {
			t.Fatalf("short key %q", it.Key())
		}
		got = append(got, entry{ukey: string(ukey), seq: base.SeqNum(trailer), kind: base.KindOf(trailer), value: bytes.Clone(it.Value())})
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return got
}

func sameEntry(a, b entry) bool {
	return a.ukey == b.ukey && a.seq == b.seq && a.kind == b.kind && bytes.Equal(a.value, b.value)
}
