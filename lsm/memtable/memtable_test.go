package memtable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

type entry struct {
	ukey  []byte
	seq   uint64
	kind  base.Kind
	value []byte
}

func (e entry) ikey() []byte { return base.AppendKey(nil, e.ukey, e.seq, e.kind) }

// model is the specification: a slice kept in base.Compare order.
type model []entry

func (m *model) add(e entry) {
	i, _ := slices.BinarySearchFunc(*m, e, func(a, b entry) int { return base.Compare(a.ikey(), b.ikey()) })
	*m = slices.Insert(*m, i, e)
}

func (m model) get(ukey []byte, seq uint64) (entry, bool) {
	// The versions of a user key are adjacent, newest first.
	i, _ := slices.BinarySearchFunc(m, ukey, func(e entry, k []byte) int { return bytes.Compare(e.ukey, k) })
	for ; i < len(m) && bytes.Equal(m[i].ukey, ukey); i++ {
		if m[i].seq <= seq {
			return m[i], true
		}
	}
	return entry{}, false
}

func (m model) seekGE(ikey []byte) int {
	i, _ := slices.BinarySearchFunc(m, ikey, func(e entry, k []byte) int { return base.Compare(e.ikey(), k) })
	return i
}

// randomBytes returns n bytes drawn from a generator seeded by rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

func checkIteration(t *testing.T, tbl *Table, m model) {
	t.Helper()
	checkIterator(t, tbl.NewIter(), m)
}

// checkSeekGE seeks it to seek and checks it lands on m[i] (the end when
// i == len(m)); it reports whether the iterator is positioned.
func checkSeekGE(t *testing.T, it base.Iterator, m model, seek []byte, i int) bool {
	t.Helper()
	it.SeekGE(seek)
	if i == len(m) {
		if it.Valid() {
			t.Fatalf("SeekGE(%x) = %x, want end", seek, it.Key())
		}
		return false
	}
	if !it.Valid() || !bytes.Equal(it.Key(), m[i].ikey()) {
		t.Fatalf("SeekGE(%x): valid=%v, want %x", seek, it.Valid(), m[i].ikey())
	}
	return true
}

func checkIterator(t *testing.T, it base.Iterator, m model) {
	t.Helper()
	i := 0
	for it.First(); it.Valid(); it.Next() {
		if i >= len(m) {
			t.Fatalf("iterator has more than the %d model entries", len(m))
		}
		if !bytes.Equal(it.Key(), m[i].ikey()) || !bytes.Equal(it.Value(), m[i].value) {
			t.Fatalf("entry %d: got %x=%x, want %x=%x", i, it.Key(), it.Value(), m[i].ikey(), m[i].value)
		}
		i++
	}
	if i != len(m) {
		t.Fatalf("iterated %d entries, model has %d", i, len(m))
	}
	if err := it.Close(); err != nil || it.Valid() {
		t.Fatalf("close: %v, valid %v", err, it.Valid())
	}
}

// TestModel checks every operation against the model, with sequence
// numbers added in random order, through an index as New sizes it, one
// barely large enough for the keys, and one without tags, where every
// probe compares keys.
func TestModel(t *testing.T) {
	const arena = 1 << 20
	for _, c := range []struct {
		name     string
		slots    int // 0: as New sizes it
		untagged bool
	}{
		{name: "index"},
		{name: "full index", slots: 92}, // limit 64: the test's user keys
		{name: "untagged index", slots: 100, untagged: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var tbl *Table
			if c.slots == 0 {
				tbl = New(arena)
			} else {
				tbl = newTable(headLen+arena, c.slots)
			}
			if c.untagged {
				untag(tbl)
			}
			testModel(t, tbl)
		})
	}
}

