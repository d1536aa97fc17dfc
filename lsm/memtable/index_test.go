package memtable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

// untag makes an empty table's index store bare offsets, so every probe
// past another key compares keys, as a tag collision does.
func untag(tbl *Table) {
	if !tbl.Empty() {
		panic("untag: table not empty")
	}
	tbl.idx.offBits, tbl.idx.offMask = 32, math.MaxUint32
}

// checkGet checks Get(ukey, snap) against the model.
func checkGet(t *testing.T, tbl *Table, m model, ukey []byte, snap uint64) {
	t.Helper()
	want, wantOK := m.get(ukey, snap)
	v, kind, ok := tbl.Get(ukey, snap)
	if ok != wantOK || (ok && (kind != want.kind || !bytes.Equal(v, want.value))) {
		t.Fatalf("Get(%x, %d) = %x %d %v, want %x %d %v", ukey, snap, v, kind, ok, want.value, want.kind, wantOK)
	}
}

// checkIndex checks the index against the model: each user key maps to its
// version with the largest trailer, whose chain of older versions is the
// model's, newest first; and the count of claimed slots adds up.
func checkIndex(t *testing.T, tbl *Table, m model) {
	t.Helper()
	x := &tbl.idx
	indexed := 0
	for i, e := range m {
		if i > 0 && bytes.Equal(m[i-1].ukey, e.ukey) {
			continue // not the newest version of its key
		}
		_, nd := tbl.indexProbe(x.hash(e.ukey), e.ukey)
		if nd == 0 {
			t.Fatalf("key %x missing from the index", e.ukey)
		}
		for j := i; j < len(m) && bytes.Equal(m[j].ukey, e.ukey); j++ {
			if got := tbl.key(nd); nd == 0 || !bytes.Equal(got, m[j].ikey()) {
				t.Fatalf("version %d of key %x: chain holds %x, want %x", j-i, e.ukey, got, m[j].ikey())
			}
			nd = tbl.older(nd).Load()
		}
		if nd != 0 {
			t.Fatalf("key %x: chain longer than the model's versions", e.ukey)
		}
		indexed++
	}
	used := 0
	for i := range x.slots {
		if x.slots[i].Load() != 0 {
			used++
		}
	}
	if used != indexed || x.claimed != indexed || x.claimed > x.limit || x.limit >= len(x.slots) {
		t.Fatalf("%d keys indexed, %d slots used, %d claimed, limit %d of %d", indexed, used, x.claimed, x.limit, len(x.slots))
	}
}

// TestIndexFullIsErrFull fills a small index: a key new to the table is
// refused with ErrFull once the index holds its limit of keys, leaving the
// table unchanged, while new versions of keys it holds still go in.
func TestIndexFullIsErrFull(t *testing.T) {
	tbl := newTable(headLen+1<<20, 16)
	limit := tbl.idx.limit
	key := func(k int) []byte { return fmt.Appendf(nil, "key%03d", k) }
	seq := uint64(0)
	for k := range limit {
		seq++
		if !tbl.Fits(1, 100) {
			t.Fatalf("Fits false with %d of %d keys", k, limit)
		}
		if err := tbl.Add(key(k), seq, base.KindSet, []byte("v0")); err != nil {
			t.Fatal(err)
		}
	}
	if tbl.Fits(1, 100) {
		t.Fatal("Fits true with a full index")
	}
	before, size, n := snapshot(tbl)
	if err := tbl.Add(key(limit), seq+1, base.KindSet, []byte("v")); !errors.Is(err, ErrFull) {
		t.Fatalf("add of a new key to a full index: %v, want ErrFull", err)
	}
	if after, size2, n2 := snapshot(tbl); size != size2 || n != n2 || fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatal("ErrFull changed the table")
	}
	if _, _, ok := tbl.Get(key(limit), base.MaxSeq); ok {
		t.Fatal("refused key is visible")
	}
	for k := range limit {
		seq++
		if err := tbl.Add(key(k), seq, base.KindSet, []byte("v1")); err != nil {
			t.Fatalf("new version of an indexed key: %v", err)
		}
	}
	for k := range limit {
		if v, _, ok := tbl.Get(key(k), base.MaxSeq); !ok || string(v) != "v1" {
			t.Fatalf("Get(%s) = %q %v, want v1", key(k), v, ok)
		}
		if v, _, ok := tbl.Get(key(k), uint64(k+1)); !ok || string(v) != "v0" {
			t.Fatalf("Get(%s, %d) = %q %v, want v0", key(k), k+1, v, ok)
		}
	}
}

// TestGetNeedsNoSkiplist fills a table without ever iterating it: nothing
// is linked into the skiplist, and Get answers every snapshot from the
// index and the version chains alone.
func TestGetNeedsNoSkiplist(t *testing.T) {
	tbl := New(1 << 16)
	key := func(k int) []byte { return fmt.Appendf(nil, "k%03d", k) }
	seq := uint64(0)
	for k := range 200 {
		seq++
		if err := tbl.Add(key(k), seq, base.KindSet, []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	for k := 0; k < 200; k += 2 {
		seq++
		if err := tbl.Add(key(k), seq, base.KindDelete, nil); err != nil {
			t.Fatal(err)
		}
	}
	if tbl.linked.Load() != headLen || tbl.linkAt(0, 0).Load() != 0 {
		t.Fatal("Add linked nodes into the skiplist")
	}
	for k := range 200 {
		wantKind, wantValue := base.KindSet, "old"
		if k%2 == 0 {
			wantKind, wantValue = base.KindDelete, ""
		}
		if v, kind, ok := tbl.Get(key(k), base.MaxSeq); !ok || kind != wantKind || string(v) != wantValue {
			t.Fatalf("Get(%s) = %q %d %v, want %q %d", key(k), v, kind, ok, wantValue, wantKind)
		}
		if v, kind, ok := tbl.Get(key(k), 200); !ok || kind != base.KindSet || string(v) != "old" {
			t.Fatalf("Get(%s, 200) = %q %d %v, want the first version", key(k), v, kind, ok)
		}
		if _, _, ok := tbl.Get(key(k), uint64(k)); ok {
			t.Fatalf("Get(%s, %d) found a version before the first", key(k), k)
		}
	}
	for k := 200; k < 400; k++ {
		if nd := tbl.get(key(k), base.MaxSeq); nd != 0 {
			t.Fatalf("absent %s: node %d", key(k), nd)
		}
	}
}

// TestConcurrentSnapshotGets runs readers at the published sequence number
// and at older snapshots while one writer adds versions and publishes each
// after its Add returns, as the engine does (run it with -race). In one
// variant a third reader iterates at the published sequence number, so
// the skiplist is linked while the writer adds and the others read.
func TestConcurrentSnapshotGets(t *testing.T) {
	const (
		n    = 6000
		keys = 300
	)
	// Version seq (1..n) writes key keyOf[seq-1]; keys come into use
	// gradually, so the small index overflows about 70% of the way in.
	rng := rand.New(rand.NewPCG(8, 9))
	keyOf := make([]int, n)
	versions := make([][]uint64, keys) // per key, its sequence numbers in order
	for j := range keyOf {
		k := rng.IntN(1 + keys*j/n)
		keyOf[j] = k
		versions[k] = append(versions[k], uint64(j+1))
	}
	key := func(k int) []byte { return fmt.Appendf(nil, "key%04d", k) }
	kindOf := func(seq uint64) base.Kind {
		if seq%5 == 0 {
			return base.KindDelete
		}
		return base.KindSet
	}
	value := func(seq uint64) []byte {
		if kindOf(seq) == base.KindDelete {
			return nil
		}
		return binary.LittleEndian.AppendUint64(nil, seq)
	}
	arena := n * EntrySize(7, 8)

	for _, c := range []struct {
		name    string
		iterate bool
	}{
		{"gets", false},
		{"gets while iterating", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			errc := make(chan error, 4)
			tbl := New(arena)
			var visible atomic.Uint64
			// The writer waits for reader rounds now and then, so reads
			// interleave with writes however the goroutines are scheduled.
			var rounds atomic.Int64
			var failed atomic.Bool
			fail := func(err error) {
				failed.Store(true)
				errc <- err
			}
			var wg sync.WaitGroup
			for r := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(10, uint64(r)))
					for done := false; !done && !failed.Load(); {
						done = visible.Load() == n
						s := visible.Load()
						for range 100 {
							snap := s
							if rng.IntN(2) == 0 {
								snap -= uint64(rng.IntN(int(min(s, 200)) + 1))
							}
							k := rng.IntN(keys + keys/10)
							if k >= keys {
								if v, _, ok := tbl.Get(fmt.Appendf(nil, "absent%d", k), snap); ok {
									fail(fmt.Errorf("absent key %d found: %q", k, v))
									return
								}
								continue
							}
							vs := versions[k]
							i, _ := slices.BinarySearch(vs, snap+1)
							v, kind, ok := tbl.Get(key(k), snap)
							if i == 0 {
								if ok {
									fail(fmt.Errorf("Get(%s, %d) = %q %d before its first version", key(k), snap, v, kind))
									return
								}
								continue
							}
							want := vs[i-1]
							if !ok || kind != kindOf(want) || !bytes.Equal(v, value(want)) {
								fail(fmt.Errorf("Get(%s, %d) = %x %d %v, want version %d", key(k), snap, v, kind, ok, want))
								return
							}
						}
						rounds.Add(1)
					}
				}()
			}
			if c.iterate {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for done := false; !done && !failed.Load(); {
						done = visible.Load() == n
						// Every version up to the published one, in order.
						s := visible.Load()
						it := tbl.NewIter()
						var prev []byte
						seen := uint64(0)
						for it.First(); it.Valid(); it.Next() {
							if prev != nil && base.Compare(prev, it.Key()) >= 0 {
								fail(fmt.Errorf("iteration out of order: %x then %x", prev, it.Key()))
								return
							}
							prev = it.Key()
							if base.SeqNum(base.Trailer(it.Key())) <= s {
								seen++
							}
						}
						if seen != s {
							fail(fmt.Errorf("iterator made at published seq %d saw %d of its versions", s, seen))
							return
						}
					}
				}()
			}
			for j, k := range keyOf {
				seq := uint64(j + 1)
				if err := tbl.Add(key(k), seq, kindOf(seq), value(seq)); err != nil {
					fail(err) // stops the readers too
					break
				}
				visible.Store(seq)
				if seq%100 == 0 && seq < n {
					for want := rounds.Load() + 2; rounds.Load() < want && !failed.Load(); {
						runtime.Gosched()
					}
				}
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Error(err)
			}
		})
	}
}