func testModel(t *testing.T, tbl *Table) {
	rng := rand.New(rand.NewPCG(1, 2))
	ukeys := [][]byte{{}, {0}, {0, 0}, {0xff}}
	for range 60 {
		ukeys = append(ukeys, randomBytes(rng, 1+rng.IntN(12)))
	}
	randomKey := func(absentOneIn int) []byte {
		if rng.IntN(absentOneIn) == 0 {
			return randomBytes(rng, rng.IntN(5)) // mostly absent
		}
		return ukeys[rng.IntN(len(ukeys))]
	}
	const n = 3000
	// Sequence numbers in random order, so ordering by trailer is tested
	// independently of insertion order.
	seqs := rng.Perm(n)
	var m model
	var lastSize int64
	for i := range n {
		e := entry{
			ukey:  ukeys[rng.IntN(len(ukeys))],
			seq:   uint64(seqs[i] + 1),
			kind:  base.Kind(rng.IntN(2)),
			value: randomBytes(rng, rng.IntN(40)),
		}
		if err := tbl.Add(e.ukey, e.seq, e.kind, e.value); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
		m.add(e)
		if tbl.Len() != len(m) || tbl.Empty() || tbl.Size() <= lastSize {
			t.Fatalf("after %d adds: Len %d Empty %v Size %d (was %d)", i+1, tbl.Len(), tbl.Empty(), tbl.Size(), lastSize)
		}
		lastSize = tbl.Size()
		// Gets while the table fills, at snapshots both newer and older
		// than the newest version of the key.
		checkGet(t, tbl, m, randomKey(10), uint64(rng.IntN(n+10)))
		// Iterations now and then link runs of every length into the
		// skiplist, from one entry to hundreds.
		if i%500 == 0 || rng.IntN(40) == 0 || i == n-1 {
			checkIteration(t, tbl, m)
			checkIndex(t, tbl, m)
		}
	}

	for range 3000 {
		checkGet(t, tbl, m, randomKey(10), uint64(rng.IntN(n+10)))
	}
	for range 300 {
		checkGet(t, tbl, m, randomKey(10), base.MaxSeq+uint64(rng.IntN(2)))
	}

	it := tbl.NewIter()
	for range 3000 {
		ukey := randomKey(4)
		seek := base.AppendKey(nil, ukey, uint64(rng.IntN(n+10)), base.Kind(rng.IntN(2)))
		i := m.seekGE(seek)
		if !checkSeekGE(t, it, m, seek, i) {
			continue
		}
		// Next from a seek continues in order.
		it.Next()
		if i+1 < len(m) && (!it.Valid() || !bytes.Equal(it.Key(), m[i+1].ikey())) {
			t.Fatalf("Next after SeekGE(%x) does not reach %x", seek, m[i+1].ikey())
		}
	}

	if v, _, ok := tbl.Get([]byte("never added"), base.MaxSeq+100); ok {
		t.Fatalf("Get of an absent key returned %x", v)
	}
}

// TestApproxKeys checks the live-key estimate against a model while
// values and tombstones arrive in sequence order.
func TestApproxKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tbl := New(1 << 20)
	newest := map[string]base.Kind{}
	firstTomb := map[string]bool{} // the key's oldest version here is a tombstone
	for i := range 3000 {
		k := fmt.Sprintf("k%d", rng.IntN(100))
		kind := base.Kind(rng.IntN(2))
		if err := tbl.Add([]byte(k), uint64(i+1), kind, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, seen := newest[k]; !seen {
			firstTomb[k] = kind == base.KindDelete
		}
		newest[k] = kind
		var want int64
		for k, kind := range newest {
			if kind == base.KindSet {
				want++
			}
			if firstTomb[k] {
				want--
			}
		}
		if got := tbl.ApproxKeys(); got != want {
			t.Fatalf("after %d adds: ApproxKeys %d, want %d", i+1, got, want)
		}
	}
}

func TestSeekGEWithShortKeyIsUserKeySeek(t *testing.T) {
	tbl := New(4096)
	for i, k := range []string{"a", "abc", "abcdefghij", "b"} {
		if err := tbl.Add([]byte(k), uint64(i+1), base.KindSet, nil); err != nil {
			t.Fatal(err)
		}
	}
	it := tbl.NewIter()
	for _, c := range []struct{ seek, want string }{{"", "a"}, {"ab", "abc"}, {"abcd", "abcdefghij"}, {"abd", "b"}} {
		it.SeekGE([]byte(c.seek))
		if !it.Valid() || string(base.UserKey(it.Key())) != c.want {
			t.Fatalf("SeekGE(%q): valid=%v key=%q, want %q", c.seek, it.Valid(), it.Key(), c.want)
		}
	}
	it.SeekGE([]byte("c"))
	if it.Valid() {
		t.Fatalf("SeekGE past the end is valid")
	}
	it.Next() // no-op when unpositioned
	if it.Valid() || it.Err() != nil {
		t.Fatal("Next after the end moved")
	}
}

func snapshot(tbl *Table) (entries [][2][]byte, size int64, n int) {
	it := tbl.NewIter()
	for it.First(); it.Valid(); it.Next() {
		entries = append(entries, [2][]byte{bytes.Clone(it.Key()), bytes.Clone(it.Value())})
	}
	return entries, tbl.Size(), tbl.Len()
}

func TestErrFullLeavesTableUnchangedAndUsable(t *testing.T) {
	tbl := New(1000)
	if err := tbl.Add([]byte("first"), 1, base.KindSet, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	before, size, n := snapshot(tbl)
	if err := tbl.Add([]byte("huge"), 2, base.KindSet, make([]byte, 2000)); !errors.Is(err, ErrFull) {
		t.Fatalf("oversized add: %v, want ErrFull", err)
	}
	after, size2, n2 := snapshot(tbl)
	if size != size2 || n != n2 || fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatal("ErrFull changed the table")
	}
	if _, _, ok := tbl.Get([]byte("huge"), 2); ok {
		t.Fatal("rejected entry is visible")
	}
	// The same sequence number can be used again: nothing was recorded.
	if err := tbl.Add([]byte("small"), 2, base.KindSet, []byte("v")); err != nil {
		t.Fatalf("add after ErrFull: %v", err)
	}
	if v, _, ok := tbl.Get([]byte("small"), 2); !ok || string(v) != "v" {
		t.Fatalf("Get after ErrFull recovery: %q %v", v, ok)
	}

	// Fill it up: every add either fits or fails cleanly.
	var i uint64
	for i = 3; ; i++ {
		if err := tbl.Add(fmt.Appendf(nil, "k%d", i), i, base.KindSet, []byte("0123456789")); err != nil {
			if !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
			break
		}
	}
	if tbl.Size() > 1000 {
		t.Fatalf("Size %d exceeds the 1000-byte arena", tbl.Size())
	}
	if tbl.Len() != int(i-1) {
		t.Fatalf("Len %d after %d successful adds", tbl.Len(), i-1)
	}
}