func TestIndexSlotPacking(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, arena := range []int{headLen, headLen + 1000, 1 << 20, 64 << 20, maxArena} {
		var x index
		x.init(arena, 1)
		if tagBits := 32 - int(x.offBits); arena <= 64<<20 && tagBits < 8 {
			t.Errorf("arena %d: %d tag bits, want >= 8", arena, tagBits)
		}
		for _, nd := range []uint32{headLen, uint32(arena-1) &^ 3} {
			for range 100 {
				h := rng.Uint64()
				s := x.slot(h, nd)
				if s == 0 || x.node(s) != nd || s&^x.offMask != x.tag(h) {
					t.Fatalf("arena %d: slot(%x, %d) = %x: node %d, tag %x", arena, h, nd, s, x.node(s), x.tag(h))
				}
			}
		}
	}
}

func TestIndexSize(t *testing.T) {
	for _, n := range []int{-5, 0, 1000, 1 << 20, 16 << 20} {
		tbl := New(n)
		arena := len(tbl.arena)
		if got := len(tbl.idx.slots) * 4; got > max(arena/8, 8) {
			t.Errorf("New(%d): %d index bytes for a %d-byte arena, want at most 1/8", n, got, arena)
		}
	}
}

// TestTouchChangesNothing touches present, absent and empty keys and checks
// the table still answers as before.
func TestTouchChangesNothing(t *testing.T) {
	tbl := New(1 << 16)
	tbl.TouchNode(tbl.TouchSlot([]byte("empty table")))
	for i := range 100 {
		if err := tbl.Add(fmt.Appendf(nil, "k%d", i), uint64(i+1), base.KindSet, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	before, size, n := snapshot(tbl)
	for i := range 200 {
		tbl.TouchNode(tbl.TouchSlot(fmt.Appendf(nil, "k%d", i)))
	}
	tbl.TouchNode(tbl.TouchSlot(nil))
	if after, size2, n2 := snapshot(tbl); size != size2 || n != n2 || fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatal("Touch changed the table")
	}
}