func TestAddRejectsBadInput(t *testing.T) {
	tbl := New(4096)
	if err := tbl.Add([]byte("k"), base.MaxSeq+1, base.KindSet, nil); err == nil {
		t.Fatal("sequence number above MaxSeq accepted")
	}
	if err := tbl.Add([]byte("k"), 7, base.KindSet, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Add([]byte("k"), 7, base.KindSet, []byte("b")); err == nil || errors.Is(err, ErrFull) {
		t.Fatalf("duplicate (key, seq, kind): %v", err)
	}
	if v, _, _ := tbl.Get([]byte("k"), 7); string(v) != "a" || tbl.Len() != 1 {
		t.Fatalf("duplicate add changed the table: %q, Len %d", v, tbl.Len())
	}
	if err := tbl.Add([]byte("k"), base.MaxSeq, base.KindDelete, nil); err != nil {
		t.Fatalf("MaxSeq rejected: %v", err)
	}
}

func TestNewEdgeSizes(t *testing.T) {
	for _, n := range []int{-5, 0, 1} {
		tbl := New(n)
		if !tbl.Empty() || tbl.Size() != 0 {
			t.Fatalf("New(%d) not empty", n)
		}
		if err := tbl.Add(nil, 1, base.KindSet, nil); !errors.Is(err, ErrFull) {
			t.Fatalf("New(%d): add: %v, want ErrFull", n, err)
		}
		it := tbl.NewIter()
		if it.First(); it.Valid() {
			t.Fatal("empty table iterates")
		}
	}
}

func TestEmptyKeyAndValue(t *testing.T) {
	tbl := New(EntrySize(0, 0) * 3)
	if err := tbl.Add(nil, 5, base.KindSet, nil); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Add([]byte{}, 9, base.KindDelete, []byte{}); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Add([]byte{0}, 1, base.KindSet, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		seq  uint64
		kind base.Kind
		ok   bool
	}{{4, 0, false}, {5, base.KindSet, true}, {8, base.KindSet, true}, {9, base.KindDelete, true}, {100, base.KindDelete, true}} {
		v, kind, ok := tbl.Get(nil, c.seq)
		if ok != c.ok || (ok && (kind != c.kind || len(v) != 0)) {
			t.Fatalf("Get(empty, %d) = %q %d %v", c.seq, v, kind, ok)
		}
	}
	it := tbl.NewIter()
	it.First()
	if !it.Valid() || len(it.Key()) != base.TrailerLen || base.SeqNum(base.Trailer(it.Key())) != 9 || len(it.Value()) != 0 {
		t.Fatalf("first entry %x=%x", it.Key(), it.Value())
	}
}

func TestKeyAndValueCannotBeAppendedIntoArena(t *testing.T) {
	tbl := New(4096)
	for i, k := range []string{"a", "b"} {
		if err := tbl.Add([]byte(k), uint64(i+1), base.KindSet, []byte("val"+k)); err != nil {
			t.Fatal(err)
		}
	}
	it := tbl.NewIter()
	it.First()
	_ = append(it.Key(), "XXXXXXXXXXXXXXXXXXXXXXXX"...)
	_ = append(it.Value(), "XXXXXXXXXXXXXXXXXXXXXXXX"...)
	v, _, _ := tbl.Get([]byte("a"), 10)
	_ = append(v, "XXXXXXXXXXXXXXXXXXXXXXXX"...)
	if v, _, ok := tbl.Get([]byte("b"), 10); !ok || string(v) != "valb" {
		t.Fatalf("b = %q %v after appending to a's slices", v, ok)
	}
	if v, _, ok := tbl.Get([]byte("a"), 10); !ok || string(v) != "vala" {
		t.Fatalf("a = %q %v", v, ok)
	}
}

func TestHugeValueInTableSizedByEntrySize(t *testing.T) {
	key := []byte("big")
	value := randomBytes(rand.New(rand.NewPCG(3, 4)), 16<<20)
	tbl := New(EntrySize(len(key), len(value)))
	if err := tbl.Add(key, 1, base.KindSet, value); err != nil {
		t.Fatalf("entry does not fit a table of EntrySize: %v", err)
	}
	v, kind, ok := tbl.Get(key, 1)
	if !ok || kind != base.KindSet || !bytes.Equal(v, value) {
		t.Fatal("16 MiB value not read back")
	}
	if tbl.Size() > int64(EntrySize(len(key), len(value))) {
		t.Fatalf("Size %d above EntrySize %d", tbl.Size(), EntrySize(len(key), len(value)))
	}
	if err := tbl.Add([]byte("more"), 2, base.KindSet, make([]byte, 100)); !errors.Is(err, ErrFull) {
		t.Fatalf("second entry: %v, want ErrFull", err)
	}
}

// TestConcurrentReadersOneWriter runs readers against a table one writer is
// filling (run it with -race). Readers must see only whole entries, in
// order, and every entry whose Add returned before they looked.
func TestConcurrentReadersOneWriter(t *testing.T) {
	const n = 5000
	tbl := New(n * EntrySize(12, 24))
	order := rand.New(rand.NewPCG(5, 6)).Perm(n)
	key := func(i int) []byte { return fmt.Appendf(nil, "key%08d", i) }
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1+i%24) }
	var added atomic.Int64 // entries order[:added] are in the table

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(7, uint64(r)))
			for done := false; !done; {
				done = added.Load() == n
				a := int(added.Load())
				// Everything added before now is visible to Get.
				for range 50 {
					if a == 0 {
						break
					}
					i := order[rng.IntN(a)]
					v, _, ok := tbl.Get(key(i), base.MaxSeq)
					if !ok || !bytes.Equal(v, value(i)) {
						errc <- fmt.Errorf("Get(%s) = %q %v after its Add returned", key(i), v, ok)
						return
					}
				}
				// A full scan is ordered, made of whole entries, and holds
				// at least what was added before its iterator was made.
				it := tbl.NewIter()
				var prev []byte
				seen := 0
				for it.First(); it.Valid(); it.Next() {
					k := it.Key()
					if prev != nil && base.Compare(prev, k) >= 0 {
						errc <- fmt.Errorf("scan out of order: %q then %q", prev, k)
						return
					}
					i, err := strconv.Atoi(string(base.UserKey(k)[3:]))
					if err != nil || !bytes.Equal(it.Value(), value(i)) {
						errc <- fmt.Errorf("torn entry %q=%q", k, it.Value())
						return
					}
					prev = k
					seen++
				}
				if seen < a {
					errc <- fmt.Errorf("scan saw %d entries, %d were added before it", seen, a)
					return
				}
			}
		}()
	}
	for j, i := range order {
		if err := tbl.Add(key(i), uint64(j+1), base.KindSet, value(i)); err != nil {
			t.Fatal(err)
		}
		added.Store(int64(j + 1))
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if tbl.Len() != n {
		t.Fatalf("Len %d, want %d", tbl.Len(), n)
	}
}

func TestAddGetIterateDoNotAllocate(t *testing.T) {
	// Entries live in the arena: no per-entry allocation for the garbage
	// collector to track.
	tbl := New(1 << 20)
	allocs := testing.AllocsPerRun(100, func() {
		// Reuse keys with fresh sequence numbers.
		_ = tbl.Add([]byte("key"), uint64(tbl.Len()+1), base.KindSet, []byte("value"))
	})
	if allocs != 0 {
		t.Fatalf("Add allocates %v times per call", allocs)
	}
	it := tbl.NewIter()
	allocs = testing.AllocsPerRun(10, func() {
		for it.First(); it.Valid(); it.Next() {
		}
		tbl.Get([]byte("key"), 5)              // older snapshot: version chain
		tbl.Get([]byte("key"), base.MaxSeq)    // index
		tbl.Get([]byte("absent"), base.MaxSeq) // index proves absence
	})
	if allocs != 0 {
		t.Fatalf("iteration and Get allocate %v times", allocs)
	}
}

func benchKey(dst []byte, i uint64) []byte {
	// splitmix64 spreads sequential i over the key space.
	z := i + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	dst = binary.BigEndian.AppendUint64(dst[:0], z)
	return binary.BigEndian.AppendUint64(dst, i)
}

func BenchmarkAdd(b *testing.B) {
	value := make([]byte, 100)
	key := make([]byte, 0, 16)
	tbl := New(64 << 20)
	var seq uint64
	b.SetBytes(16 + 100)
	for b.Loop() {
		seq++
		key = benchKey(key, seq)
		if err := tbl.Add(key, seq, base.KindSet, value); err != nil {
			b.StopTimer()
			tbl = New(64 << 20)
			b.StartTimer()
			if err := tbl.Add(key, seq, base.KindSet, value); err != nil {
				b.Fatal(err)
			}
		}
	}
}

const benchEntries = 200000

func benchTable(b *testing.B) *Table {
	tbl := New(benchEntries * EntrySize(16, 100))
	value := make([]byte, 100)
	var key []byte
	for i := range uint64(benchEntries) {
		key = benchKey(key, i)
		if err := tbl.Add(key, i+1, base.KindSet, value); err != nil {
			b.Fatal(err)
		}
	}
	return tbl
}

func BenchmarkGet(b *testing.B) {
	tbl := benchTable(b)
	var key []byte
	var i uint64
	for b.Loop() {
		key = benchKey(key, i%benchEntries)
		if _, _, ok := tbl.Get(key, base.MaxSeq); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkGetMiss looks up keys that are not in the table, as the engine
// does for every key that lives in an SSTable.
func BenchmarkGetMiss(b *testing.B) {
	tbl := benchTable(b)
	var key []byte
	var i uint64
	for b.Loop() {
		key = benchKey(key, benchEntries+i%benchEntries)
		if _, _, ok := tbl.Get(key, base.MaxSeq); ok {
			b.Fatal("hit")
		}
		i++
	}
}

// BenchmarkGetOlderSnapshot reads each key at a snapshot older than its
// only version: the index finds the key, and its version chain says there
// is nothing old enough.
func BenchmarkGetOlderSnapshot(b *testing.B) {
	tbl := benchTable(b)
	var key []byte
	var i uint64
	for b.Loop() {
		key = benchKey(key, i%benchEntries)
		if _, _, ok := tbl.Get(key, i%benchEntries); ok {
			b.Fatal("hit")
		}
		i++
	}
}

func BenchmarkIterate(b *testing.B) {
	tbl := benchTable(b)
	it := tbl.NewIter()
	n := 0
	for b.Loop() {
		for it.First(); it.Valid(); it.Next() {
			n++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/entry")
}

// TestManyVersions adds many versions of a few keys in increasing sequence
// order (the engine's order), and checks every snapshot and the order of
// the linked skiplist.
func TestManyVersions(t *testing.T) {
	tb := New(1 << 20)
	keys := []string{"a", "b", "c", "d", "e"}
	rng := rand.New(rand.NewPCG(7, 7))
	var seq uint64
	type version struct {
		seq uint64
		val string
	}
	hist := map[string][]version{}
	for i := 0; i < 2000; i++ {
		k := keys[rng.IntN(len(keys))]
		seq++
		v := fmt.Sprintf("%s%d", k, seq)
		if err := tb.Add([]byte(k), seq, base.KindSet, []byte(v)); err != nil {
			t.Fatal(err)
		}
		hist[k] = append(hist[k], version{seq, v})
	}
	for s := uint64(1); s <= seq; s += 37 {
		for _, k := range keys {
			var want string
			for _, ver := range hist[k] {
				if ver.seq <= s {
					want = ver.val
				}
			}
			got, _, ok := tb.Get([]byte(k), s)
			if (want == "") == ok || string(got) != want {
				t.Fatalf("Get(%s, %d) = %q %v, want %q", k, s, got, ok, want)
			}
		}
	}
	// Full iteration: keys ascending, versions newest first.
	it := tb.NewIter()
	var prev []byte
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if prev != nil && base.Compare(prev, it.Key()) >= 0 {
			t.Fatalf("iteration out of order at entry %d", n)
		}
		prev = append(prev[:0], it.Key()...)
		n++
	}
	if n != 2000 {
		t.Fatalf("iterated %d entries, want 2000", n)
	}
}

func BenchmarkAddOverwrite(b *testing.B) {
	const keys = 200000
	rng := rand.New(rand.NewPCG(1, 1))
	val := make([]byte, 100)
	key := func(i int) []byte { return []byte(fmt.Sprintf("%016d", i)) }
	var tb *Table
	seq := uint64(0)
	fill := func() {
		tb = New(256 << 20)
		for i := 0; i < keys; i++ {
			seq++
			if err := tb.Add(key(i), seq, base.KindSet, val); err != nil {
				b.Fatal(err)
			}
		}
	}
	fill()
	ks := make([][]byte, 4096)
	for i := range ks {
		ks[i] = key(rng.IntN(keys))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq++
		err := tb.Add(ks[i%len(ks)], seq, base.KindSet, val)
		if errors.Is(err, ErrFull) {
			b.StopTimer()
			fill()
			b.StartTimer()
			err = tb.Add(ks[i%len(ks)], seq, base.KindSet, val)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestLinkOrderWithSharedPrefixes links keys that share long prefixes, tie
// on the 8 bytes the sort caches (keys that are prefixes of others, zero
// bytes, differences past the cached bytes), in runs between iterations,
// with the shared prefix shrinking between runs.
func TestLinkOrderWithSharedPrefixes(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	tbl := New(1 << 20)
	var m model
	seq := uint64(0)
	suffixes := []string{"", "\x00", "\x00\x00", "a", "a\x00", "abcdefgh", "abcdefgh\x00", "abcdefghi", "abcdefghij", "abcdefgi", "b", "\xff\xff\xff\xff\xff\xff\xff\xff\xff"}
	add := func(prefix string) {
		for _, i := range rng.Perm(len(suffixes) * 3) {
			seq++
			e := entry{ukey: []byte(prefix + suffixes[i%len(suffixes)]), seq: seq, kind: base.KindSet, value: []byte{byte(i)}}
			if err := tbl.Add(e.ukey, e.seq, e.kind, e.value); err != nil {
				t.Fatal(err)
			}
			m.add(e)
		}
		checkIteration(t, tbl, m)
		checkIndex(t, tbl, m)
	}
	add("user:000000000000/") // first run: a long shared prefix
	add("user:000000000000/")
	add("user:000000000001/") // the prefix shrinks by a byte
	add("user:1/")
	add("") // down to nothing
	add("user:000000000000/")
}

// BenchmarkAddThenOrder is the whole cost of a key new to the table: Add
// on the commit path plus its share of ordering the table, by linking the
// skiplist (an iterator) or by one sorted run (a flush).
func BenchmarkAddThenOrder(b *testing.B) {
	for _, c := range []struct {
		name  string
		order func(*Table) base.Iterator
	}{{"link", (*Table).NewIter}, {"flush", func(t *Table) base.Iterator { return t.NewFlushIter(math.MaxUint64) }}} {
		b.Run(c.name, func(b *testing.B) {
			value := make([]byte, 100)
			key := make([]byte, 0, 16)
			const perTable = 200000
			var seq uint64
			for b.Loop() {
				tbl := New(64 << 20)
				for range perTable {
					seq++
					key = benchKey(key, seq)
					if err := tbl.Add(key, seq, base.KindSet, value); err != nil {
						b.Fatal(err)
					}
				}
				c.order(tbl)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perTable), "ns/entry")
		})
	}
}

// BenchmarkFlushOverwrites orders and walks a full 64 MiB table of 100-byte
// values written over 200,000 keys (2.6 versions a key) as a flush does:
// every entry (a reader needs old versions) or each key's newest.
func BenchmarkFlushOverwrites(b *testing.B) {
	value := make([]byte, 100)
	rng := rand.New(rand.NewPCG(1, 2))
	tbl := New(64 << 20)
	key := make([]byte, 0, 16)
	for seq := uint64(1); ; seq++ {
		key = benchKey(key, uint64(rng.IntN(200000)))
		if tbl.Add(key, seq, base.KindSet, value) != nil {
			break
		}
	}
	for _, c := range []struct {
		name   string
		oldest uint64
	}{{"every-version", 0}, {"newest-only", math.MaxUint64}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				it := tbl.NewFlushIter(c.oldest)
				for it.First(); it.Valid(); it.Next() {
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tbl.Len()), "ns/entry")
		})
	}
}

// TestFlushIterFromOneSortedRun fills tables that are never iterated, with
// keys that share prefixes, tie on the cached prefix bytes and have many
// versions, added in random sequence order; NewFlushIter (one sorted run,
// no skiplist) must match the model, for scans and seeks, and so must
// NewIter afterwards; once the skiplist is linked, NewFlushIter uses it.
// With every entry at or below the oldest snapshot, the run holds each
// key's newest version only; with one newer, every entry.
func TestFlushIterFromOneSortedRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, prefix := range []string{"", "user:0000000000/", "\x00\x00"} {
		tbl := New(1 << 20)
		var m model
		ukeys := [][]byte{[]byte(prefix), []byte(prefix + "\x00"), []byte(prefix + "abcdefgh"), []byte(prefix + "abcdefgh\x00"), []byte(prefix + "abcdefghi")}
		for range 40 {
			ukeys = append(ukeys, append([]byte(prefix), randomBytes(rng, rng.IntN(14))...))
		}
		const n = 2000
		seqs := rng.Perm(n)
		for i := range n {
			e := entry{ukey: ukeys[rng.IntN(len(ukeys))], seq: uint64(seqs[i] + 1), kind: base.Kind(rng.IntN(2)), value: randomBytes(rng, rng.IntN(20))}
			if err := tbl.Add(e.ukey, e.seq, e.kind, e.value); err != nil {
				t.Fatal(err)
			}
			m.add(e)
		}
		var newest model
		for i, e := range m {
			if i == 0 || !bytes.Equal(e.ukey, m[i-1].ukey) {
				newest = append(newest, e)
			}
		}
		checkIterator(t, tbl.NewFlushIter(n), newest)
		checkIterator(t, tbl.NewFlushIter(math.MaxUint64), newest)
		it := tbl.NewFlushIter(n - 1) // the entry with sequence number n is newer
		if _, ok := it.(*runIter); !ok {
			t.Fatalf("NewFlushIter of a table never iterated returned %T", it)
		}
		checkIterator(t, it, m)
		it = tbl.NewFlushIter(0)
		for range 500 {
			seek := base.AppendKey(nil, ukeys[rng.IntN(len(ukeys))], uint64(rng.IntN(n+10)), base.Kind(rng.IntN(2)))
			var i int
			if rng.IntN(4) == 0 {
				seek = randomBytes(rng, rng.IntN(base.TrailerLen)) // short: a bare user key
				i = m.seekGE(base.AppendKey(nil, seek, base.MaxSeq, base.KindMax))
			} else {
				i = m.seekGE(seek)
			}
			checkSeekGE(t, it, m, seek, i)
		}
		if err := it.Close(); err != nil || it.Valid() {
			t.Fatalf("close: %v, valid %v", err, it.Valid())
		}
		checkIteration(t, tbl, m) // links the skiplist
		if _, ok := tbl.NewFlushIter(math.MaxUint64).(*runIter); ok {
			t.Fatal("NewFlushIter ignores a linked skiplist")
		}
		checkIterator(t, tbl.NewFlushIter(math.MaxUint64), m)
	}
}

// Unordered counts the bytes added since the last ordered read: what the
// next NewIter links, and nothing after it.
func TestUnorderedCountsWhatNewIterLinks(t *testing.T) {
	tbl := New(1 << 20)
	if got := tbl.Unordered(); got != 0 {
		t.Fatalf("empty table: %d", got)
	}
	add := func(from, to int) {
		for i := from; i < to; i++ {
			if err := tbl.Add(fmt.Appendf(nil, "k%04d", (i*37)%1000), uint64(i+1), base.KindSet, []byte("value")); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(0, 100)
	if got, want := tbl.Unordered(), tbl.Size(); got != want || got == 0 {
		t.Fatalf("after 100 adds: %d, want %d", got, want)
	}
	tbl.NewFlushIter(math.MaxUint64) // nothing linked before: a sorted run, no linking
	if got := tbl.Unordered(); got != tbl.Size() {
		t.Fatalf("after a flush iterator: %d, want %d", got, tbl.Size())
	}
	tbl.NewIter()
	if got := tbl.Unordered(); got != 0 {
		t.Fatalf("after NewIter: %d", got)
	}
	before := tbl.Size()
	add(100, 150)
	if got, want := tbl.Unordered(), tbl.Size()-before; got != want || got == 0 {
		t.Fatalf("after 50 more adds: %d, want %d", got, want)
	}
}
